"""The `gradiend` command: each subcommand is a dataclass of documented arguments calling the public API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def _arg(help: str, default=dataclasses.MISSING, **extra):
    """A dataclass field whose help text becomes the `--help` of the command line option."""
    metadata = {"help": help, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Models:
    """List the embedded offline base models and whether each is installed."""

    def run(self) -> int:
        from .zoo import DEFAULT_MODEL, EMBEDDED_MODELS

        print(f"{'name':<14} {'installed':<10} {'kind':<7} source")
        for model in EMBEDDED_MODELS.values():
            installed = "yes" if model.is_installed() else "no"
            default = " (default)" if model.name == DEFAULT_MODEL else ""
            print(f"{model.name:<14} {installed:<10} {model.lm_kind:<7} {model.hub_id}{default}")
            print(f"{'':<14} {model.description}")
            print(f"{'':<14} licence: {model.license_note}")
            if not model.is_installed():
                print(f"{'':<14} install: {model.install}")
        return 0


@dataclass
class Info:
    """Print the configuration summary of a saved GRADIEND model (folder or Hub repo)."""

    path_or_repo: str = _arg("folder written by save_pretrained, or a Hub repo id", positional=True)
    revision: str | None = _arg("Hub revision", None)

    def run(self) -> int:
        from .modeling_gradiend import GradiendModel

        model = GradiendModel.from_pretrained(self.path_or_repo, revision=self.revision)
        config = model.config
        print(f"GRADIEND model {self.path_or_repo}")
        print(f"  base model     {config.base_model_name_or_path} ({config.base_model_type}, {config.lm_kind} LM)")
        print(f"  feature        {config.feature_name}: {config.positive_class} -> +1, {config.negative_class} -> -1")
        targets = "; ".join(f"{k}: {', '.join(v)}" for k, v in (config.feature_targets or {}).items())
        print(f"  targets        {targets or '-'}")
        print(f"  encoder input  {config.source} gradient; activation {config.activation}; "
              f"latent size {config.latent_size}")
        print(f"  parameters     {len(config.param_names)} tensors, n = {config.num_selected:,}")
        for name, shape in list(zip(config.param_names, config.param_shapes))[:8]:
            print(f"                 {name} {tuple(shape)}")
        if len(config.param_names) > 8:
            print(f"                 ... {len(config.param_names) - 8} more")
        print(f"  dtype          {model.dtype}")
        for key, value in (config.training or {}).items():
            print(f"  training.{key:<16} {value}")
        return 0


@dataclass
class Train:
    """Train a GRADIEND model for a feature on a base model; writes a save_pretrained folder, log and curve."""

    model: str = _arg("embedded model name (see `gradiend models`), Hub id or local path", "gemma-3-270m")
    feature: str = _arg("gender | race[:a,b] | religion[:a,b] | a .csv/.jsonl file of slot examples", "gender")
    out: str = _arg("output folder", "runs/gradiend")
    params: list[str] = _arg("glob patterns of base parameters (default: the embedded model's recommendation, "
                             "else every transformer-block parameter)", [], nargs="+")
    layers: str | None = _arg("only these block indices, e.g. '0-5,8'", None)
    include_embeddings: bool = _arg("also select the input embeddings (default selection only)", False)
    steps: int = _arg("GRADIEND steps per seed", 150)
    batch_size: int = _arg("texts per step (all of one class)", 8)
    lr: float = _arg("AdamW learning rate", 1e-5)
    weight_decay: float = _arg("AdamW weight decay", 1e-2)
    eval_steps: int = _arg("validate every this many steps", 25)
    eval_examples: int = _arg("validation texts used (balanced)", 64)
    seed: int = _arg("first seed", 0)
    seeds: int = _arg("number of seeds; the best by validation |r| is kept", 1)
    source: str = _arg("encoder input: factual | counterfactual | diff", "factual")
    dtype: str = _arg("base model dtype", "float32")
    mixed_precision: str = _arg("no | bf16 | fp16 autocast of the base model (GPUs)", "no")
    test_examples: int = _arg("held-out test texts to report Pearson r on (0: skip)", 1000)
    resume: bool = _arg("continue an interrupted run in --out", False)
    overwrite: bool = _arg("replace the results of an earlier run in --out", False)
    quiet: bool = _arg("no progress bars", False)

    def run(self) -> int:
        from . import features as feature_data
        from .evaluation import encoder_correlation
        from .gradients import parse_layers
        from .modeling_gradiend import GradiendModel
        from .training import GradiendTrainer, TrainingArguments
        from .zoo import EMBEDDED_MODELS

        started = time.time()
        args = TrainingArguments(
            output_dir=self.out, max_steps=self.steps, batch_size=self.batch_size, learning_rate=self.lr,
            weight_decay=self.weight_decay, eval_steps=self.eval_steps, eval_max_examples=self.eval_examples,
            seed=self.seed, num_seeds=self.seeds, mixed_precision=self.mixed_precision,
            overwrite_output_dir=self.overwrite, progress_bar=not self.quiet,
        )
        feature = feature_data.load_feature(self.feature, seed=self.seed)
        base, tokenizer = _load_base(self.model, None, "the command line", dtype=self.dtype)
        params = self.params or (EMBEDDED_MODELS[self.model].recommended_params if self.model in EMBEDDED_MODELS
                                 else None)
        model = GradiendModel.for_base_model(base, params=params, layers=parse_layers(self.layers),
                                             include_embeddings=self.include_embeddings, feature=feature,
                                             source=self.source)
        print(f"Training GRADIEND for {feature.name!r} on {self.model}: {len(model.param_names)} parameter tensors, "
              f"n = {model.config.num_selected:,}; {len(feature.train)} training texts.")
        trainer = GradiendTrainer(model, base, tokenizer, feature, args)
        result = trainer.train(resume_from_checkpoint=self.resume)
        if result.interrupted:
            print(f"Interrupted. Resume with: gradiend train ... --out {self.out} --resume")
            return 130
        summary = {
            "model": self.model,
            "feature": feature.name,
            "validation_pearson_r": round(result.best_correlation, 4),
            "best_seed": result.best_seed,
            "best_step": result.best_step,
            "train_seconds": round(result.seconds, 1),
        }
        if self.test_examples and feature.test:
            test = trainer.usable_examples(feature.test, "test")[: self.test_examples]
            correlation = encoder_correlation(model, trainer.engine, test, progress=not self.quiet)
            summary["test_pearson_r"] = round(correlation.pearson_r, 4)
            summary["test_mean_h"] = {k: round(v, 4) for k, v in correlation.mean_h.items()}
            summary["test_examples"] = len(test)
        summary["total_seconds"] = round(time.time() - started, 1)
        if trainer.state.is_main_process:
            (Path(self.out) / "results.json").write_text(json.dumps(summary, indent=2))
            print(json.dumps(summary, indent=2))
            print(f"Saved to {self.out} (load with AutoModel.from_pretrained({self.out!r}) after `import gradiend_hf`).")
        return 0


@dataclass
class Push:
    """Upload a saved GRADIEND model, delta adapter or PEFT export folder to the Hub (with its model card)."""

    path: str = _arg("folder written by `gradiend train`, `gradiend export` or `gradiend merge`", positional=True)
    repo_id: str = _arg("target repository, e.g. me/gemma-gradiend-gender", positional=True)
    private: bool = _arg("create the repository as private", False)

    def run(self) -> int:
        from .adapters import ADAPTER_CONFIG_NAME, ADAPTER_TYPE, DeltaAdapter

        adapter_config = Path(self.path) / ADAPTER_CONFIG_NAME
        if adapter_config.is_file():
            kind = json.loads(adapter_config.read_text()).get("adapter_type")
            if kind == ADAPTER_TYPE:
                info = DeltaAdapter.from_pretrained(self.path).push_to_hub(self.repo_id, private=self.private or None)
            else:  # a PEFT export: upload it as it is (its README is PEFT-style already)
                from huggingface_hub import HfApi

                api = HfApi()
                api.create_repo(self.repo_id, private=self.private or None, exist_ok=True)
                info = api.upload_folder(repo_id=self.repo_id, folder_path=self.path,
                                         commit_message="Upload PEFT export of a GRADIEND delta adapter")
        else:
            from .modeling_gradiend import GradiendModel

            info = GradiendModel.from_pretrained(self.path).push_to_hub(self.repo_id, private=self.private or None)
        print(f"Pushed {self.path} to {self.repo_id}: {getattr(info, 'commit_url', info)}")
        return 0


def _parse_h(text: str | None) -> float | list[float] | None:
    """`"1.0"` -> 1.0, `"0.5,-1"` -> [0.5, -1.0] (one value per feature neuron)."""
    if text is None:
        return None
    from .errors import GradiendConfigError

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise GradiendConfigError(f"--h must be a number (or comma-separated numbers), got {text!r}.") from None
    return values[0] if len(values) == 1 else values


def _parse_rank(text: str) -> str | int | float:
    """`exact`, an integer rank, or an energy fraction such as 0.99."""
    from .errors import AdapterExportError

    if text == "exact":
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise AdapterExportError(f"--lora must be 'exact', an integer rank or an energy fraction such as 0.99, got "
                                 f"{text!r}.") from None


def _load_base(name: str | None, recorded: str | None, what: str, **kwargs):
    """(base model, tokenizer): `name` (from --model), else the base model that `what` records; a model that cannot
    be loaded is one clear error naming it."""
    from .errors import GradiendError, GradiendLoadError
    from .zoo import load_base_model

    chosen = name or recorded
    if not chosen:
        raise GradiendLoadError(f"{what} records no base model; name it with --model (an embedded name, Hub id or "
                                f"folder).")
    try:
        return load_base_model(chosen, **kwargs)
    except GradiendError:
        raise
    except (OSError, ValueError) as error:
        first_line = str(error).splitlines()[0] if str(error) else ""
        advice = ("Check --model: an embedded name (see `gradiend models`), a local folder or a reachable Hub id."
                  if name else "Pass the base model with --model.")
        raise GradiendLoadError(
            f"Could not load the base model {chosen!r}{'' if name else f' recorded by {what}'} "
            f"({type(error).__name__}: {first_line}). {advice}"
        ) from error


def _check_output(folder: str, overwrite: bool) -> Path:
    """Refuse to write into a non-empty folder unless --overwrite (then it is emptied first)."""
    from ._utils import empty_output_dir

    return empty_output_dir(folder, overwrite=overwrite, what="output")


@dataclass
class Export:
    """Turn a GRADIEND model's decoded update α·dec(h) into a delta adapter (and optionally a PEFT LoRA / SHiRA)."""

    path_or_repo: str = _arg("GRADIEND model folder or Hub repo id", positional=True)
    h: str = _arg("feature value to decode (the sign picks the class; e.g. the best point of `gradiend search`)")
    alpha: float = _arg("strength α of the update")
    out: str = _arg("folder for the delta adapter")
    dial: bool = _arg("keep the decoder's direction and offset: h and α stay knobs when applying", False)
    lora: str | None = _arg("also write a stock PEFT LoRA to OUT-lora: 'exact', a rank (e.g. 16) or an energy "
                            "fraction (e.g. 0.99)", None)
    pure: bool = _arg("LoRA / SHiRA with factors only (no biases, no modules_to_save), for serving engines", False)
    shira: int | None = _arg("also write a PEFT SHiRA adapter with r·(m+n) entries per matrix to OUT-shira", None)
    model: str | None = _arg("base model (embedded name, Hub id or folder); default: the one in the config", None)
    no_base: bool = _arg("do not load the base model (no compatibility check; PEFT exports then need module "
                         "types recorded at training time)", False)
    overwrite: bool = _arg("replace existing output folders", False)

    def run(self) -> int:
        from .modeling_gradiend import GradiendModel

        h = _parse_h(self.h)
        rank = _parse_rank(self.lora) if self.lora is not None else None
        outputs = [_check_output(self.out, self.overwrite)]
        if rank is not None:
            outputs.append(_check_output(self.out.rstrip("/") + "-lora", self.overwrite))
        if self.shira is not None:
            outputs.append(_check_output(self.out.rstrip("/") + "-shira", self.overwrite))
        model = GradiendModel.from_pretrained(self.path_or_repo)
        base = tokenizer = None
        if not self.no_base:
            base, tokenizer = _load_base(self.model, model.config.base_model_name_or_path, self.path_or_repo)
        adapter = model.to_adapter(h=h, alpha=self.alpha, dial=self.dial, base_model=base)
        adapter.save_pretrained(outputs[0])
        print(f"Wrote the delta adapter to {outputs[0]}: {adapter}")
        if rank is not None:
            report = adapter.export_lora(outputs[1], rank=rank, pure=self.pure, base_model=base, tokenizer=tokenizer)
            print(report.summary())
        if self.shira is not None:
            report = adapter.export_shira(outputs[-1], r=self.shira, pure=self.pure, base_model=base,
                                          tokenizer=tokenizer)
            print(report.summary())
        return 0


