"""LEACE (Belrose et al. 2023) through the `concept-erasure` package: the least-squares concept eraser.

`concept_erasure.LeaceFitter` fits the eraser x ↦ x − L·R·(x − μ); stored as the affine map x ↦ (I − L·R)·x + L·R·μ,
it is applied like every representation adapter. The fit runs in float64 and the map is stored in float32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..adapters import RepresentationAdapter
from ..features import FeatureDataset
from .fitting import FitData, fit_adapter, fit_data


def leace_affine(x: torch.Tensor, z: torch.Tensor, *, method: str = "leace") -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of concept-erasure's eraser for rows `x` and concept labels `z`, as the map x ↦ x·Wᵀ + b."""
    from concept_erasure import LeaceFitter

    eraser = LeaceFitter.fit(x.double(), z.double().reshape(len(z), -1), method=method).eraser
    removed = eraser.proj_left @ eraser.proj_right
    weight = torch.eye(x.shape[1], dtype=torch.float64) - removed
    bias = removed @ eraser.bias if eraser.bias is not None else torch.zeros(x.shape[1], dtype=torch.float64)
    return weight.float(), bias.float()


def fit_leace(model: nn.Module, tokenizer, feature: FeatureDataset, *, data: FitData | None = None,
              method: str = "leace", progress: bool = False, **data_options: Any) -> RepresentationAdapter:
    """A LEACE adapter from `feature`'s counterfactual texts (class as the concept) in `model`'s states.

    Args:
        model, tokenizer, feature: as for `fit_inlp`.
        data: precomputed `fit_data(...)`; computed when None.
        method: concept-erasure's `"leace"` or `"orth"` (orthogonal projection variant).
        data_options: options of `fit_data`.
    """
    if data is None:
        data = fit_data(model, tokenizer, feature, progress=progress, **data_options)

    def solve(fitted: FitData):
        x, y = fitted.classified()
        weight, bias = leace_affine(x, y, method=method)
        return weight, bias, {"concept_erasure_method": method, "concept_dimensions": 1}

    return fit_adapter("leace", solve, model, feature, data,
                       description=f"LEACE: the least-squares linear eraser of the `{feature.name}` classes "
                                   f"(Belrose et al. 2023), fitted with the concept-erasure package.")


__all__ = ["fit_leace", "leace_affine"]
