"""INLP (Ravfogel et al. 2020, "Null It Out"): iteratively project out the directions linear probes use.

Each round trains a linear probe for the concept on the projected states (80 % of them) and checks it on the other
20 %; its weight rows join the removed directions and the states are projected onto the nullspace of everything
removed so far: P = I − B·Bᵀ for an orthonormal basis B. The loop stops once `patience` rounds in a row were within
`tolerance` of chance (one lucky held-out split does not end it; small data make such luck common). As in the paper
and bias-bench, neutral sentences form a third class by default, so the gendered sentences are also not told apart
from neutral ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..adapters import RepresentationAdapter
from ..features import FeatureDataset
from .fitting import FitData, fit_adapter, fit_data, orthonormal_rows, removal_projection
from .linear_probe import majority_rate, split_indices, train_linear_probe

DEFAULT_ITERATIONS = 80
"""At most this many probes (bias-bench's gender setting); the loop stops earlier at chance."""

NEUTRAL_TEXTS = 500
"""Neutral sentences (shipped WikiText, no feature words) in INLP's third class."""


def inlp_projection(x: torch.Tensor, y: torch.Tensor, *, iterations: int = DEFAULT_ITERATIONS,
                    tolerance: float = 0.01, patience: int = 2, dev_fraction: float = 0.2, seed: int = 0,
                    progress: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """The INLP projection for rows `x` with labels `y` (0 … C−1), and what each round's probe scored.

    Returns:
        (P, info): the symmetric projection P (hidden × hidden), and `{"removed_rank", "iterations",
        "dev_accuracies", "chance"}`; the last `patience` accuracies are the ones that stopped the loop.
    """
    x = x.detach().float()
    train, dev = split_indices(len(x), dev_fraction=dev_fraction, seed=seed)
    chance = majority_rate(y[dev])
    basis = torch.zeros(0, x.shape[1])
    projection = torch.eye(x.shape[1])
    accuracies = []
    for _ in tqdm(range(iterations), desc="INLP", disable=not progress, leave=False):
        projected = x @ projection
        probe = train_linear_probe(projected[train], y[train])
        accuracies.append(round(probe.accuracy(projected[dev], y[dev]), 4))
        # the probe's rows within the space left (a softmax probe's rows sum to zero: C − 1 directions)
        directions = orthonormal_rows(probe.weight @ projection, tolerance=1e-4)
        basis = orthonormal_rows(torch.cat([basis, directions]))
        projection = removal_projection(basis, x.shape[1])
        if len(accuracies) >= patience and all(a <= chance + tolerance for a in accuracies[-patience:]):
            break
    return projection, {"removed_rank": int(basis.shape[0]), "iterations": len(accuracies),
                        "dev_accuracies": accuracies, "chance": round(chance, 4), "tolerance": tolerance,
                        "patience": patience}


def fit_inlp(model: nn.Module, tokenizer, feature: FeatureDataset, *, data: FitData | None = None,
             iterations: int = DEFAULT_ITERATIONS, tolerance: float = 0.01, with_neutral: bool = True,
             progress: bool = False, **data_options: Any) -> RepresentationAdapter:
    """An INLP adapter fitted on `feature`'s counterfactual pairs (plus neutral sentences) in `model`'s states.

    Args:
        model: the LM (with any delta adapter applied that the projection should belong with).
        tokenizer: its tokenizer.
        feature: the feature data (train split).
        data: precomputed `fit_data(...)` to share between methods; computed when None (with `NEUTRAL_TEXTS`
            neutral sentences when `with_neutral`).
        iterations: most probes; tolerance: accuracy above chance that still counts as chance.
        with_neutral: neutral sentences as a third class.
        data_options: options of `fit_data` (split, max_pairs, batch_size, seed, progress).
    """
    if data is None:
        data = fit_data(model, tokenizer, feature, neutral=NEUTRAL_TEXTS if with_neutral else 0, progress=progress,
                        **data_options)

    def solve(fitted: FitData):
        x, y = fitted.classified(with_neutral=with_neutral)
        projection, info = inlp_projection(x, y, iterations=iterations, tolerance=tolerance, progress=progress)
        return projection, None, {**info, "with_neutral": with_neutral and fitted.neutral is not None}

    return fit_adapter("inlp", solve, model, feature, data,
                       description=f"INLP: removes the directions linear probes use to tell the `{feature.name}` "
                                   f"classes apart (Ravfogel et al. 2020).")


__all__ = ["DEFAULT_ITERATIONS", "NEUTRAL_TEXTS", "fit_inlp", "inlp_projection"]
