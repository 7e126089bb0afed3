"""What an adapter needs to know about a base model: its parameters by name (tied aliases too) and their modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import AdapterCompatibilityError


def named_parameters_with_aliases(base_model: nn.Module) -> dict[str, nn.Parameter]:
    """Every name under which a parameter is reachable, tied aliases included (`lm_head.weight` and
    `model.embed_tokens.weight` both resolve to the one shared tensor)."""
    return dict(base_model.named_parameters(remove_duplicate=False))


def resolve_parameters(base_model: nn.Module, names: Sequence[str],
                       shapes: Sequence[Sequence[int]] | None = None, *, what: str = "This adapter",
                       recorded_base: str | None = None) -> dict[str, nn.Parameter]:
    """The base parameters called `names`, checked against `shapes`; every mismatch is listed in one error.

    Raises:
        AdapterCompatibilityError: some names are missing from the base model or have another shape.
    """
    available = named_parameters_with_aliases(base_model)
    missing = [n for n in names if n not in available]
    wrong = []
    if shapes is not None:
        wrong = [(n, list(s), list(available[n].shape)) for n, s in zip(names, shapes)
                 if n in available and list(available[n].shape) != list(s)]
    if missing or wrong:
        lines = [f"  missing: `{n}`" for n in missing[:20]]
        if len(missing) > 20:
            lines.append(f"  ... and {len(missing) - 20} more missing")
        lines += [f"  shape of `{n}`: expected {s}, found {f}" for n, s, f in wrong[:20]]
        if len(wrong) > 20:
            lines.append(f"  ... and {len(wrong) - 20} more with another shape")
        hint = f" It was made for `{recorded_base}`." if recorded_base else ""
        raise AdapterCompatibilityError(
            f"{what} does not fit {type(base_model).__name__}: {len(missing)} parameter(s) missing and "
            f"{len(wrong)} with another shape.{hint} Load a base model with the same architecture and size.\n"
            + "\n".join(lines)
        )
    return {n: available[n] for n in names}


def describe_modules(base_model: nn.Module, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For each parameter name, the module that owns it: `{"module": path, "type": class name, "bias": bool}`.

    PEFT exports need this: a Linear (or GPT-2 Conv1D) weight becomes LoRA factors, its bias a LoRA bias, and any
    other parameter the whole module in `modules_to_save`.

    A parameter reachable under several names (an embedding tied to the LM head) also lists the other names under
    `"tied"`, so that an export made without the base model at hand knows it cannot reproduce the tie alone.
    """
    modules = dict(base_model.named_modules(remove_duplicate=False))
    aliases = tied_aliases(base_model)
    out = {}
    for name in names:
        path, _, leaf = name.rpartition(".")
        module = modules.get(path)
        if module is None:
            raise AdapterCompatibilityError(f"No module `{path}` owns parameter `{name}` in {type(base_model).__name__}.")
        out[name] = {"module": path, "type": type(module).__name__, "param": leaf,
                     "bias": isinstance(getattr(module, "bias", None), torch.Tensor)}
        if aliases.get(name):
            out[name]["tied"] = aliases[name]
    return out


def tied_aliases(base_model: nn.Module) -> dict[str, list[str]]:
    """For each parameter reachable under several names, the other names of the same tensor."""
    by_tensor: dict[int, list[str]] = {}
    for name, param in base_model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(param), []).append(name)
    return {name: [other for other in group if other != name]
            for group in by_tensor.values() if len(group) > 1 for name in group}


__all__ = [
    "describe_modules",
    "named_parameters_with_aliases",
    "resolve_parameters",
    "tied_aliases",
]
