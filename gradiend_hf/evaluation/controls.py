"""Control examples for encoder evaluation: slots on ordinary (non-feature) words, which should encode to h ≈ 0.

A GRADIEND encoder should answer +1 / −1 only where the target is a feature word. Two control groups test that:

- **neutral**: texts without any feature word, with the slot on an ordinary word of the text;
- **non-feature slot**: the class texts themselves (the factual feature word filled in), with the slot moved to
  an ordinary word, so the context carries the class but the target does not.

Rules (shared by both groups, documented here once):

- An *ordinary word* is a run of at least two lower-case ASCII letters, preceded by whitespace and followed by
  whitespace, punctuation or the end of the text (so not a proper noun, a sentence start, a number, a word inside
  a hyphenation or before an apostrophe), that is not a feature target word (compared case-insensitively).
- It must have at least `min_words_before` whitespace-separated words before it (default 4), so that a causal LM
  has context to predict it from.
- The slot word is drawn by a generator seeded with `seed` and the text itself, so a text gets the same slot
  whatever other texts are sampled with it; `accept(prefix, word)` (e.g. "is one token for this tokenizer") is
  tried on the candidates in that random order and the first accepted one is taken.
- The factual target is the word really there. The counterfactual (read by the encoder only for the
  `counterfactual` and `diff` source modes) is the true slot word of the next example of the same group, in the
  group's order and wrapping around, that differs from this example's word: another ordinary word seen in the
  same kind of position, so the counterfactual gradient is that of an equally plausible non-feature word.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence

from ..features.dataset import SLOT, FeatureExample

NEUTRAL = "neutral"
"""Group name (and `FeatureExample.label`) of neutral texts with a slot on an ordinary word."""

NON_FEATURE_SLOT = "non_feature_slot"
"""Group name (and `FeatureExample.label`) of class texts with the slot moved to an ordinary word."""

MIN_WORDS_BEFORE = 4
"""Words a control slot needs before it, so that a causal LM has some context."""

_ORDINARY_WORD = re.compile(r"(?<=\s)[a-z]{2,}(?=[\s.,;:!?)\]\"]|$)")
_ANY_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")

Accept = Callable[[str, str], bool]
"""`accept(prefix, word)`: whether `word` may be the target after `prefix` (e.g. it is a single token)."""


def contains_word(text: str, words: Iterable[str]) -> bool:
    """Whether `text` contains any of `words` as a whole word, ignoring case ("She" counts for "she")."""
    wanted = {w.lower() for w in words}
    return any(m.group(0).lower() in wanted for m in _ANY_WORD.finditer(text))


def ordinary_word_spans(text: str, *, exclude: Iterable[str] = (), avoid: tuple[int, int] | None = None,
                        min_words_before: int = MIN_WORDS_BEFORE) -> list[tuple[int, int]]:
    """Character spans `(start, end)` of the ordinary words of `text` that may carry a control slot.

    Args:
        text: a plain text (without `SLOT`).
        exclude: feature words that never qualify (compared case-insensitively).
        avoid: a span that must not overlap the chosen word (the feature word of a class text).
        min_words_before: whitespace-separated words that must come before the slot word.
    """
    excluded = {w.lower() for w in exclude}
    spans = []
    for match in _ORDINARY_WORD.finditer(text):
        start, end = match.span()
        if match.group(0) in excluded or len(text[:start].split()) < min_words_before:
            continue
        if avoid is not None and start < avoid[1] and avoid[0] < end:
            continue
        spans.append((start, end))
    return spans


def _pick_slot(text: str, spans: Sequence[tuple[int, int]], *, seed: int,
               accept: Accept | None) -> tuple[int, int] | None:
    order = list(spans)
    random.Random(f"{seed}:{text}").shuffle(order)  # str seeds hash with sha512: stable across runs
    for start, end in order:
        if accept is None or accept(text[:start], text[start:end]):
            return start, end
    return None


def _with_counterfactuals(rows: list[tuple[str, str, dict[str, str]]], label: str) -> tuple[list[FeatureExample], int]:
    """Examples whose counterfactual is the next differing slot word of the group (see the module docstring)."""
    examples = []
    for i, (text, word, meta) in enumerate(rows):
        other = next((rows[(i + k) % len(rows)][1] for k in range(1, len(rows))
                      if rows[(i + k) % len(rows)][1] != word), None)
        if other is not None:
            examples.append(FeatureExample(text, word, other, label, meta))
    return examples, len(rows) - len(examples)


def neutral_examples(texts: Sequence[str], *, feature_words: Iterable[str], limit: int | None = None,
                     seed: int = 0, accept: Accept | None = None,
                     min_words_before: int = MIN_WORDS_BEFORE) -> tuple[list[FeatureExample], int]:
    """Slot examples from neutral texts: a seeded sample of texts, the slot on one ordinary word of each.

    Texts are visited in a seeded random order until `limit` examples are made; a text is skipped when it
    contains a feature word or the slot token, or has no ordinary word that `accept` takes.

    Args:
        texts: candidate texts, e.g. `gradiend_hf.features.neutral_texts()`.
        feature_words: the target words of the feature (all classes); texts containing one are skipped.
        limit: at most this many examples (all usable texts when None).
        seed: seed of the text sample and of the slot choice.
        accept: `accept(prefix, word)` filter on slot words, e.g. single tokens for the base tokenizer.
        min_words_before: words required before the slot.

    Returns:
        The examples (label `NEUTRAL`, meta `{"source_text": text}`) in sampling order, and the number of texts
        visited but skipped.
    """
    words = {w.lower() for w in feature_words}
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    rows: list[tuple[str, str, dict[str, str]]] = []
    skipped = 0
    for index in order:
        if limit is not None and len(rows) >= limit:
            break
        text = texts[index].strip()
        if SLOT in text or contains_word(text, words):
            skipped += 1
            continue
        span = _pick_slot(text, ordinary_word_spans(text, exclude=words, min_words_before=min_words_before),
                          seed=seed, accept=accept)
        if span is None:
            skipped += 1
            continue
        start, end = span
        rows.append((text[:start] + SLOT + text[end:], text[start:end], {"source_text": text}))
    examples, lost = _with_counterfactuals(rows, NEUTRAL)
    return examples, skipped + lost


def non_feature_slot_examples(examples: Sequence[FeatureExample], *, feature_words: Iterable[str], seed: int = 0,
                              accept: Accept | None = None,
                              min_words_before: int = MIN_WORDS_BEFORE) -> tuple[list[FeatureExample], int]:
    """The class texts with their feature word filled in (the factual target) and the slot moved to an ordinary word.

    Args:
        examples: class examples (e.g. the test split of both classes).
        feature_words: the target words of the feature; never chosen as the new slot word.
        seed: seed of the slot choice.
        accept: `accept(prefix, word)` filter on slot words, e.g. single tokens for the base tokenizer.
        min_words_before: words required before the slot.

    Returns:
        One example per usable input (label `NON_FEATURE_SLOT`, meta `{"class": ..., "source_text": ...}`), in
        input order, and the number of inputs without a usable ordinary word.
    """
    words = {w.lower() for w in feature_words}
    rows: list[tuple[str, str, dict[str, str]]] = []
    skipped = 0
    for example in examples:
        filled = example.filled(example.factual)
        feature_span = (len(example.prefix), len(example.prefix) + len(example.factual))
        spans = ordinary_word_spans(filled, exclude=words, avoid=feature_span, min_words_before=min_words_before)
        span = _pick_slot(filled, spans, seed=seed, accept=accept)
        if span is None:
            skipped += 1
            continue
        start, end = span
        rows.append((filled[:start] + SLOT + filled[end:], filled[start:end],
                     {"class": example.label, "source_text": example.text}))
    out, lost = _with_counterfactuals(rows, NON_FEATURE_SLOT)
    return out, skipped + lost


__all__ = [
    "MIN_WORDS_BEFORE",
    "NEUTRAL",
    "NON_FEATURE_SLOT",
    "contains_word",
    "neutral_examples",
    "non_feature_slot_examples",
    "ordinary_word_spans",
]
