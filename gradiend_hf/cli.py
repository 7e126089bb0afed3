"""The `gradiend` command: each subcommand is a dataclass of documented arguments calling the public API."""

from __future__ import annotations

import argparse
import dataclasses
import json
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
        from .zoo import EMBEDDED_MODELS, load_base_model

        started = time.time()
        args = TrainingArguments(
            output_dir=self.out, max_steps=self.steps, batch_size=self.batch_size, learning_rate=self.lr,
            weight_decay=self.weight_decay, eval_steps=self.eval_steps, eval_max_examples=self.eval_examples,
            seed=self.seed, num_seeds=self.seeds, mixed_precision=self.mixed_precision,
            overwrite_output_dir=self.overwrite, progress_bar=not self.quiet,
        )
        feature = feature_data.load_feature(self.feature, seed=self.seed)
        base, tokenizer = load_base_model(self.model, dtype=self.dtype)
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
    """Upload a saved GRADIEND model folder to the Hub with its model card."""

    path: str = _arg("folder written by save_pretrained / gradiend train", positional=True)
    repo_id: str = _arg("target repository, e.g. me/gemma-gradiend-gender", positional=True)
    private: bool = _arg("create the repository as private", False)

    def run(self) -> int:
        from .modeling_gradiend import GradiendModel

        model = GradiendModel.from_pretrained(self.path)
        info = model.push_to_hub(self.repo_id, private=self.private or None)
        print(f"Pushed {self.path} to {self.repo_id}: {getattr(info, 'commit_url', info)}")
        return 0


COMMANDS: dict[str, type] = {"models": Models, "info": Info, "train": Train, "push": Push}


def _add_arguments(parser: argparse.ArgumentParser, command: type) -> None:
    hints = typing.get_type_hints(command)
    for f in dataclasses.fields(command):
        hint = hints[f.name]
        help_text = f.metadata.get("help", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.metadata.get("positional"):
            parser.add_argument(f.name, help=help_text)
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
        _add_arguments(sub.add_parser(name, help=command.__doc__, description=command.__doc__), command)
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


if __name__ == "__main__":
    sys.exit(main())
