"""Scoring a model on the feature's own slot texts: the two classes' target words, and relative bias indices.

For a feature text t, p_pos(t) and p_neg(t) are the probabilities the model gives at the slot to the target words
of the positive and negative class (for a female text "she" is the factual word and the positive one). The
indices use each class's *share* of the pair and measure the pair's mass relative to the base model, so the base
scores its own balance and numbers compare across models and features (`FEATURE_FORMULAS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import SearchError
from ..gradients import GradientEngine, drop_multi_token_examples
from .transfer import BALANCED

FEATURE_FORMULAS: dict[str, str] = {
    "p": "p_c(t): probability, at the slot of feature text t, of the target word of class c (the factual word if t "
         "belongs to c, else the counterfactual word); p_pos, p_neg for the positive and negative class",
    "mass": "m(t) = p_pos(t) + p_neg(t); m0(t) the same in the base model; keep(t) = min(1, m(t) / m0(t))",
    "balanced_index": "mean over texts t of (1 - |p_pos(t) - p_neg(t)| / m(t)) * keep(t)",
    "class_index": "for class c: mean over the texts t of both classes of p_c(t) / m(t) * keep(t)",
    "bias": "mean over texts t of p_factual(t) - p_counterfactual(t)",
}
"""The relative indices on feature texts (README quotes them)."""


def relative_indices(p: np.ndarray, base_p: np.ndarray | None, classes: Sequence[str]) -> dict[str, float]:
    """The indices of `FEATURE_FORMULAS` from per-text masses `p` (texts × 2: positive, negative class)."""
    tiny = np.finfo(np.float64).tiny
    p = np.asarray(p, dtype=np.float64)
    mass = np.maximum(p[:, 0] + p[:, 1], tiny)
    base_mass = mass if base_p is None else np.maximum(base_p[:, 0] + base_p[:, 1], tiny)
    keep = np.minimum(1.0, mass / base_mass)
    share = p[:, 0] / mass
    balanced = (1.0 - np.abs(p[:, 0] - p[:, 1]) / mass) * keep
    return {BALANCED: float(balanced.mean()), classes[0]: float((share * keep).mean()),
            classes[1]: float(((1.0 - share) * keep).mean())}


class FeatureScorer:
    """Scores the feature's slot texts on the model as it is now (tokenised once, batched by length)."""

    def __init__(self, engine: GradientEngine, examples: Sequence[Any], classes: Sequence[str], *,
                 batch_size: int = 16):
        self.engine = engine
        self.examples = list(examples)
        self.classes = list(classes)
        self.groups = [e.label for e in self.examples]
        self.is_positive = np.array([e.label == classes[0] for e in self.examples])
        full = engine.slots(self.examples)
        lengths = full.attention_mask.sum(1)
        order = sorted(range(len(self.examples)), key=lambda i: int(lengths[i]))
        self.order = torch.tensor(order)
        self.batches = [full.rows(self.order[s: s + batch_size], int(lengths[self.order[s: s + batch_size]].max()))
                        .to(engine.device) for s in range(0, len(order), batch_size)]

    def masses(self) -> np.ndarray:
        """Per text, in input order: p_pos and p_neg (texts × 2, float64)."""
        factual, counterfactual = [], []
        for batch in self.batches:
            lp_f, lp_c = self.engine.target_logprobs(batch)
            factual.append(lp_f.cpu())
            counterfactual.append(lp_c.cpu())
        p_f = np.empty(len(self.order))
        p_c = np.empty(len(self.order))
        p_f[self.order.numpy()] = torch.cat(factual).double().exp().numpy()
        p_c[self.order.numpy()] = torch.cat(counterfactual).double().exp().numpy()
        return np.stack([np.where(self.is_positive, p_f, p_c), np.where(self.is_positive, p_c, p_f)], axis=1)

    def indices(self, p: np.ndarray, base_p: np.ndarray | None) -> dict[str, float]:
        return relative_indices(p, base_p, self.classes)

    def bias(self, p: np.ndarray) -> float:
        """Mean p(factual) − p(counterfactual)."""
        return float(np.where(self.is_positive, p[:, 0] - p[:, 1], p[:, 1] - p[:, 0]).mean())

    def association(self, p: np.ndarray) -> None:
        return None

    def records(self) -> list[dict[str, str]]:
        return [{"text": e.text, "factual": e.factual, "counterfactual": e.counterfactual, "label": e.label}
                for e in self.examples]


def sample_feature_examples(dataset: Any, split: str, classes: Sequence[str], engine: GradientEngine,
                            max_texts: int, seed: int) -> list[Any]:
    """A balanced, seeded sample of the split's examples whose target words are single tokens (dataset order)."""
    examples = dataset.split(split)
    kept, _ = drop_multi_token_examples(list(examples), engine.slots)
    pools = {c: [e for e in kept if e.label == c] for c in classes}
    empty = [c for c, pool in pools.items() if not pool]
    if empty:
        raise SearchError(
            f"The {split} split of {getattr(dataset, 'name', 'the feature')!r} has no usable example of class "
            f"{empty[0]!r} ({len(examples)} examples, {len(kept)} with single-token targets). Use another split "
            "or a feature whose target words are single tokens for this tokenizer."
        )
    per_class = min(max_texts // 2, *(len(pool) for pool in pools.values()))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes:
        picks = torch.randperm(len(pools[c]), generator=generator)[:per_class].tolist()
        chosen.extend(pools[c][i] for i in sorted(picks))
    return chosen


__all__ = ["FEATURE_FORMULAS", "FeatureScorer", "relative_indices", "sample_feature_examples"]
