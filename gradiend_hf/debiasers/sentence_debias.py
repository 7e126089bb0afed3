"""SentenceDebias (Liang et al. 2020): remove the bias subspace found by PCA of counterfactual pair differences.

Each pair (a, b) is centred on its own mean, giving (a − b)/2 and (b − a)/2; the top `rank` principal components of
all of them span the bias subspace V, and the map subtracts each state's component in it: x ↦ x − V·Vᵀ·x.
bias-bench uses one component for gender.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..adapters import RepresentationAdapter
from ..errors import FeatureDataError
from ..features import FeatureDataset
from .fitting import FitData, fit_adapter, fit_data, removal_projection

DEFAULT_RANK = 1


def bias_subspace(first: torch.Tensor, second: torch.Tensor, rank: int = DEFAULT_RANK) -> torch.Tensor:
    """Orthonormal rows spanning the top-`rank` principal components of the pair-centred states."""
    if not 1 <= rank <= min(first.shape[1], 2 * len(first)):
        raise FeatureDataError(f"SentenceDebias's rank must lie in [1, {min(first.shape[1], 2 * len(first))}] for "
                               f"{len(first)} pairs of width {first.shape[1]}, got {rank}.")
    half = (first.double() - second.double()) / 2
    centred = torch.cat([half, -half])  # the mean of each pair's members is subtracted; the whole set has mean 0
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return vh[:rank].float()


def fit_sentence_debias(model: nn.Module, tokenizer, feature: FeatureDataset, *, data: FitData | None = None,
                        rank: int = DEFAULT_RANK, progress: bool = False,
                        **data_options: Any) -> RepresentationAdapter:
    """A SentenceDebias adapter from `feature`'s counterfactual pairs in `model`'s states.

    Args:
        model, tokenizer, feature: as for `fit_inlp`.
        data: precomputed `fit_data(...)`; computed when None.
        rank: dimensions of the bias subspace.
        data_options: options of `fit_data`.
    """
    if data is None:
        data = fit_data(model, tokenizer, feature, progress=progress, **data_options)

    def solve(fitted: FitData):
        basis = bias_subspace(fitted.first, fitted.second, rank)
        return removal_projection(basis, basis.shape[1]), None, {"removed_rank": rank}

    return fit_adapter("sentence_debias", solve, model, feature, data,
                       description=f"SentenceDebias: removes the `{feature.name}` bias subspace (top {rank} principal "
                                   f"component(s) of counterfactual pair differences; Liang et al. 2020).")


__all__ = ["DEFAULT_RANK", "bias_subspace", "fit_sentence_debias"]