@dataclass
class Apply:
    """Merge a delta adapter into its base model and save a plain transformers model folder (no gradiend_hf needed)."""

    adapter: str = _arg("delta adapter folder or Hub repo id", positional=True)
    out: str = _arg("folder for the merged model")
    model: str | None = _arg("base model (embedded name, Hub id or folder); default: the one the adapter records",
                             None)
    scale: float = _arg("multiply the update by this", 1.0)
    h: str | None = _arg("feature value (dial adapters only; default: the adapter's own)", None)
    alpha: float | None = _arg("strength (dial adapters only; default: the adapter's own)", None)
    overwrite: bool = _arg("replace an existing output folder", False)

    def run(self) -> int:
        from .adapters import DeltaAdapter

        out = _check_output(self.out, self.overwrite)
        adapter = DeltaAdapter.from_pretrained(self.adapter)
        base, tokenizer = _load_base(self.model, adapter.config.base_model_name_or_path, self.adapter)
        adapter.merge_and_save(base, out, tokenizer=tokenizer, scale=self.scale, h=_parse_h(self.h),
                               alpha=self.alpha)
        print(f"Wrote {out}: the base model with {self.adapter} merged (scale {self.scale}). Load it with "
              f"AutoModelForCausalLM.from_pretrained({str(out)!r}) (or AutoModelForMaskedLM).")
        return 0


