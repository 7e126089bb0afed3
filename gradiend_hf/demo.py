"""The main job in one call: from a base model to a debiased, documented adapter, with a report.

`run_demo` trains a GRADIEND for a feature, evaluates its encoder, searches its decoder for the most balanced
update, exports that update as a delta adapter (and an exact PEFT LoRA), runs the bias benchmarks on the base and on
the debiased model, and writes `report.md` with tables and plots. Every finished step is recorded in
`demo_state.json`; a second run with the same arguments reuses it, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .atomic_io import atomic_write_text, remove_our_outputs
from .errors import OutputExistsError
from .zoo import DEFAULT_MODEL

STATE_NAME = "demo_state.json"
REPORT_NAME = "report.md"
STEPS = ("train", "evaluate", "search", "export", "benchmark", "strength", "report")
STRENGTHS = (2.0, 4.0)
"""Scales of the chosen update that the `strength` step benchmarks too, to show the debiasing / LM trade-off."""
_BIAS_TYPES = {"gender": "gender", "race": "race", "religion": "religion"}


@dataclass
class DemoArguments:
    """What the demo runs on and how long it may take (the defaults fit about 25 minutes on 2 CPU cores).

    Args:
        model: embedded model name (`gradiend models`), Hub id or local folder.
        feature: `gender`, `race[:a,b]`, `religion[:a,b]` or a .csv/.jsonl file of slot examples.
        out: output folder (reused by a second run with the same arguments).
        quick: a minutes-long version: fewer steps, texts, grid points and benchmark examples.
        steps: GRADIEND training steps (default 100; quick 20).
        bench_limit: benchmark examples per bias type / SEAT set / LM texts (default: all; quick 24).
        seed: seed of training, data splits and samples.
        overwrite: redo every step (the folder is emptied first).
        progress: show progress bars.
    """

    model: str = DEFAULT_MODEL
    feature: str = "gender"
    out: str = "runs/demo"
    quick: bool = False
    steps: int | None = None
    bench_limit: int | None = None
    seed: int = 0
    overwrite: bool = False
    progress: bool = True

    def settings(self) -> dict[str, Any]:
        """The arguments that decide the results (a second run must match them to reuse finished steps)."""
        return {"model": self.model, "feature": self.feature, "quick": self.quick, "steps": self.train_steps,
                "bench_limit": self.benchmark_limit, "seed": self.seed}

    @property
    def train_steps(self) -> int:
        return self.steps if self.steps is not None else (20 if self.quick else 100)

    @property
    def benchmark_limit(self) -> int | None:
        return self.bench_limit if self.bench_limit is not None else (24 if self.quick else None)


@dataclass
class _State:
    """Which steps are done, their seconds and their headline results; saved after every step."""

    path: Path
    settings: dict[str, Any]
    steps: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def save(self) -> None:
        data = {"settings": self.settings, "steps": self.steps}
        atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def done(self, step: str) -> bool:
        return bool(self.steps.get(step, {}).get("done"))


def _open_state(args: DemoArguments) -> _State:
    out = Path(args.out)
    path = out / STATE_NAME
    if args.overwrite and out.exists():
        remove_our_outputs(out, what="demo")  # never the working directory, never a folder with files of yours
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("settings") != args.settings():
            raise OutputExistsError(
                f"`{out}` holds a demo run with other settings ({data.get('settings')}); reuse needs the same "
                f"arguments. Choose another --out, or add --overwrite to redo every step."
            )
        return _State(path, args.settings(), data.get("steps", {}))
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"`{out}` is not empty and holds no demo run; choose another --out or add "
                                f"--overwrite.")
    out.mkdir(parents=True, exist_ok=True)
    state = _State(path, args.settings())
    state.save()
    return state


def run_demo(args: DemoArguments) -> Path:
    """Run (or continue) the demo and return the path of `report.md`.

    Raises:
        OutputExistsError: `out` holds other files, or a demo with other settings (use `overwrite=True`).
    """
    from . import features as feature_data
    from .zoo import load_base_model

    out = Path(args.out)
    state = _open_state(args)
    feature = feature_data.load_feature(args.feature, seed=args.seed)
    base, tokenizer = load_base_model(args.model)
    bias_types = [_BIAS_TYPES[feature.name]] if feature.name in _BIAS_TYPES else None
    context = _Context(args, out, state, feature, base, tokenizer, bias_types)
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "train": context.train, "evaluate": context.evaluate, "search": context.search, "export": context.export,
        "benchmark": context.benchmark, "strength": context.strength, "report": context.report,
    }
    bar = tqdm(STEPS, desc="demo", disable=not args.progress, dynamic_ncols=True)
    for step in bar:
        bar.set_postfix_str(step)
        if state.done(step) and step != "report":
            tqdm.write(f"[demo] {step}: done in an earlier run, reused ({state.steps[step]['seconds']:.0f} s then)")
            continue
        tqdm.write(f"[demo] {step} ...")
        started = time.time()
        results = runners[step]()
        state.steps[step] = {"done": True, "seconds": round(time.time() - started, 1), **results}
        state.save()
        tqdm.write(f"[demo] {step}: {state.steps[step]['seconds']:.0f} s")
    bar.close()
    context.report()  # again, so the report's timing table includes its own step
    return out / REPORT_NAME


@dataclass
class _Context:
    args: DemoArguments
    out: Path
    state: _State
    feature: Any
    base: Any
    tokenizer: Any
    bias_types: list[str] | None

    # -- folders -------------------------------------------------------------------------------------------------
    @property
    def gradiend_dir(self) -> Path:
        return self.out / "gradiend"

    @property
    def adapter_dir(self) -> Path:
        return self.out / "adapter"

    def _gradiend(self):
        from .modeling_gradiend import GradiendModel

        return GradiendModel.from_pretrained(self.gradiend_dir)

    # -- steps ---------------------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        from .modeling_gradiend import GradiendModel
        from .training import GradiendTrainer, TrainingArguments
        from .zoo import EMBEDDED_MODELS

        embedded = EMBEDDED_MODELS.get(self.args.model)
        params = embedded.recommended_params if embedded else None
        model = GradiendModel.for_base_model(self.base, params=params, feature=self.feature)
        training = TrainingArguments(output_dir=str(self.gradiend_dir), max_steps=self.args.train_steps,
                                     eval_steps=10 if self.args.quick else 25, eval_max_examples=64,
                                     seed=self.args.seed, overwrite_output_dir=True,
                                     progress_bar=self.args.progress)
        result = GradiendTrainer(model, self.base, self.tokenizer, self.feature, training).train()
        return {"validation_pearson_r": round(result.best_correlation, 4), "best_step": result.best_step,
                "parameters": len(model.param_names), "n": model.config.num_selected}

    def evaluate(self) -> dict[str, Any]:
        from .evaluation import evaluate_encoder

        report = evaluate_encoder(self._gradiend(), self.base, self.tokenizer, self.feature, split="test",
                                  max_per_group=48 if self.args.quick else 200, seed=self.args.seed,
                                  progress=self.args.progress)
        report.save(self.out / "evaluation")
        metrics = report.metrics
        return {"pearson_r": _round(metrics.pearson_r), "pearson_r_classes": _round(metrics.pearson_r_classes),
                "sign_accuracy": _round(metrics.sign_accuracy)}

    def search(self) -> dict[str, Any]:
        from .evaluation import evaluate_point, search_decoder

        quick = self.args.quick
        grid = {"h_values": [-1.0, -0.5, 0.0, 0.5, 1.0], "alphas": [-0.05, -0.01, -1e-3, 1e-3, 0.01, 0.05]} \
            if quick else {}
        model = self._gradiend()
        result = search_decoder(model, self.base, self.tokenizer, self.feature, split="validation",
                                progress=self.args.progress, seed=self.args.seed, **grid)
        result.save(self.out / "search")
        best = result.best("balanced")
        if best.is_base:  # no edit beat the base: take the edit with the best balanced index, and say so
            best = max((p for p in result.points if p.indices), key=lambda p: p.indices["balanced"])
        test = evaluate_point(model, self.base, self.tokenizer, self.feature, best.h, best.alpha, split="test",
                              max_texts=16 if quick else 64, seed=self.args.seed)
        test.to_json(self.out / "search" / "chosen_point_test.json")
        return {"h": best.h, "alpha": best.alpha, "validation_score": _round(best.score("balanced")),
                "base_beaten": not result.best("balanced").is_base,
                "test_score": _round(test.points[0].score("balanced")),
                "test_base_score": _round(test.base.score("balanced"))}

    def export(self) -> dict[str, Any]:
        chosen = self.state.steps["search"]
        model = self._gradiend()
        description = (f"Debiases the `{self.feature.name}` feature of the base model: the GRADIEND update at "
                       f"h = {chosen['h']}, α = {chosen['alpha']}, the most balanced point of the decoder search.")
        adapter = model.to_adapter(h=chosen["h"], alpha=chosen["alpha"], base_model=self.base,
                                   description=description)
        if self.adapter_dir.exists():
            shutil.rmtree(self.adapter_dir)
        adapter.save_pretrained(self.adapter_dir)
        report = adapter.export_lora(self.out / "adapter-lora", rank="exact", base_model=self.base,
                                     tokenizer=self.tokenizer, overwrite=True)
        return {"lora_total_relative_error": report.total_relative_error,
                "lora_logits_relative_error": report.logits_relative_error}

    def benchmark(self) -> dict[str, Any]:
        from .adapters import DeltaAdapter
        from .benchmarks import run_benchmarks

        folder = self.out / "benchmarks"
        options = {"bias_types": self.bias_types, "limit": self.args.benchmark_limit, "progress": self.args.progress,
                   "seed": self.args.seed}
        base_report = run_benchmarks(self.base, self.tokenizer, **options)
        base_report.save(folder / "base.json")
        adapter = DeltaAdapter.from_pretrained(self.adapter_dir)
        with adapter.applied(self.base):
            debiased_report = run_benchmarks(self.base, self.tokenizer, **options)
        debiased_report.save(folder / "debiased.json")
        return {"seconds_base": round(sum(base_report.seconds.values()), 1),
                "seconds_debiased": round(sum(debiased_report.seconds.values()), 1)}

    def strength(self) -> dict[str, Any]:
        """The chosen update at larger scales (W + s·ΔW): StereoSet, SEAT and the LM score on fewer texts.

        No criterion picks these scales; they show what turning the adapter up (`applied(base, scale=s)`,
        `gradiend apply --scale s`) buys in bias and costs in language modelling.
        """
        from .adapters import DeltaAdapter
        from .benchmarks import default_lm_texts, run_benchmarks

        adapter = DeltaAdapter.from_pretrained(self.adapter_dir)
        scales = STRENGTHS[:1] if self.args.quick else STRENGTHS
        # fewer LM texts than the main benchmark, so the base is scored again on the same ones (perplexity change)
        lm_texts = default_lm_texts(self.args.benchmark_limit or 200)
        options = {"lm_texts": lm_texts, "progress": self.args.progress, "seed": self.args.seed}
        seconds = {}
        for scale in (0.0, *scales):
            suites = ("lms",) if scale == 0 else ("stereoset", "seat", "lms")
            with adapter.applied(self.base, scale=scale):
                report = run_benchmarks(self.base, self.tokenizer, suites=suites, bias_types=self.bias_types,
                                        limit=self.args.benchmark_limit, **options)
            report.settings["scale"] = scale
            report.save(self.out / "benchmarks" / f"scale-{scale:g}.json")
            seconds[f"{scale:g}"] = round(sum(report.seconds.values()), 1)
        return {"scales": list(scales), "seconds_per_scale": seconds, "lm_texts": len(lm_texts)}

    def report(self) -> dict[str, Any]:
        from .demo_report import write_report

        write_report(self.out, self.args, self.state.steps, self.feature, self.bias_types)
        return {}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


__all__ = ["STEPS", "DemoArguments", "run_demo"]
