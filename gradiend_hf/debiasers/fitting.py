"""What the projection debiasers are fitted on: pooled final hidden states of counterfactual pairs (and neutral text).

The states are read from `model.base_model`, where representation adapters act, so a projection fitted on a
weight-changed model (a delta adapter applied) sees exactly the states it will later be applied to. States are
computed once per model state (`FitData`) and shared by every method fitted on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..adapters import RepresentationAdapter
from ..adapters.hooks import body_of
from ..features import FeatureDataset, neutral_texts
from .linear_probe import majority_rate, probe_accuracy, split_indices
from .pairs import MIN_PAIRS, CounterfactualPairs, counterfactual_pairs

DEFAULT_MAX_PAIRS = 1000
"""Pairs used by default: enough for a 640-wide model, and two forward passes per pair stay within minutes on CPU."""


@torch.no_grad()
def pooled_states(model: nn.Module, tokenizer, texts: Sequence[str], *, batch_size: int = 16, max_length: int = 128,
                  progress: bool = False, desc: str = "hidden states") -> torch.Tensor:
    """Mean of the body's final hidden states over each text's tokens (attention-masked), float32 (n, hidden)."""
    body = body_of(model)
    device = next(model.parameters()).device
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    pad = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    out = torch.zeros(len(encoded), 0)
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
            batch = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):  # right padding: positions count from 0 in every row
                ids[row, :len(encoded[index])] = torch.tensor(encoded[index])
                mask[row, :len(encoded[index])] = 1
            output = body(input_ids=ids.to(device), attention_mask=mask.to(device))
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            weights = mask.to(device).unsqueeze(-1).to(hidden.dtype)
            pooled = ((hidden * weights).sum(1) / weights.sum(1)).float().cpu()
            if out.shape[1] == 0:
                out = torch.zeros(len(encoded), pooled.shape[1])
            out[torch.tensor(batch)] = pooled
    finally:
        model.train(was_training)
    return out


@dataclass
class FitData:
    """States of the pairs (`first[i]`, `second[i]` for texts[i]) and of neutral sentences, on one model state."""

    pairs: CounterfactualPairs
    first: torch.Tensor
    """States of the texts with `classes[0]`'s word (n, hidden)."""
    second: torch.Tensor
    """States of the texts with `classes[1]`'s word (n, hidden)."""
    neutral: torch.Tensor | None = None
    """States of neutral sentences (no feature words), INLP's third class."""

    def classified(self, *, with_neutral: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows and labels: 0 for classes[0], 1 for classes[1] (2 for neutral when asked and present).

        At most as many neutral rows as pairs are used: a larger neutral class would let a probe reach "chance"
        (the majority rate) by calling everything neutral while the two classes stay separable.
        """
        parts = [self.first, self.second]
        labels = [torch.zeros(len(self.first)), torch.ones(len(self.second))]
        if with_neutral and self.neutral is not None:
            neutral = self.neutral[:len(self.first)]
            parts.append(neutral)
            labels.append(torch.full((len(neutral),), 2.0))
        return torch.cat(parts), torch.cat(labels).long()

    def summary(self) -> dict[str, Any]:
        return {"pairs": len(self.pairs), "pairs_left_out_multi_token": self.pairs.dropped,
                "neutral_texts": 0 if self.neutral is None else len(self.neutral), "pooling": "mean of final states"}


def fit_data(model: nn.Module, tokenizer, feature: FeatureDataset, *, split: str = "train",
             max_pairs: int | None = DEFAULT_MAX_PAIRS, neutral: int = 0, batch_size: int = 16, seed: int = 0,
             progress: bool = False, min_pairs: int = MIN_PAIRS) -> FitData:
    """Pairs of `feature` (single-token words only) and their pooled states; `neutral` neutral sentences too."""
    pairs = counterfactual_pairs(feature, tokenizer, split=split, max_pairs=max_pairs, seed=seed, min_pairs=min_pairs)
    texts = pairs.side(0) + pairs.side(1) + (neutral_texts(neutral) if neutral else [])
    states = pooled_states(model, tokenizer, texts, batch_size=batch_size, progress=progress,
                           desc=f"states of {feature.name} pairs")
    n = len(pairs)
    return FitData(pairs, states[:n], states[n:2 * n], states[2 * n:] if neutral else None)


Solver = Callable[[FitData], tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]]
"""A method's maths: from the data to (W, b, info) of the map x ↦ x·Wᵀ + b."""


def fit_adapter(method: str, solve: Solver, model: nn.Module, feature: FeatureDataset, data: FitData, *,
                description: str) -> RepresentationAdapter:
    """Fit a representation adapter with `solve` on `data` (states of `model`, which the adapter records).

    The fit records the data sizes, the method's settings and the accuracy of a fresh linear probe (trained on 80 %
    of the pair states, scored on the other 20 %) before and after the map, beside the majority rate (chance).
    """
    weight, bias, info = solve(data)
    x, y = data.classified()
    train, dev = split_indices(len(x), seed=0)
    mapped = x @ weight.T + (0 if bias is None else bias)
    fit = {**data.summary(), **info, "probe_chance": round(majority_rate(y[dev]), 4),
           "probe_accuracy_before": round(probe_accuracy(x[train], y[train], x[dev], y[dev]), 4),
           "probe_accuracy_after": round(probe_accuracy(mapped[train], y[train], mapped[dev], y[dev]), 4)}
    return RepresentationAdapter.from_affine(weight, bias, base_model=model, method=method, fit=fit,
                                             feature=feature.spec(), description=description,
                                             removed_rank=info.get("removed_rank"))


def orthonormal_rows(vectors: torch.Tensor, *, tolerance: float = 1e-6) -> torch.Tensor:
    """An orthonormal basis (as rows) of the span of `vectors`' rows, dropping directions below `tolerance`."""
    if vectors.numel() == 0:
        return vectors
    _, singular, vh = torch.linalg.svd(vectors.double(), full_matrices=False)
    keep = singular > tolerance * singular.max().clamp_min(1e-300)
    return vh[keep].float()


def removal_projection(basis: torch.Tensor, hidden_size: int) -> torch.Tensor:
    """I − Bᵀ·B for orthonormal rows B: the orthogonal projection that removes their span."""
    if basis.numel() == 0:
        return torch.eye(hidden_size)
    basis = basis.double()
    return (torch.eye(hidden_size, dtype=torch.float64) - basis.T @ basis).float()


__all__ = [
    "DEFAULT_MAX_PAIRS",
    "FitData",
    "Solver",
    "fit_adapter",
    "fit_data",
    "orthonormal_rows",
    "pooled_states",
    "removal_projection",
]