@dataclass
class Merge:
    """Combine delta adapters (e.g. gender and race) into one, by weighted sum, TIES or DARE (PEFT's merge maths)."""

    adapters: list[str] = field(metadata={"help": "delta adapter folders or Hub repo ids", "positional": True,
                                          "nargs": "+"})
    out: str = _arg("folder for the merged adapter")
    weights: list[str] = _arg("one weight per adapter (default: all 1)", [], nargs="+")
    method: str = _arg("sum | ties | dare (= dare_linear) | dare_ties | magnitude_prune", "sum")
    density: float = _arg("share of entries TIES / DARE / magnitude pruning keep", 0.5)
    seed: int = _arg("seed of DARE's random drops", 0)
    overwrite: bool = _arg("replace an existing output folder", False)

    def run(self) -> int:
        from .adapters import DeltaAdapter, merge_adapters
        from .errors import AdapterCompatibilityError

        out = _check_output(self.out, self.overwrite)
        try:
            weights = [float(w) for w in self.weights] if self.weights else None
        except ValueError:
            raise AdapterCompatibilityError(f"--weights must be numbers, got {self.weights}.") from None
        adapters = [DeltaAdapter.from_pretrained(a) for a in self.adapters]
        merged = merge_adapters(adapters, weights, method=self.method, density=self.density, seed=self.seed)
        merged.save_pretrained(out)
        print(f"Wrote {out}: {merged}")
        return 0


