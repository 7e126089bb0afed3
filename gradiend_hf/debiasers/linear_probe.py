"""A linear probe (logistic regression, full-batch L-BFGS): what INLP removes and how every projection is judged.

Written in torch so that the library needs no scikit-learn. Inputs are centred and scaled by one global factor
(not per dimension), so the probe's directions live in the representation's own Euclidean geometry: the direction a
projection must remove is the probe's weight row itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LinearProbe:
    """Class scores x·Wᵀ + b: one row for two classes (sigmoid), one row per class otherwise (softmax)."""

    weight: torch.Tensor
    bias: torch.Tensor
    num_classes: int

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        scores = x.float() @ self.weight.T + self.bias
        return (scores[:, 0] > 0).long() if self.num_classes == 2 else scores.argmax(dim=-1)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        return float((self.predict(x) == y).float().mean())


def train_linear_probe(x: torch.Tensor, y: torch.Tensor, *, l2: float = 1e-4, max_iter: int = 100) -> LinearProbe:
    """Fit a logistic regression to labels `y` (0 … C−1) of rows `x`; returns its weights in `x`'s own coordinates.

    The weights start at zero (the problem is convex, so the result is deterministic); with softmax rows the loss
    gradient sums to zero over the classes, so the rows keep summing to zero and span C − 1 directions, not C.
    """
    x = x.detach().float()
    y = y.detach().long()
    num_classes = max(2, int(y.max()) + 1)
    mean = x.mean(dim=0)
    scale = (x - mean).pow(2).sum(dim=1).mean().sqrt().clamp_min(1e-12) / x.shape[1] ** 0.5
    z = (x - mean) / scale
    rows = 1 if num_classes == 2 else num_classes
    weight = torch.zeros(rows, x.shape[1], requires_grad=True)
    bias = torch.zeros(rows, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        scores = z @ weight.T + bias
        if rows == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(scores[:, 0], y.float())
        else:
            loss = torch.nn.functional.cross_entropy(scores, y)
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    weight_x = weight.detach() / scale
    return LinearProbe(weight_x, bias.detach() - mean @ weight_x.T, num_classes)


def majority_rate(y: torch.Tensor) -> float:
    """Accuracy of always guessing the most frequent class: what "chance" means for a probe."""
    return float(torch.bincount(y.long()).max()) / len(y)


def probe_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_eval: torch.Tensor | None = None,
                   y_eval: torch.Tensor | None = None, **options) -> float:
    """Accuracy of a fresh probe trained on (x_train, y_train), on (x_eval, y_eval) or on the training data."""
    probe = train_linear_probe(x_train, y_train, **options)
    if x_eval is None:
        return probe.accuracy(x_train, y_train)
    return probe.accuracy(x_eval, y_eval)


def split_indices(n: int, *, dev_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random (train, dev) split of n rows."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = max(1, round(n * dev_fraction))
    return order[cut:], order[:cut]


__all__ = ["LinearProbe", "majority_rate", "probe_accuracy", "split_indices", "train_linear_probe"]
