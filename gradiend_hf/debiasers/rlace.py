"""R-LACE (Ravfogel et al. 2022, "Linear Adversarial Concept Erasure"): a rank-k projection found by a minimax game.

The eraser is P = I − A with A in the Fantope F_k = {A : 0 ⪯ A ⪯ I, tr A = k} (the convex hull of rank-k orthogonal
projections). A linear classifier minimises its loss on the projected states while A ascends the same loss and is
projected back onto F_k after every step. Every `eval_every` steps the relaxed A is rounded to the projection onto
its top-k eigenvectors, a fresh probe is trained on the projected states, and the rounding with the lowest held-out
probe accuracy is kept. No maintained package implements it, hence this module; the tests check it on a problem
whose optimum is known (isotropic classes differing along one direction: the optimum removes that direction).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..adapters import RepresentationAdapter
from ..errors import FeatureDataError
from ..features import FeatureDataset
from .fitting import FitData, fit_adapter, fit_data, removal_projection
from .linear_probe import majority_rate, split_indices, train_linear_probe


def fantope_projection(matrix: torch.Tensor, rank: int, *, steps: int = 60) -> torch.Tensor:
    """The nearest point (Frobenius norm) of F_k to a symmetric matrix: shift and clip its eigenvalues to [0, 1] so
    that they sum to `rank` (the shift found by bisection; Vu et al. 2013)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    low, high = values.min() - 1, values.max()
    for _ in range(steps):  # Σ clip(λ − θ, 0, 1) falls from d (θ = min − 1) to 0 (θ = max)
        middle = (low + high) / 2
        if (values - middle).clamp(0, 1).sum() > rank:
            low = middle
        else:
            high = middle
    return (vectors * (values - high).clamp(0, 1)) @ vectors.T


def _rounded(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """Orthonormal rows spanning the top-`rank` eigenvectors of a Fantope point."""
    _, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return vectors[:, -rank:].T.contiguous()


def rlace_projection(x: torch.Tensor, y: torch.Tensor, *, rank: int = 1, iterations: int = 600,
                     batch_size: int = 256, lr_classifier: float = 0.05, lr_projection: float = 0.05,
                     eval_every: int = 50, tolerance: float = 0.01, seed: int = 0,
                     progress: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """The R-LACE rank-`rank` projection for rows `x` with labels `y` (0 … C−1).

    Returns:
        (P, info): P = I − U·Uᵀ (hidden × hidden) and `{"removed_rank", "iterations", "dev_accuracy", "chance"}`.
    """
    if not 1 <= rank < x.shape[1]:
        raise FeatureDataError(f"R-LACE's rank must lie in [1, {x.shape[1] - 1}], got {rank}.")
    x = x.detach().float()
    y = y.detach().long()
    z = (x - x.mean(0)) / ((x - x.mean(0)).pow(2).sum(1).mean().sqrt().clamp_min(1e-12) / x.shape[1] ** 0.5)
    train, dev = split_indices(len(z), seed=seed)
    chance = majority_rate(y[dev])
    generator = torch.Generator().manual_seed(seed)
    num_classes = max(2, int(y.max()) + 1)
    classifier = nn.Linear(z.shape[1], 1 if num_classes == 2 else num_classes)
    with torch.no_grad():
        classifier.weight.normal_(0, 0.01, generator=generator)
        classifier.bias.zero_()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr_classifier)
    eye = torch.eye(z.shape[1])
    start = torch.randn(z.shape[1], z.shape[1], generator=generator)
    relaxed = fantope_projection(start @ start.T / z.shape[1], rank)

    def loss_of(rows: torch.Tensor, labels: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
        scores = classifier(rows @ projection)
        if num_classes == 2:
            return nn.functional.binary_cross_entropy_with_logits(scores[:, 0], labels.float())
        return nn.functional.cross_entropy(scores, labels)

    best = (float("inf"), _rounded(relaxed, rank), 0)
    done = 0
    with torch.enable_grad():
        for step in tqdm(range(1, iterations + 1), desc="R-LACE", disable=not progress, leave=False):
            batch = train[torch.randint(len(train), (min(batch_size, len(train)),), generator=generator)]
            optimizer.zero_grad()
            loss_of(z[batch], y[batch], eye - relaxed).backward()  # the classifier descends
            optimizer.step()
            variable = relaxed.clone().requires_grad_()
            (gradient,) = torch.autograd.grad(loss_of(z[batch], y[batch], eye - variable), variable)
            relaxed = fantope_projection(relaxed + lr_projection * gradient, rank)  # the eraser ascends
            done = step
            if step % eval_every == 0 or step == iterations:
                basis = _rounded(relaxed, rank)
                projected = z @ removal_projection(basis, z.shape[1])
                accuracy = train_linear_probe(projected[train], y[train]).accuracy(projected[dev], y[dev])
                if accuracy <= best[0]:
                    best = (accuracy, basis, step)
                if accuracy <= chance + tolerance:
                    break
    accuracy, basis, step = best
    return removal_projection(basis, x.shape[1]), {
        "removed_rank": rank, "iterations": done, "chosen_step": step, "dev_accuracy": round(accuracy, 4),
        "chance": round(chance, 4), "lr_classifier": lr_classifier, "lr_projection": lr_projection}


def fit_rlace(model: nn.Module, tokenizer, feature: FeatureDataset, *, data: FitData | None = None, rank: int = 1,
              iterations: int = 600, progress: bool = False, **data_options: Any) -> RepresentationAdapter:
    """An R-LACE adapter from `feature`'s counterfactual texts (class as the concept) in `model`'s states.

    Args:
        model, tokenizer, feature: as for `fit_inlp`.
        data: precomputed `fit_data(...)`; computed when None.
        rank: directions removed (1 for a two-class concept, as in the paper's gender experiments).
        iterations: most game steps (the loop stops early once a probe is at chance).
        data_options: options of `fit_data`.
    """
    if data is None:
        data = fit_data(model, tokenizer, feature, progress=progress, **data_options)

    def solve(fitted: FitData):
        x, y = fitted.classified()
        projection, info = rlace_projection(x, y, rank=rank, iterations=iterations, progress=progress)
        return projection, None, info

    return fit_adapter("rlace", solve, model, feature, data,
                       description=f"R-LACE: removes the rank-{rank} subspace an adversarial minimax game finds for "
                                   f"the `{feature.name}` classes (Ravfogel et al. 2022).")


__all__ = ["fantope_projection", "fit_rlace", "rlace_projection"]
