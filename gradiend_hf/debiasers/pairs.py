"""Counterfactual sentence pairs from feature data: each class text filled once with each class's word.

"Mary said that [MASK] would come." with factual "she" and counterfactual "he" gives the pair
("Mary said that she would come.", "Mary said that he would come."), ordered by the feature's classes. Only feature
data is used, never benchmark data, so that the benchmarks stay held out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import FeatureDataError, TargetTokenizationError
from ..features import FeatureDataset, FeatureExample

MIN_PAIRS = 8
"""Fewer pairs than this cannot fit (or check) a projection; a clear error says so."""


@dataclass(frozen=True)
class CounterfactualPairs:
    """Aligned texts: `texts[i] = (text with classes[0]'s word, text with classes[1]'s word)`."""

    feature: str
    classes: tuple[str, str]
    texts: tuple[tuple[str, str], ...]
    dropped: int = 0
    """Pairs left out because a class word is not one token for the tokenizer."""

    def __len__(self) -> int:
        return len(self.texts)

    def side(self, index: int) -> list[str]:
        """The texts of class `classes[index]`, in pair order."""
        return [pair[index] for pair in self.texts]


def _single_token(tokenizer, example: FeatureExample, word: str) -> bool:
    piece = " " + word if example.prefix.endswith(" ") else word
    return len(tokenizer(piece, add_special_tokens=False)["input_ids"]) == 1


def counterfactual_pairs(feature: FeatureDataset, tokenizer=None, *, split: str = "train",
                         max_pairs: int | None = None, seed: int = 0, min_pairs: int = MIN_PAIRS,
                         purpose: str = "fit a projection") -> CounterfactualPairs:
    """The counterfactual pairs of one split (duplicates dropped), optionally a seeded sample of `max_pairs`.

    With a tokenizer, pairs whose words are not single tokens are left out (the two texts should differ in exactly
    one token, so that their difference is the concept and nothing else).

    Raises:
        TargetTokenizationError: no pair has single-token words.
        FeatureDataError: fewer than `min_pairs` pairs remain.
    """
    seen: dict[tuple[str, str], None] = {}
    dropped = 0
    long_word = None
    for example in feature.split(split):
        other = feature.classes[1 - feature.classes.index(example.label)]
        words = {example.label: example.factual, other: example.counterfactual}
        if tokenizer is not None:
            bad = [w for w in words.values() if not _single_token(tokenizer, example, w)]
            if bad:
                dropped += 1
                long_word = long_word or bad[0]
                continue
        seen[(example.filled(words[feature.classes[0]]), example.filled(words[feature.classes[1]]))] = None
    texts = list(seen)
    if not texts and dropped:
        raise TargetTokenizationError(
            f"No example of feature {feature.name!r} ({split} split) has single-token class words for this tokenizer "
            f"(e.g. {long_word!r} is several tokens); the debiasers compare texts that differ in one token. Use words "
            f"that are one token each, or the model's own tokenizer."
        )
    if len(texts) < min_pairs:
        raise FeatureDataError(
            f"Expected at least {min_pairs} counterfactual pairs to {purpose}, found {len(texts)} in the {split} split "
            f"of feature {feature.name!r} ({dropped} left out for multi-token words); add examples to that split."
        )
    if max_pairs is not None and len(texts) > max_pairs:
        keep = sorted(random.Random(seed).sample(range(len(texts)), max_pairs))
        texts = [texts[i] for i in keep]
    return CounterfactualPairs(feature.name, feature.classes, tuple(texts), dropped)


__all__ = ["MIN_PAIRS", "CounterfactualPairs", "counterfactual_pairs"]