@dataclass
class Bench:
    """Run the bias benchmarks (StereoSet, CrowS-Pairs, SEAT, LM score) on a base model, alone and with adapters."""

    model: str = _arg("base model: embedded name (see `gradiend models`), Hub id or folder", "gemma-3-270m")
    adapter: list[str] = _arg("delta adapter folders or Hub ids, each benchmarked applied to the base (one at a time)",
                              [], nargs="+")
    suite: str = _arg("comma-separated suites: stereoset,crows,seat,lms", "stereoset,crows,seat,lms")
    bias_types: str | None = _arg("comma-separated bias types: gender,race,religion,profession (default: all)", None)
    limit: int | None = _arg("at most this many examples per bias type / SEAT set / LM texts, for quick runs", None)
    batch_size: int = _arg("sequences per forward pass", 16)
    bootstrap: int = _arg("bootstrap resamples for the 95 % intervals (0: none)", 1000)
    seed: int = _arg("seed of bootstraps and sampled p-values", 0)
    out: str = _arg("output folder for JSON results, the Markdown table and the plot", "runs/bench")
    overwrite: bool = _arg("replace an existing output folder", False)
    quiet: bool = _arg("no progress bars", False)

    def run(self) -> int:
        from .adapters import DeltaAdapter
        from .benchmarks import compare_reports, plot_reports, run_benchmarks

        out = _check_output(self.out, self.overwrite)
        adapters = {Path(a).name or a: DeltaAdapter.from_pretrained(a) for a in self.adapter}  # fail before loading
        base, tokenizer = _load_base(self.model, None, "the command line")
        options = {"suites": [s.strip() for s in self.suite.split(",") if s.strip()], "limit": self.limit,
                   "bias_types": [b.strip() for b in self.bias_types.split(",")] if self.bias_types else None,
                   "batch_size": self.batch_size, "bootstrap": self.bootstrap, "seed": self.seed,
                   "progress": not self.quiet}
        reports = {"base": run_benchmarks(base, tokenizer, **options)}
        for name, adapter in adapters.items():
            with adapter.applied(base):
                reports[name] = run_benchmarks(base, tokenizer, **options)
        out.mkdir(parents=True, exist_ok=True)
        for name, report in reports.items():
            report.save(out / f"{name}.json")
        table = compare_reports(reports)
        (out / "benchmarks.md").write_text(table, encoding="utf-8")
        plot_reports(reports, out / "benchmarks.png", title=self.model)
        print(table)
        print(f"Wrote {out}/: one JSON per model, benchmarks.md, benchmarks.png")
        return 0


