"""What the `gradiend` subcommands share: documented argument fields, parsing of grids and ranks, loading the base
model and the feature data a saved model records, and output folders that are never written over silently."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import field
from pathlib import Path

def arg(help: str, default=dataclasses.MISSING, **extra):
    """A dataclass field whose help text becomes the `--help` of the command line option."""
    metadata = {"help": help, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def option_flag(f: dataclasses.Field) -> str:
    """The command-line option of a command's field: `num_processes` -> `--num-processes`."""
    return "--" + f.name.replace("_", "-")


def relaunch_with_torchrun(command: str, options: object, processes: int) -> int:
    """Run `gradiend <command>` again with the same options in `processes` processes (torchrun, one machine)."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "gradiend_hf.cli", command]
    fields = sorted(dataclasses.fields(options), key=lambda f: not f.metadata.get("positional"))  # positionals first
    for f in fields:
        value = getattr(options, f.name)
        flag = option_flag(f)
        if f.name == "num_processes" or value is None or value is False or value == []:
            continue
        if f.metadata.get("positional"):
            argv += [str(v) for v in value] if isinstance(value, list) else [str(value)]
        elif value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return subprocess.call(argv)


def parse_h(text: str | None) -> float | list[float] | None:
    """`"1.0"` -> 1.0, `"0.5,-1"` -> [0.5, -1.0] (one value per feature neuron)."""
    if text is None:
        return None
    from .errors import GradiendConfigError

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise GradiendConfigError(f"--h must be a number (or comma-separated numbers), got {text!r}.") from None
    return values[0] if len(values) == 1 else values


def parse_rank(text: str) -> str | int | float:
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


def load_base(name: str | None, recorded: str | None, what: str, **kwargs):
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


def check_output(folder: str, overwrite: bool, *, remove: bool = False) -> Path:
    """Refuse to write into a non-empty folder unless --overwrite, and then only over gradiend's own outputs (never
    the working directory); the writers replace it atomically, or with `remove` it is emptied first."""
    from ._utils import empty_output_dir

    return empty_output_dir(folder, overwrite=overwrite, what="output", remove=remove)


def report_names(sources: Sequence[str]) -> list[str]:
    """One distinct file-safe name per adapter folder or repo: the shortest tail of its path that tells it from the
    others (`runs/a/adapter`, `runs/b/adapter` -> `a--adapter`, `b--adapter`), never `base`."""
    from .errors import BenchmarkError

    if not sources:
        return []
    parts = [[p for p in Path(source).parts if p not in ("/", ".", "..")] or [source] for source in sources]
    seen = {}
    for source, key in zip(sources, map(tuple, parts)):
        if key in seen:
            raise BenchmarkError(f"--adapter lists {source!r} twice (also as {seen[key]!r}); give each adapter once.")
        seen[key] = source
    for depth in range(1, max(map(len, parts)) + 1):
        names = ["--".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) and "base" not in names:
            return names
    return ["adapter--" + "--".join(p) for p in parts]


def load_base_for(model, path_or_repo: str, base_name: str | None):
    """(base model, tokenizer) for a GRADIEND model, checked to hold every parameter the model spans."""
    base, tokenizer = load_base(base_name, model.config.base_model_name_or_path, f"`{path_or_repo}`")
    model.check_base_model(base)
    return base, tokenizer


def feature_for(config, spec: str | None, seed: int):
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


def parse_grid(values: list[str], option: str) -> list[float] | None:
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


__all__ = ["arg", "check_output", "feature_for", "load_base", "load_base_for", "parse_grid", "parse_h", "parse_rank",
           "report_names"]
