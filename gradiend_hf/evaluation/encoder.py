"""How well the encoder separates the two classes: Pearson r of h against the class (+1 / −1)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..gradients import GradientEngine


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two 1-d tensors (0.0 when either is constant)."""
    x, y = x.detach().double().flatten(), y.detach().double().flatten()
    x, y = x - x.mean(), y - y.mean()
    denominator = x.norm() * y.norm()
    return float((x @ y) / denominator) if denominator > 0 else 0.0


@dataclass
class EncoderCorrelation:
    """Feature values of labelled texts and how they line up with the classes."""

    pearson_r: float
    """Correlation of h with +1 (positive class) / −1 (negative class)."""
    mean_h: dict[str, float]
    """Mean feature value per class."""
    h: torch.Tensor
    """The feature value of every text, in input order."""
    labels: torch.Tensor
    """+1 / −1 per text."""


def encoder_correlation(model: Any, engine: GradientEngine, examples: Sequence[Any], *, batch_size: int = 16,
                        progress: bool = False) -> EncoderCorrelation:
    """Encode labelled slot examples with a GRADIEND model and correlate h (first neuron) with their class.

    Args:
        model: a `GradiendModel`; its `positive_class` counts as +1, the other class as −1.
        engine: a `GradientEngine` over the model's base model and parameters.
        examples: `FeatureExample`s of the model's two classes.
        batch_size: texts encoded at once.
        progress: show a tqdm bar.
    """
    positive, negative = model.config.positive_class, model.config.negative_class
    unknown = sorted({e.label for e in examples} - {positive, negative})
    if unknown:
        raise ValueError(f"Examples have classes {unknown} that the model does not know ({positive}, {negative}).")
    h = model.encode_examples(engine, examples, batch_size=batch_size, progress=progress)[:, 0]
    labels = torch.tensor([1.0 if e.label == positive else -1.0 for e in examples])
    means = {c: float(h[labels == v].mean()) if bool((labels == v).any()) else float("nan")
             for c, v in ((positive, 1.0), (negative, -1.0))}
    return EncoderCorrelation(pearson(h, labels), means, h, labels)


__all__ = ["EncoderCorrelation", "encoder_correlation", "pearson"]