@dataclass
class Demo:
    """The main job: train a GRADIEND, evaluate, search, export the debiasing adapter, benchmark, and report."""

    model: str = _arg("base model: embedded name (see `gradiend models`), Hub id or folder", "gemma-3-270m")
    feature: str = _arg("gender | race[:a,b] | religion[:a,b] | a .csv/.jsonl file of slot examples", "gender")
    out: str = _arg("output folder (a second run with the same arguments reuses finished steps)", "runs/demo")
    quick: bool = _arg("a minutes-long version on fewer steps, texts and grid points", False)
    steps: int | None = _arg("GRADIEND training steps (default 100; --quick 20)", None)
    bench_limit: int | None = _arg("benchmark examples per bias type (default all; --quick 24)", None)
    seed: int = _arg("seed of training, splits and samples", 0)
    overwrite: bool = _arg("redo every step (empties --out first)", False)
    quiet: bool = _arg("no progress bars", False)

    def run(self) -> int:
        from .demo import DemoArguments, run_demo

        report = run_demo(DemoArguments(model=self.model, feature=self.feature, out=self.out, quick=self.quick,
                                        steps=self.steps, bench_limit=self.bench_limit, seed=self.seed,
                                        overwrite=self.overwrite, progress=not self.quiet))
        print(f"Report: {report}")
        return 0


@dataclass
class Compare:
    """The paper's comparison: GRADIEND, CDA, Dropout, INLP, SentenceDebias, SelfDebias, LEACE, RLACE and combinations,
    ranked by mean proportional rank over SS and SEAT (table, JSON and plot)."""

    model: str = _arg("base model: embedded name (see `gradiend models`), Hub id or folder", "gemma-3-270m")
    feature: str = _arg("gender | race[:a,b] | religion[:a,b] | a .csv/.jsonl file of slot examples", "gender")
    out: str = _arg("output folder (a second run with the same settings reuses finished variants)", "runs/compare")
    methods: list[str] = _arg("variants to compare (default all): gradiend cda dropout inlp sentence_debias "
                              "self_debias leace rlace gradiend+inlp gradiend+sentence_debias cda+inlp "
                              "cda+sentence_debias dropout+inlp dropout+sentence_debias", [], nargs="+")
    gradiend_adapter: str | None = _arg("a trained GRADIEND delta adapter (e.g. a demo's adapter/); default: train "
                                        "one here", None)
    quick: bool = _arg("a smoke run of minutes: fewer steps, pairs, benchmark items and resamples", False)
    bench_limit: int | None = _arg("benchmark items per bias type (default all; --quick 24)", None)
    lm_texts: int | None = _arg("texts of the LM score (default 200; --quick 24)", None)
    gradiend_steps: int | None = _arg("GRADIEND training steps without --gradiend-adapter (default 100; --quick 10)",
                                      None)
    pretrain_steps: int | None = _arg("CDA / Dropout further pre-training steps (default 200; --quick 6)", None)
    max_pairs: int | None = _arg("counterfactual pairs the projections are fitted on (default 1000; --quick 128)",
                                 None)
    glue: str | None = _arg("folder of GLUE-format dev sets (SST-2/, CoLA/, RTE/) for zero-shot accuracy", None)
    glue_limit: int | None = _arg("examples per GLUE task (default 200; --quick 16)", None)
    bootstrap: int | None = _arg("bootstrap resamples of the intervals (default 1000; --quick 200)", None)
    seed: int = _arg("seed of training, samples and bootstraps", 0)
    overwrite: bool = _arg("redo everything (empties --out first)", False)
    quiet: bool = _arg("no progress bars", False)

    def run(self) -> int:
        from .compare import CompareArguments, run_compare

        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "quiet"}
        path = run_compare(CompareArguments(**{**options, "methods": self.methods or None},
                                            progress=not self.quiet))
        print(path.read_text(encoding="utf-8"))
        print(f"Wrote {path}, comparison.json and comparison.png in {path.parent}/")
        return 0


def _load_base_for(model, path_or_repo: str, base_name: str | None):
    """(base model, tokenizer) for a GRADIEND model, checked to hold every parameter the model spans."""
    base, tokenizer = _load_base(base_name, model.config.base_model_name_or_path, f"`{path_or_repo}`")
    model.check_base_model(base)
    return base, tokenizer


def _feature_for(config, spec: str | None, seed: int):
    """The feature data: `spec` if given, else the built-in feature named in the config."""
    from .errors import FeatureDataError
    from .features import load_feature

    if spec is None:
        name = config.feature_name
        if name in ("race", "religion"):
            spec = f"{name}:{config.positive_class},{config.negative_class}"
        elif name == "gender":
            spec = name
        else:
            raise FeatureDataError(
                f"The model's feature {name!r} is not a built-in one (gender, race, religion), so its texts cannot "
                f"be rebuilt by name; pass the data it was trained on with --feature FILE (.csv or .jsonl)."
            )
    return load_feature(spec, seed=seed)


