"""Combining delta adapters (gender + race, ...) into one, with PEFT's merge utilities (sum, TIES, DARE)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..errors import AdapterCompatibilityError
from .delta_adapter import DeltaAdapter
from .fingerprints import check_fingerprint

MergeMethod = Literal["sum", "ties", "dare", "dare_linear", "dare_ties", "magnitude_prune"]
MERGE_METHODS: tuple[str, ...] = ("sum", "ties", "dare", "dare_linear", "dare_ties", "magnitude_prune")


def merge_adapters(adapters: Sequence[DeltaAdapter], weights: Sequence[float] | None = None, *,
                   method: MergeMethod = "sum", density: float = 0.5,
                   majority_sign_method: Literal["total", "frequency"] = "total", seed: int = 0,
                   base_model: nn.Module | None = None, description: str | None = None) -> DeltaAdapter:
    """Combine several delta adapters into one fixed adapter, parameter by parameter.

    The per-parameter maths is PEFT's (`peft.utils.merge_utils`), not re-implemented here:

    - `"sum"`: Σ wᵢ·ΔWᵢ (`task_arithmetic`);
    - `"ties"`: keep the `density` largest entries of each ΔWᵢ, elect a sign per entry, sum the agreeing ones;
    - `"dare"` / `"dare_linear"`: drop entries at random with probability 1 − `density`, rescale, weighted sum;
      `"dare_ties"`: the same, with TIES's sign election; `"magnitude_prune"`: top-`density` entries, weighted sum.

    A parameter that only some adapters change counts as zero in the others. Dial adapters are decoded at their
    own `h` and `alpha` first. DARE's random drops come from a generator seeded with `seed`.

    Args:
        adapters: two or more (one is allowed) delta adapters for the same base architecture.
        weights: one weight per adapter (default: all 1).
        method: see above.
        density: share of entries kept by TIES / DARE / magnitude pruning, in (0, 1].
        majority_sign_method: TIES's sign election (`"total"` or `"frequency"`).
        seed: seed of DARE's random drops.
        base_model: the base the merge is for. Each adapter's fingerprint is checked against it (a warning when it
            differs) and the merged adapter records the fingerprint of all its parameters. Without it, the merged
            adapter keeps the sources' fingerprint only when they all cover the same parameters.
        description: one line for the merged adapter's card.

    Raises:
        AdapterCompatibilityError: no adapters, a weight count that differs, a parameter with different shapes, or
            an unknown method or density.
    """
    from peft.utils import merge_utils

    adapters = list(adapters)
    if not adapters:
        raise AdapterCompatibilityError("merge_adapters needs at least one adapter, got none.")
    weights = [1.0] * len(adapters) if weights is None else [float(w) for w in weights]
    if len(weights) != len(adapters):
        raise AdapterCompatibilityError(f"Got {len(weights)} weights for {len(adapters)} adapters; give one weight "
                                        f"per adapter.")
    if method not in MERGE_METHODS:
        raise AdapterCompatibilityError(f"Unknown merge method {method!r}; use one of {list(MERGE_METHODS)}.")
    if method != "sum" and not 0.0 < density <= 1.0:
        raise AdapterCompatibilityError(f"`density` must be in (0, 1], got {density}.")

    shapes: dict[str, list[int]] = {}
    for adapter in adapters:
        for name, shape in zip(adapter.config.param_names, adapter.config.param_shapes):
            if name in shapes and shapes[name] != shape:
                raise AdapterCompatibilityError(
                    f"The adapters disagree on the shape of `{name}` ({shapes[name]} vs {shape}): they were made "
                    f"for different base models and cannot be merged."
                )
            shapes.setdefault(name, shape)
    bases = {a.config.base_model_name_or_path for a in adapters if a.config.base_model_name_or_path}
    # A fingerprint hashes the weights of the adapter's own parameters: compare adapters over the same ones only.
    same_params = len({tuple(a.param_names) for a in adapters}) == 1
    prints = {a.config.base_model_fingerprint for a in adapters if a.config.base_model_fingerprint}
    if base_model is not None:
        for i, adapter in enumerate(adapters):
            check_fingerprint(base_model, adapter.param_names, adapter.config.base_model_fingerprint,
                              what=f"Adapter {adapter.name_or_path or f'#{i}'}",
                              recorded_base=adapter.config.base_model_name_or_path)
    elif len(bases) > 1 or (same_params and len(prints) > 1):
        found = ", ".join(f"{a.config.base_model_name_or_path or 'unnamed base'} "
                          f"(fingerprint {a.config.base_model_fingerprint})" for a in adapters)
        warnings.warn(f"Merging adapters made for different base weights: {found}. The merged update is applied to "
                      f"whichever base you choose; check that they share one base model.", stacklevel=2)

    deltas = [adapter.delta() for adapter in adapters]
    weight_tensor = torch.tensor(weights, dtype=torch.float32)
    merged = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, shape in shapes.items():
            stack = [d[name].float() if name in d else torch.zeros(shape) for d in deltas]
            merged[name] = _merge_one(merge_utils, stack, weight_tensor, method, density, majority_sign_method)

    first = adapters[0].config
    modules = {}
    for adapter in adapters:
        modules.update(adapter.config.modules or {})
    sources = [{"adapter": a.name_or_path or f"#{i}", "weight": w, "h": a.config.h, "alpha": a.config.alpha,
                "feature": (a.config.feature or {}).get("name")} for i, (a, w) in enumerate(zip(adapters, weights))]
    return DeltaAdapter.from_deltas(
        merged,
        base_model=base_model,
        base_model_name_or_path=first.base_model_name_or_path if len(bases) <= 1 else None,
        base_model_revision=first.base_model_revision if len(bases) <= 1 else None,
        base_model_fingerprint=first.base_model_fingerprint if same_params and len(prints) <= 1 else None,
        modules=modules or None,
        merged_from=[{"method": method, "density": density if method != "sum" else None, "seed": seed,
                      "sources": sources}],
        description=description or f"{method} merge of {len(adapters)} delta adapters",
    )


def _merge_one(merge_utils, stack: list[torch.Tensor], weights: torch.Tensor, method: str, density: float,
               majority_sign_method: str) -> torch.Tensor:
    if method == "sum":
        return merge_utils.task_arithmetic(stack, weights)
    if method == "ties":
        return merge_utils.ties(stack, weights, density, majority_sign_method)
    if method in ("dare", "dare_linear"):
        return merge_utils.dare_linear(stack, weights, density)
    if method == "dare_ties":
        return merge_utils.dare_ties(stack, weights, density, majority_sign_method)
    return merge_utils.magnitude_prune(stack, weights, density)


__all__ = ["MERGE_METHODS", "MergeMethod", "merge_adapters"]
