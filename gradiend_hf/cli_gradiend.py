"""`gradiend` subcommands about GRADIEND models: models, info, train, evaluate, encode, search."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .cli_support import arg, feature_for, load_base, load_base_for, parse_grid, relaunch_with_torchrun

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

    path_or_repo: str = arg("folder written by save_pretrained, or a Hub repo id", positional=True)
    revision: str | None = arg("Hub revision", None)

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

    model: str = arg("embedded model name (see `gradiend models`), Hub id or local path", "gemma-3-270m")
    feature: str = arg("gender | race[:a,b] | religion[:a,b] | a .csv/.jsonl file of slot examples", "gender")
    out: str = arg("output folder", "runs/gradiend")
    params: list[str] = arg("glob patterns of base parameters (default: the embedded model's recommendation, "
                            "else every transformer-block parameter)", [], nargs="+")
    layers: str | None = arg("only these block indices, e.g. '0-5,8'", None)
    include_embeddings: bool = arg("also select the input embeddings (default selection only)", False)
    steps: int = arg("GRADIEND steps per seed", 150)
    batch_size: int = arg("texts per step (all of one class)", 8)
    lr: float = arg("AdamW learning rate", 1e-5)
    weight_decay: float = arg("AdamW weight decay", 1e-2)
    eval_steps: int = arg("validate every this many steps", 25)
    eval_examples: int = arg("validation texts used (balanced)", 64)
    seed: int = arg("first seed", 0)
    seeds: int = arg("number of seeds; the best by validation |r| is kept", 1)
    source: str = arg("encoder input: factual | counterfactual | diff", "factual")
    dtype: str = arg("base model dtype", "float32")
    mixed_precision: str = arg("no | bf16 | fp16 autocast of the base model (GPUs)", "no")
    num_processes: int = arg("train in this many processes (started with torchrun; gloo on CPUs); each takes a "
                             "share of every batch", 1)
    fsdp: bool = arg("with several processes, split the GRADIEND's weights and AdamW state across them (FSDP2) "
                     "instead of a whole copy in each", False)
    test_examples: int = arg("held-out test texts to report Pearson r on (0: skip)", 1000)
    resume: bool = arg("continue an interrupted run in --out", False)
    overwrite: bool = arg("replace the results of an earlier run in --out", False)
    quiet: bool = arg("no progress bars", False)

    def run(self) -> int:
        from . import features as feature_data
        from .evaluation import encoder_correlation
        from .gradients import parse_layers
        from .modeling_gradiend import GradiendModel
        from .training import GradiendTrainer, TrainingArguments
        from .zoo import EMBEDDED_MODELS

        if self.num_processes > 1 and "WORLD_SIZE" not in os.environ:
            return relaunch_with_torchrun("train", self, self.num_processes)
        started = time.time()
        args = TrainingArguments(
            output_dir=self.out, fsdp=self.fsdp, max_steps=self.steps, batch_size=self.batch_size, learning_rate=self.lr,
            weight_decay=self.weight_decay, eval_steps=self.eval_steps, eval_max_examples=self.eval_examples,
            seed=self.seed, num_seeds=self.seeds, mixed_precision=self.mixed_precision,
            overwrite_output_dir=self.overwrite, progress_bar=not self.quiet,
        )
        feature = feature_data.load_feature(self.feature, seed=self.seed)
        base, tokenizer = load_base(self.model, None, "the command line", dtype=self.dtype)
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
class Evaluate:
    """Evaluate a GRADIEND encoder: h of both classes and of neutral texts, correlations, a JSON report and a plot."""

    path_or_repo: str = arg("GRADIEND model folder or Hub repo id", positional=True)
    model: str | None = arg("base model (embedded name, Hub id or folder); default: the one in the config", None)
    feature: str | None = arg("gender | race[:a,b] | religion[:a,b] | a .csv/.jsonl file; default: the built-in "
                              "feature named in the config", None)
    split: str = arg("split whose class texts are encoded", "test")
    max_per_group: int = arg("at most this many texts per group (0: all)", 200)
    feature_seed: int | None = arg("seed of the feature's splits; default: the training seed in the config, else 0",
                                   None)
    seed: int = arg("seed of the text samples and of the control slots", 0)
    batch_size: int = arg("texts per forward-mode (JVP) pass", 16)
    out: str | None = arg("output folder; default: DIR/evaluation (a folder) or ./evaluation-OWNER--NAME (a repo)",
                          None)
    quiet: bool = arg("no progress bar", False)

    def run(self) -> int:
        import os

        from .evaluation import evaluate_encoder
        from .modeling_gradiend import GradiendModel

        model = GradiendModel.from_pretrained(self.path_or_repo)
        seeds = (model.config.training or {}).get("seeds") or [0]
        feature_seed = self.feature_seed if self.feature_seed is not None else int(seeds[0])
        feature = feature_for(model.config, self.feature, feature_seed)  # before the (slow) base model load
        base, tokenizer = load_base_for(model, self.path_or_repo, self.model)
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

    path_or_repo: str = arg("GRADIEND model folder or Hub repo id", positional=True)
    texts: list[str] = field(metadata={"help": "texts, each with one [MASK] where the target word goes",
                                       "positional": True, "nargs": "+"})
    target: str | None = arg("target word at every slot; default: the model's feature word that the base model "
                             "finds most likely at the slot", None)
    model: str | None = arg("base model (embedded name, Hub id or folder); default: the one in the config", None)

    def run(self) -> int:
        from .evaluation import encode_texts
        from .evaluation.probe import check_slot_texts
        from .modeling_gradiend import GradiendModel

        texts = check_slot_texts(self.texts)  # before the (slow) model loads
        model = GradiendModel.from_pretrained(self.path_or_repo)
        base, tokenizer = load_base_for(model, self.path_or_repo, self.model)
        rows = encode_texts(model, base, tokenizer, texts, target=self.target)
        print(f"{'h':>8}  {'target':<12} {'chosen':<12} {'p(target)':>9}  counterfactual  text")
        for row in rows:
            h = " ".join(f"{v:+.4f}" for v in row.h)
            print(f"{h:>8}  {row.target!r:<12} {row.chosen:<12} {row.target_probability:>9.3f}  "
                  f"{row.counterfactual!r:<14}  {row.text}")
        if self.target is None:
            print("target = the feature word the base model finds most likely at the slot (fix it with --target)")
        return 0


@dataclass
class Search:
    """Search the decoder grid (h*, α) for the edit W + α·dec(h*) that balances the feature or favours one class."""

    path_or_repo: str = arg("GRADIEND model folder or Hub repo id", positional=True)
    model: str | None = arg("base model (embedded name, Hub id or folder); default: the one in the config", None)
    feature: str | None = arg("gender | race[:a,b] | religion[:a,b] | a .csv/.jsonl file; default: the built-in "
                              "feature named in the config", None)
    on: str = arg("score points on 'transfer' texts (descriptions of people followed by a name or group-word "
                  "slot; the authors' selection) or on the 'feature' texts (its own slot)", "transfer")
    transfer: str | None = arg("your own transfer texts (.csv/.jsonl with a text column holding one [MASK]; "
                               "optional split, group); default: the built-in set of the feature", None)
    transfer_words: str | None = arg("JSON file {class: [words] or {word: weight}} for --transfer (default for "
                                     "gender: the built-in first names)", None)
    lm_policy: str | None = arg("threshold (keep points with LM score >= 0.99 x base; default on transfer) | "
                                "product (index x LM score, the paper) | relative (default on feature)", None)
    lm_threshold: float = arg("share of the base's LM score a point must keep (threshold policy)", 0.99)
    split: str = arg("split whose texts score the grid points", "validation")
    max_texts: int | None = arg("texts per point (default: 24 transfer texts, 16 feature texts)", None)
    max_neutral: int = arg("neutral sentences for the LM score", 8)  # search.DEFAULT_MAX_NEUTRAL
    test_texts: int = arg("test-split texts to report the best balanced point on (0: skip)", 64)
    h: list[str] = field(default_factory=list, metadata={
        "help": "feature factors h* (default: -10 -2 -1 -0.8 ... 0.8 1 2 10, and 0)"})
    alpha: list[str] = field(default_factory=list, metadata={
        "help": "learning rates α; ±x gives both signs; write negatives as decimals (-0.001), not -1e-3 "
                "(default: ±0.5 ±0.1 ±0.05 ±0.01 ±0.005 ±0.001 ±0.0005 ±0.0001)"})
    no_prune: bool = arg("score every grid point fully (slower)", False)
    batch_size: int = arg("texts per forward pass", 16)
    feature_seed: int | None = arg("seed of the feature's splits; default: the training seed in the config, else 0",
                                   None)
    seed: int = arg("seed of the feature-text sample", 0)
    out: str | None = arg("output folder; default: DIR/search (a folder) or ./search-OWNER--NAME (a repo)", None)
    quiet: bool = arg("no progress bar", False)

    def run(self) -> int:
        import os

        from .evaluation import evaluate_point, search_decoder
        from .features.transfer import load_transfer
        from .modeling_gradiend import GradiendModel

        h_values, alphas = parse_grid(self.h, "--h"), parse_grid(self.alpha, "--alpha")  # before slow loads
        transfer = load_transfer(self.transfer, self.transfer_words) if self.transfer else None
        model = GradiendModel.from_pretrained(self.path_or_repo)
        seeds = (model.config.training or {}).get("seeds") or [0]
        feature_seed = self.feature_seed if self.feature_seed is not None else int(seeds[0])
        feature = feature_for(model.config, self.feature, feature_seed)
        base, tokenizer = load_base_for(model, self.path_or_repo, self.model)
        options = {"on": self.on, "transfer": transfer, "lm_policy": self.lm_policy,
                   "lm_threshold": self.lm_threshold, "max_texts": self.max_texts, "max_neutral": self.max_neutral,
                   "batch_size": self.batch_size, "seed": self.seed}
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
        print(f"Decoder search of {self.path_or_repo} on {feature.name!r} ({s['on']} texts, {self.split} split, "
              f"{s['num_texts']} texts, {s['num_neutral']} neutral sentences, LM policy {s['lm_policy']}): "
              f"{len(result.points)} points, {s['points_scored']} scored, {s['points_with_lm']} with an LM score, "
              f"{s['total_seconds']:.0f} s.")
        print(f"{'criterion':<12} {'h*':>6} {'alpha':>8} {'index':>9} {'LM score':>9} {'score':>9}   base score")
        for criterion in result.criteria:
            best = result.best(criterion)
            where = f"{'base':>6} {'':>8}" if best.is_base else f"{best.h:>6g} {best.alpha:>8g}"
            print(f"{criterion:<12} {where} {best.indices[criterion]:>9.4g} {best.lm_score:>9.4g} "
                  f"{best.score(criterion):>9.4g}   {result.base.score(criterion):.4g}")
        best = result.best("balanced")
        if best.is_base:
            print("No grid point beats the base model on the balanced index; nothing to check on the test split.")
        elif self.split != "test" and self.test_texts:
            test = evaluate_point(model, base, tokenizer, feature, best.h, best.alpha, split="test",
                                  **{**options, "max_texts": self.test_texts})
            point, reference = test.points[0], test.base
            scores = ", ".join(f"{c} {point.score(c):.3f} (base {reference.score(c):.3f})" for c in test.criteria)
            print(f"Test split ({test.settings['num_texts']} texts), best balanced point h*={best.h:g}, "
                  f"alpha={best.alpha:g}: {scores}; LM score {point.lm_score:.4g} (base {reference.lm_score:.4g}), "
                  f"bias {point.bias:+.3g} (base {reference.bias:+.3g}).")
            paths.append(test.to_json(out / "search_test.json"))
        print(f"Wrote {', '.join(str(p) for p in paths)}")
        return 0


__all__ = ["Encode", "Evaluate", "Info", "Models", "Search", "Train"]