@dataclass
class Evaluate:
    """Evaluate a GRADIEND encoder: h of both classes and of neutral texts, correlations, a JSON report and a plot."""

    path_or_repo: str = _arg("GRADIEND model folder or Hub repo id", positional=True)
    model: str | None = _arg("base model (embedded name, Hub id or folder); default: the one in the config", None)
    feature: str | None = _arg("gender | race[:a,b] | religion[:a,b] | a .csv/.jsonl file; default: the built-in "
                               "feature named in the config", None)
    split: str = _arg("split whose class texts are encoded", "test")
    max_per_group: int = _arg("at most this many texts per group (0: all)", 200)
    feature_seed: int | None = _arg("seed of the feature's splits; default: the training seed in the config, else 0",
                                    None)
    seed: int = _arg("seed of the text samples and of the control slots", 0)
    batch_size: int = _arg("texts per forward-mode (JVP) pass", 16)
    out: str | None = _arg("output folder; default: DIR/evaluation (a folder) or ./evaluation-OWNER--NAME (a repo)",
                           None)
    quiet: bool = _arg("no progress bar", False)

    def run(self) -> int:
        import os

        from .evaluation import evaluate_encoder
        from .modeling_gradiend import GradiendModel

        model = GradiendModel.from_pretrained(self.path_or_repo)
        seeds = (model.config.training or {}).get("seeds") or [0]
        feature_seed = self.feature_seed if self.feature_seed is not None else int(seeds[0])
        feature = _feature_for(model.config, self.feature, feature_seed)  # before the (slow) base model load
        base, tokenizer = _load_base_for(model, self.path_or_repo, self.model)
        report = evaluate_encoder(model, base, tokenizer, feature, split=self.split,
                                  max_per_group=self.max_per_group or None, batch_size=self.batch_size,
                                  seed=self.seed, progress=not self.quiet)
        if self.out:
            out = Path(self.out)
        elif os.path.isdir(self.path_or_repo):
            out = Path(self.path_or_repo) / "evaluation"
        else:
            out = Path("evaluation-" + self.path_or_repo.replace("/", "--"))
        paths = report.save(out)
        print(f"Encoder evaluation of {self.path_or_repo} on {feature.name!r} ({self.split} split):")
        print(report.summary())
        print(f"Wrote {', '.join(str(p) for p in paths)}")
        return 0


@dataclass
class Encode:
    """Print the feature value h of your own texts with a [MASK] slot: the GRADIEND neuron as a probe."""

    path_or_repo: str = _arg("GRADIEND model folder or Hub repo id", positional=True)
    texts: list[str] = field(metadata={"help": "texts, each with one [MASK] where the target word goes",
                                       "positional": True, "nargs": "+"})
    target: str | None = _arg("target word at every slot; default: the model's feature word that the base model "
                              "finds most likely at the slot", None)
    model: str | None = _arg("base model (embedded name, Hub id or folder); default: the one in the config", None)

    def run(self) -> int:
        from .evaluation import encode_texts
        from .evaluation.probe import check_slot_texts
        from .modeling_gradiend import GradiendModel

        texts = check_slot_texts(self.texts)  # before the (slow) model loads
        model = GradiendModel.from_pretrained(self.path_or_repo)
        base, tokenizer = _load_base_for(model, self.path_or_repo, self.model)
        rows = encode_texts(model, base, tokenizer, texts, target=self.target)
        print(f"{'h':>8}  {'target':<12} {'chosen':<12} {'p(target)':>9}  counterfactual  text")
        for row in rows:
            h = " ".join(f"{v:+.4f}" for v in row.h)
            print(f"{h:>8}  {row.target!r:<12} {row.chosen:<12} {row.target_probability:>9.3f}  "
                  f"{row.counterfactual!r:<14}  {row.text}")
        if self.target is None:
            print("target = the feature word the base model finds most likely at the slot (fix it with --target)")
        return 0


def _parse_grid(values: list[str], option: str) -> list[float] | None:
    """`["-1", "±0.01", "0.5"]` -> [-1.0, -0.01, 0.01, 0.5]; `±x` (or `+-x`) stands for both signs."""
    from .errors import SearchError

    out: list[float] = []
    for value in values:
        text = value.strip()
        both = text.startswith(("±", "+-"))
        text = text.removeprefix("±").removeprefix("+-")
        try:
            number = float(text)
        except ValueError:
            raise SearchError(f"{option} takes numbers such as 0.01, -0.2 or ±0.01 (both signs), got {value!r}."
                              ) from None
        out.extend([-abs(number), abs(number)] if both and number != 0 else [number])
    return out or None


