"""CDA (counterfactual data augmentation; Webster et al. 2020): further pre-training on two-sided swapped text.

The text is the package's own: the feature's training texts with their factual word filled in, plus neutral WikiText
sentences (CC BY-SA 3.0). Every text whose words of the swap list occur is kept and also added swapped ("She told
him" → "He told her"); names are not swapped, as in bias-bench. The result is an ordinary `DeltaAdapter`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..adapters import DeltaAdapter
from ..features import FeatureDataset, neutral_texts
from .counterfactual import two_sided, word_pairs_for
from .pretraining import PretrainingArguments, further_pretrain

NEUTRAL_TEXTS = 1000
"""Neutral sentences mixed into the further pre-training text of CDA and Dropout."""


def pretraining_texts(feature: FeatureDataset, *, neutral: int = NEUTRAL_TEXTS) -> list[str]:
    """The feature's training texts (factual word filled in) followed by `neutral` neutral sentences."""
    return [example.filled(example.factual) for example in feature.train] + neutral_texts(neutral)


def train_cda(model: nn.Module, tokenizer, feature: FeatureDataset, out_dir: str | Path,
              args: PretrainingArguments | None = None, *, word_pairs: list[tuple[str, str]] | None = None,
              texts: list[str] | None = None) -> DeltaAdapter:
    """Further pre-train on two-sided CDA text and return ΔW (cached in `out_dir`; an interrupted run resumes).

    Args:
        model: the base LM (restored bit for bit afterwards).
        tokenizer: its tokenizer.
        feature: gives the text and, for the built-in features, the swap list.
        out_dir: folder of the run.
        args: steps, batch, learning rate, parameters (default: every transformer-block parameter).
        word_pairs: (a, b) words to swap both ways; default `word_pairs_for(feature)`.
        texts: the texts before swapping; default `pretraining_texts(feature)`.
    """
    args = args or PretrainingArguments()
    pairs = word_pairs or list(word_pairs_for(feature.name, feature.classes))
    source = texts if texts is not None else pretraining_texts(feature)
    augmented = two_sided(source, pairs)
    description = (f"CDA baseline: the base further pre-trained for {args.steps} step(s) of {args.batch_size} texts "
                   f"(lr {args.learning_rate}) on {len(source)} texts ({feature.name} feature texts and neutral "
                   f"WikiText) plus their {len(augmented) - len(source)} two-sided counterfactual swaps "
                   f"({len(pairs)} word pairs); ΔW = weights after − before.")
    return further_pretrain(model, tokenizer, augmented, out_dir, args, method="cda", description=description,
                            feature=feature.spec())


def cda_summary(feature: FeatureDataset, *, word_pairs: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """How much of the text the swap list changes (for reports)."""
    source = pretraining_texts(feature)
    augmented = two_sided(source, word_pairs or list(word_pairs_for(feature.name, feature.classes)))
    return {"texts": len(source), "swapped": len(augmented) - len(source)}


__all__ = ["NEUTRAL_TEXTS", "cda_summary", "pretraining_texts", "train_cda"]
