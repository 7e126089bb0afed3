"""The main job in one call: from a base model to a documented debiasing adapter, with a report.

`run_demo` trains a GRADIEND for a feature, evaluates its encoder, searches its decoder for the most balanced
update (on the transfer task by default: descriptions of people followed by a name or group-word slot), exports
that update as a delta adapter (and an exact PEFT LoRA), runs the bias benchmarks on the base and with the adapter,
compares them paired, and writes `report.md` with tables and plots. When no edit beats the base model the report and
the adapter's card say "no debiasing edit found" and nothing is called debiased. Every finished step is recorded
in `demo_state.json`; a second run with the same arguments reuses it, so an interrupted demo continues where it
stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .atomic_io import atomic_write_text, remove_our_outputs
from .demo_report import NO_EDIT
from .errors import OutputExistsError
from .zoo import DEFAULT_MODEL

STATE_NAME = "demo_state.json"
REPORT_NAME = "report.md"
STEPS = ("train", "evaluate", "search", "export", "benchmark", "strength", "report")
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
        params: base parameters (glob patterns or a preset such as "paper"); default: the embedded model's
            recommendation, else every transformer-block parameter.
        on: what the decoder search scores: "transfer" (the authors' transfer task), "feature" (the feature's own
            slot texts), or "auto" (transfer when a transfer set exists for the feature, yours or built in).
        transfer: a .csv/.jsonl file of your own transfer texts (`features.transfer.TransferSet.from_csv`).
        transfer_words: a JSON file {class: [words]} for `transfer` (default: the built-in first names).
        h_values, alphas: the search grid (default: `search.DEFAULT_H`, `search.DEFAULT_ALPHAS`).
        strengths: scales s > 1 of the chosen update to benchmark as well (StereoSet, SEAT, LM score), to show what
            a stronger edit buys and costs; none by default.
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
    params: tuple[str, ...] | None = None
    on: str = "auto"
    transfer: str | None = None
    transfer_words: str | None = None
    h_values: tuple[float, ...] | None = None
    alphas: tuple[float, ...] | None = None
    strengths: tuple[float, ...] = ()
    bench_limit: int | None = None
    seed: int = 0
    overwrite: bool = False
    progress: bool = True

    def settings(self) -> dict[str, Any]:
        """The arguments that decide the results (a second run must match them to reuse finished steps)."""
        return {"model": self.model, "feature": self.feature, "quick": self.quick, "steps": self.train_steps,
                "params": list(self.params) if self.params else None, "on": self.on, "transfer": self.transfer,
                "transfer_words": self.transfer_words, "h_values": _listed(self.h_values),
                "alphas": _listed(self.alphas), "strengths": list(self.strengths),
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
        params = self.args.params or (embedded.recommended_params if embedded else None)
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

    def _search_options(self) -> tuple[dict[str, Any], str | None]:
        """The search's `on` / `transfer` options, and why the feature's own texts are used if they are."""
        from .errors import FeatureDataError
        from .features.transfer import builtin_transfer, load_transfer

        if self.args.on == "feature":
            return {"on": "feature"}, "as asked (--on feature)"
        if self.args.transfer:
            transfer = load_transfer(self.args.transfer, self.args.transfer_words, name=self.feature.name)
            return {"on": "transfer", "transfer": transfer}, None
        try:
            builtin_transfer(self.feature.name, list(self.feature.classes), seed=self.args.seed)
        except FeatureDataError as error:
            if self.args.on == "transfer":
                raise
            return {"on": "feature"}, f"no transfer set: {str(error).split('(')[0].strip()}"
        return {"on": "transfer"}, None

    def _fallback(self, result, model, options: dict[str, Any]):
        """When no edit beats the base: the edit with the best index that keeps the LM score ≥ 0.99 × the base's.

        Points the search scored without an LM score (they could not win) get it now, best index first (at most 5).
        """
        from .evaluation import evaluate_point

        point = result.fallback("balanced")
        if point is not None:
            return point
        candidates = sorted((p for p in result.points if p.indices and p.alpha != 0.0 and p.lm_score is None),
                            key=lambda p: -p.indices["balanced"])[:5]
        for candidate in candidates:
            check = evaluate_point(model, self.base, self.tokenizer, self.feature, candidate.h, candidate.alpha,
                                   split="validation", seed=self.args.seed, **options)
            if check.points[0].lm_score >= 0.99 * check.base.lm_score:
                return check.points[0]
        return None

    def search(self) -> dict[str, Any]:
        from .errors import TargetTokenizationError
        from .evaluation import evaluate_point, search_decoder

        quick = self.args.quick
        grid = {"h_values": [-1.0, -0.5, 0.0, 0.5, 1.0], "alphas": [-0.1, -0.01, -1e-3, 1e-3, 0.01, 0.1]} \
            if quick else {}
        grid.update({k: list(v) for k, v in (("h_values", self.args.h_values), ("alphas", self.args.alphas)) if v})
        options, why_feature = self._search_options()
        if quick:
            options.update(max_texts=16, max_neutral=4)
        model = self._gradiend()
        try:
            result = search_decoder(model, self.base, self.tokenizer, self.feature, split="validation",
                                    progress=self.args.progress, seed=self.args.seed, **grid, **options)
        except TargetTokenizationError as error:
            if self.args.on != "auto" or "transfer" in options:
                raise
            why_feature = f"the built-in transfer words are no single tokens for this tokenizer ({str(error)[:80]}…)"
            options = {"on": "feature", **({"max_texts": 16, "max_neutral": 4} if quick else {})}
            result = search_decoder(model, self.base, self.tokenizer, self.feature, split="validation",
                                    progress=self.args.progress, seed=self.args.seed, **grid, **options)
        result.save(self.out / "search")
        best = result.best("balanced")
        found = not best.is_base
        chosen = best if found else self._fallback(result, model, options)
        info: dict[str, Any] = {"on": result.on, "lm_policy": result.lm_policy, "why_feature": why_feature,
                                "edit_found": found, "fallback": not found and chosen is not None,
                                "h": None if chosen is None else chosen.h,
                                "alpha": None if chosen is None else chosen.alpha,
                                "validation_score": None if chosen is None else _round(chosen.score("balanced")),
                                "point": None if chosen is None else chosen.to_dict(),
                                "validation_base_score": _round(result.base.score("balanced"))}
        if chosen is None:
            return info
        test_options = {**options, "max_texts": 16 if quick else 400} if result.on == "transfer" else \
            {**options, "max_texts": 16 if quick else 64}
        test = evaluate_point(model, self.base, self.tokenizer, self.feature, chosen.h, chosen.alpha, split="test",
                              seed=self.args.seed, **test_options)
        test.to_json(self.out / "search" / "chosen_point_test.json")
        point = test.points[0]
        info.update(test_index=_round(point.indices["balanced"]), test_base_index=_round(test.base.indices["balanced"]),
                    test_lm_score=_round(point.lm_score), test_base_lm_score=_round(test.base.lm_score),
                    test_association=_round(point.association), test_base_association=_round(test.base.association))
        return info

    def export(self) -> dict[str, Any]:
        chosen = self.state.steps["search"]
        if chosen["h"] is None:
            return {"exported": False}
        model = self._gradiend()
        where = f"h = {chosen['h']:g}, α = {chosen['alpha']:g}"
        criterion = "the transfer task's balance index (BPI)" if chosen["on"] == "transfer" else \
            "the balanced index on the feature's own texts"
        if chosen["edit_found"]:
            description = (f"Debiasing edit for the `{self.feature.name}` feature of the base model: the GRADIEND update "
                           f"at {where}, the grid point with the best {criterion} on validation texts "
                           f"(LM policy: {chosen['lm_policy']}).")
        else:
            description = (f"**{NO_EDIT.capitalize()}**: no grid point beat the base model on {criterion}. This is the "
                           f"fallback edit at {where}, the best index among the points that keep the LM score at "
                           f"least 0.99 × the base's; it is not a debiased model.")
        adapter = model.to_adapter(h=chosen["h"], alpha=chosen["alpha"], base_model=self.base,
                                   description=description)
        adapter.save_pretrained(self.adapter_dir)  # staged and swapped in: a rerun replaces it, a crash keeps the old
        report = adapter.export_lora(self.out / "adapter-lora", rank="exact", base_model=self.base,
                                     tokenizer=self.tokenizer, overwrite=True)
        return {"exported": True, "lora_total_relative_error": report.total_relative_error,
                "lora_logits_relative_error": report.logits_relative_error}

    def benchmark(self) -> dict[str, Any]:
        from .adapters import DeltaAdapter
        from .benchmarks import paired_differences, run_benchmarks

        folder = self.out / "benchmarks"
        options = {"bias_types": self.bias_types, "limit": self.args.benchmark_limit, "progress": self.args.progress,
                   "seed": self.args.seed}
        base_report = run_benchmarks(self.base, self.tokenizer, **options)
        base_report.save(folder / "base.json")
        if not self.state.steps["export"].get("exported"):
            return {"seconds_base": round(sum(base_report.seconds.values()), 1)}
        adapter = DeltaAdapter.from_pretrained(self.adapter_dir)
        with adapter.applied(self.base):
            adapter_report = run_benchmarks(self.base, self.tokenizer, **options)
        adapter_report.save(folder / "adapter.json")
        paired = paired_differences(base_report, adapter_report, seed=self.args.seed)
        (folder / "paired.json").write_text(json.dumps([d.to_dict() for d in paired], indent=2) + "\n")
        return {"seconds_base": round(sum(base_report.seconds.values()), 1),
                "seconds_adapter": round(sum(adapter_report.seconds.values()), 1)}

    def strength(self) -> dict[str, Any]:
        """The chosen update at larger scales (W + s·ΔW): StereoSet, SEAT and the LM score, paired with the base.

        No criterion picks these scales; they show what turning the adapter up (`applied(base, scale=s)`,
        `gradiend apply --scale s`) buys in bias and costs in language modelling. Only with `--strengths`.
        """
        from .adapters import DeltaAdapter
        from .benchmarks import BenchmarkReport, paired_differences, run_benchmarks

        scales = list(self.args.strengths)
        if not scales or not self.state.steps["export"].get("exported"):
            return {"scales": []}
        adapter = DeltaAdapter.from_pretrained(self.adapter_dir)
        base_report = BenchmarkReport.load(self.out / "benchmarks" / "base.json")
        seconds = {}
        for scale in scales:
            with adapter.applied(self.base, scale=scale):
                report = run_benchmarks(self.base, self.tokenizer, suites=("stereoset", "seat", "lm_score"),
                                        bias_types=self.bias_types, limit=self.args.benchmark_limit,
                                        progress=self.args.progress, seed=self.args.seed)
            report.settings["scale"] = scale
            report.save(self.out / "benchmarks" / f"scale-{scale:g}.json")
            paired = paired_differences(base_report, report, seed=self.args.seed)
            (self.out / "benchmarks" / f"scale-{scale:g}-paired.json").write_text(
                json.dumps([d.to_dict() for d in paired], indent=2) + "\n")
            seconds[f"{scale:g}"] = round(sum(report.seconds.values()), 1)
        return {"scales": scales, "seconds_per_scale": seconds}

    def report(self) -> dict[str, Any]:
        from .demo_report import write_report

        write_report(self.out, self.args, self.state.steps, self.feature, self.bias_types, list(STEPS))
        return {}


def _listed(values: tuple[float, ...] | None) -> list[float] | None:
    return list(values) if values else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


__all__ = ["STEPS", "DemoArguments", "run_demo"]