@dataclass
class Search:
    """Search the decoder grid (h*, α) for the edit W + α·dec(h*) that balances the feature or favours one class."""

    path_or_repo: str = _arg("GRADIEND model folder or Hub repo id", positional=True)
    model: str | None = _arg("base model (embedded name, Hub id or folder); default: the one in the config", None)
    feature: str | None = _arg("gender | race[:a,b] | religion[:a,b] | a .csv/.jsonl file; default: the built-in "
                               "feature named in the config", None)
    split: str = _arg("split whose texts score the grid points", "validation")
    max_texts: int = _arg("feature texts per point, half per class", 16)  # search.DEFAULT_MAX_TEXTS
    max_neutral: int = _arg("neutral sentences for the LM factor", 8)  # search.DEFAULT_MAX_NEUTRAL
    test_texts: int = _arg("test-split texts to report the best balanced point on (0: skip)", 64)
    h: list[str] = field(default_factory=list, metadata={
        "help": "feature factors h* (default: -10 -2 -1 -0.8 ... 0.8 1 2 10, and 0)"})
    alpha: list[str] = field(default_factory=list, metadata={
        "help": "learning rates α; ±x gives both signs; write negatives as decimals (-0.001), not -1e-3 "
                "(default: ±0.5 ±0.1 ±0.05 ±0.01 ±0.005 ±0.001 ±0.0005 ±0.0001)"})
    no_prune: bool = _arg("score every grid point fully (slower)", False)
    batch_size: int = _arg("texts per forward pass", 16)
    feature_seed: int | None = _arg("seed of the feature's splits; default: the training seed in the config, else 0",
                                    None)
    seed: int = _arg("seed of the feature-text sample", 0)
    out: str | None = _arg("output folder; default: DIR/search (a folder) or ./search-OWNER--NAME (a repo)", None)
    quiet: bool = _arg("no progress bar", False)

    def run(self) -> int:
        import os

        from .evaluation import evaluate_point, search_decoder
        from .modeling_gradiend import GradiendModel

        h_values, alphas = _parse_grid(self.h, "--h"), _parse_grid(self.alpha, "--alpha")  # before slow loads
        model = GradiendModel.from_pretrained(self.path_or_repo)
        seeds = (model.config.training or {}).get("seeds") or [0]
        feature_seed = self.feature_seed if self.feature_seed is not None else int(seeds[0])
        feature = _feature_for(model.config, self.feature, feature_seed)
        base, tokenizer = _load_base_for(model, self.path_or_repo, self.model)
        options = {"max_texts": self.max_texts, "max_neutral": self.max_neutral, "batch_size": self.batch_size,
                   "seed": self.seed}
        result = search_decoder(model, base, tokenizer, feature, h_values=h_values, alphas=alphas, split=self.split,
                                prune=not self.no_prune, progress=not self.quiet, **options)
        if self.out:
            out = Path(self.out)
        elif os.path.isdir(self.path_or_repo):
            out = Path(self.path_or_repo) / "search"
        else:
            out = Path("search-" + self.path_or_repo.replace("/", "--"))
        paths = list(result.save(out).values())
        s = result.settings
        print(f"Decoder search of {self.path_or_repo} on {feature.name!r} ({self.split} split, {s['num_texts']} "
              f"texts, {s['num_neutral']} neutral sentences): {len(result.points)} points, {s['points_scored']} "
              f"scored, {s['points_with_lm']} with an LM factor, {s['total_seconds']:.0f} s.")
        print(f"{'criterion':<12} {'h*':>6} {'alpha':>8} {'index':>7} {'LM':>6} {'score':>7}   base: index = score")
        for criterion in result.criteria:
            best = result.best(criterion)
            where = f"{'base':>6} {'':>8}" if best.is_base else f"{best.h:>6g} {best.alpha:>8g}"
            print(f"{criterion:<12} {where} {best.indices[criterion]:>7.3f} {best.lm_factor:>6.3f} "
                  f"{best.score(criterion):>7.3f}   {result.base.score(criterion):.3f}")
        best = result.best("balanced")
        if best.is_base:
            print("No grid point beats the base model on the balanced index; nothing to check on the test split.")
        elif self.split != "test" and self.test_texts:
            test = evaluate_point(model, base, tokenizer, feature, best.h, best.alpha, split="test",
                                  **{**options, "max_texts": self.test_texts})
            point, reference = test.points[0], test.base
            scores = ", ".join(f"{c} {point.score(c):.3f} (base {reference.score(c):.3f})" for c in test.criteria)
            print(f"Test split ({test.settings['num_texts']} texts), best balanced point h*={best.h:g}, "
                  f"alpha={best.alpha:g}: {scores}; LM factor {point.lm_factor:.3f}, bias {point.bias:+.3g} "
                  f"(base {reference.bias:+.3g}).")
            paths.append(test.to_json(out / "search_test.json"))
        print(f"Wrote {', '.join(str(p) for p in paths)}")
        return 0


COMMANDS: dict[str, type] = {"models": Models, "info": Info, "train": Train, "push": Push, "evaluate": Evaluate,
                             "encode": Encode, "export": Export, "apply": Apply, "merge": Merge,
                             "search": Search, "bench": Bench, "demo": Demo, "compare": Compare}

EXAMPLES: dict[str, str] = {
    "models": "example:\n  gradiend models",
    "info": "example:\n  gradiend info runs/gender\n  gradiend info me/gemma-gradiend-gender",
    "train": "example:\n  gradiend train --model gemma-3-270m --feature gender --out runs/gender\n"
             "  gradiend train --model smollm2-135m --feature religion:christian,muslim --steps 100 --out runs/rel\n"
             "  gradiend train --model ./my-model --feature my_feature.jsonl --params 'model.layers.*.mlp.*' "
             "--out runs/mine",
    "demo": "example:\n  gradiend demo --out runs/demo                 # gender on Gemma 3 270M, about 25 minutes\n"
            "  gradiend demo --quick --out runs/demo-quick   # a few minutes\n"
            "  gradiend demo --feature race:white,black --out runs/demo-race",
    "compare": "example:\n  gradiend compare --model gemma-3-270m --feature gender "
               "--gradiend-adapter runs/demo/adapter --out runs/compare\n"
               "  gradiend compare --quick --methods gradiend inlp gradiend+inlp --out runs/cmp-quick\n"
               "  gradiend compare --glue /path/to/glue --out runs/compare",
    "bench": "example:\n  gradiend bench --model gemma-3-270m --adapter runs/demo/adapter --bias-types gender "
             "--out runs/bench\n  gradiend bench --model smollm2-135m --suite stereoset,lms --limit 50",
    "export": "example:\n  gradiend export runs/gender --h -1 --alpha 0.01 --out out/debias --lora exact\n"
              "  gradiend export runs/gender --h 0 --alpha 0.01 --dial --out out/gender-dial",
    "apply": "example:\n  gradiend apply out/debias --out out/gemma-debiased\n"
             "  gradiend apply out/gender-dial --h -0.5 --alpha 0.02 --out out/gemma-dialled",
    "merge": "example:\n  gradiend merge out/gender out/race --weights 1 0.5 --method ties --out out/gender+race",
    "push": "example:\n  gradiend push runs/gender me/gemma-gradiend-gender\n"
            "  gradiend push out/debias me/gemma-debias\n  gradiend push out/debias-lora me/gemma-debias-lora",
    "evaluate": "example:\n  gradiend evaluate runs/gradiend --max-per-group 100\n"
                "  gradiend evaluate me/gemma-gradiend-gender --model gemma-3-270m --out eval/gender",
    "search": "example:\n  gradiend search runs/gradiend\n"
              "  gradiend search runs/gradiend --h -1 0 1 --alpha ±0.01 ±0.001 --max-texts 64 --out runs/search",
    "encode": "example:\n  gradiend encode runs/gradiend \"Mary said that [MASK] would come.\" "
              "\"John said that [MASK] would come.\"\n"
              "  gradiend encode runs/gradiend \"The doctor said that [MASK] was late.\" --target she",
}
"""Usage examples shown at the end of a command's --help."""


def _add_arguments(parser: argparse.ArgumentParser, command: type) -> None:
    hints = typing.get_type_hints(command)
    for f in dataclasses.fields(command):
        hint = hints[f.name]
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs=f.metadata.get("nargs"), help=help_text)
            continue
        flag = "--" + f.name.replace("_", "-")
        if hint is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        if typing.get_origin(hint) is list:
            parser.add_argument(flag, nargs=f.metadata.get("nargs", "+"), default=[], help=help_text)
            continue
        default = None if required else f.default
        parser.add_argument(flag, type=base, default=default, required=required,
                            help=f"{help_text} (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradiend", description="GRADIEND feature neurons for Hugging Face models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        _add_arguments(sub.add_parser(name, help=command.__doc__, description=command.__doc__,
                                      epilog=EXAMPLES.get(name),
                                      formatter_class=argparse.RawDescriptionHelpFormatter), command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parsed = vars(build_parser().parse_args(argv))
    command = COMMANDS[parsed.pop("command")](**parsed)
    from .errors import GradiendError

    try:
        return command.run()
    except GradiendError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line for the user; the traceback on request (an unexpected error is a bug)
        if os.environ.get("GRADIEND_TRACEBACK"):
            raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"error: {type(error).__name__}: {first} (unexpected; set GRADIEND_TRACEBACK=1 for the traceback and "
              f"please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
