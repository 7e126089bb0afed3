"""The neuron as a probe: h of free texts, with the target word the base model itself expects at the slot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..errors import FeatureDataError, TargetTokenizationError
from ..features.dataset import SLOT, FeatureExample
from ..gradients import GradientEngine

TargetChoice = Literal["given", "most likely"]


@dataclass(frozen=True)
class EncodedText:
    """One probed text: the targets used at its slot and the feature value they give."""

    text: str
    """The text, with one `[MASK]` slot."""
    target: str
    """The factual target word at the slot."""
    counterfactual: str
    """The counterfactual word (read by the encoder only for the `counterfactual` / `diff` source modes)."""
    chosen: TargetChoice
    """`"given"` (the caller's target) or `"most likely"` (the feature word the base model ranks highest)."""
    target_probability: float
    """The base model's probability of `target` at the slot."""
    h: tuple[float, ...]
    """Feature value of every neuron; `h[0]` is the feature neuron of a one-neuron model."""


def check_slot_texts(texts: Sequence[str]) -> list[str]:
    """Return `texts` as a list, or fail naming the first text without exactly one `[MASK]` slot."""
    if isinstance(texts, str):
        raise FeatureDataError("`texts` must be a list of texts, found one str; wrap it in a list.")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or text.count(SLOT) != 1:
            found = text.count(SLOT) if isinstance(text, str) else type(text).__name__
            raise FeatureDataError(
                f"Text {i + 1} must contain the slot {SLOT} exactly once (found {found}): {text!r}. Write {SLOT} "
                f"where the target word goes, e.g. 'Mary said that {SLOT} would come.'"
            )
    if not texts:
        raise FeatureDataError(f"No texts to encode; give at least one text with a {SLOT} slot.")
    return list(texts)


@dataclass(frozen=True)
class _ScoredWord:
    """A slot example scoring one word (the engine reads only prefix, suffix and the two target words)."""

    prefix: str
    suffix: str
    factual: str
    counterfactual: str


def _target_logprobs(engine: GradientEngine, text: str, words: Sequence[str]) -> dict[str, float]:
    """log p(word) at the slot of `text` for each word that is one token there (the others are left out)."""
    prefix, suffix = text.split(SLOT, 1)
    usable = []
    for word in dict.fromkeys(words):
        try:
            engine.slots.target_id(prefix, word)
        except TargetTokenizationError:
            continue
        usable.append(word)
    if not usable:
        return {}
    batch = engine.tokenize([_ScoredWord(prefix, suffix, w, w) for w in usable])
    was_training = engine.model.training
    engine.model.eval()  # no dropout: the same probabilities every time
    try:
        with torch.no_grad():
            losses = engine.per_example_losses(batch, "factual")  # −log p(factual) per row
    finally:
        engine.model.train(was_training)
    return {w: -float(loss) for w, loss in zip(usable, losses)}


def encode_texts(model: Any, base: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *,
                 target: str | None = None, batch_size: int = 16, max_length: int = 256) -> list[EncodedText]:
    """Feature value h of each text, probing the GRADIEND neuron on texts of your own.

    The factual target at the slot is `target` if given; otherwise the feature target word (any class's, from
    `config.feature_targets`) that the base model finds most likely at the slot. The counterfactual is the
    other class's target word that the base model finds most likely there; for a `target` that is no feature
    word, it is the positive class's first target word that is one token at the slot. Only the `counterfactual`
    and `diff` source modes read it.

    Args:
        model: a `GradiendModel`.
        base: the base language model it was trained on.
        tokenizer: its tokenizer.
        texts: texts with exactly one `[MASK]` slot each.
        target: the target word at every slot; default: chosen per text as above.
        batch_size: texts per JVP pass.
        max_length: longest input in tokens.

    Raises:
        FeatureDataError: a text has no or several slots, or no target can be chosen.
        TargetTokenizationError: `target` is not one token at a slot.

    Example:

    ```python
    >>> for row in gh.evaluation.encode_texts(model, base, tok, ["Mary said that [MASK] would come."]):
    ...     print(f"{row.h[0]:+.3f} {row.target!r} {row.text}")
    ```
    """
    texts = check_slot_texts(texts)
    config = model.config
    model.check_base_model(base)
    engine = GradientEngine(base, tokenizer, config.param_names, max_length=max_length)
    classes = [config.positive_class, config.negative_class]
    targets = {c: list((config.feature_targets or {}).get(c, [])) for c in classes}
    if target is None and not any(targets.values()):
        raise FeatureDataError(
            "The GRADIEND model records no feature target words (config.feature_targets is empty), so the target "
            "at the slot cannot be chosen; pass `target=` (`--target WORD` on the command line)."
        )
    if target is not None:
        target = target.strip()
        if not target or any(c.isspace() for c in target):
            raise FeatureDataError(f"`target` must be one word without whitespace, found {target!r}.")
    rows: list[tuple[FeatureExample, TargetChoice, float]] = []
    for text in texts:
        words = [w for c in classes for w in targets[c]] + ([target] if target else [])
        logprob = _target_logprobs(engine, text, words)
        prefix = text.split(SLOT, 1)[0]
        if target is not None:
            engine.slots.target_id(prefix, target)  # a clear TargetTokenizationError if it is not one token
            factual, chosen = target, "given"
        else:
            feature_scores = {w: logprob[w] for c in classes for w in targets[c] if w in logprob}
            if not feature_scores:
                raise TargetTokenizationError(
                    f"None of the feature target words {sorted({w for c in classes for w in targets[c]})} is one "
                    f"token at the slot of {text!r}; pass a target word that is (`--target WORD`)."
                )
            factual, chosen = max(feature_scores, key=feature_scores.get), "most likely"
        own = next((c for c in classes if factual in targets[c]), None)
        pool = targets[classes[1] if own == classes[0] else classes[0]] if own else targets[classes[0]]
        pool_scores = {w: logprob[w] for w in pool if w in logprob and w != factual}
        if not pool_scores:
            raise TargetTokenizationError(
                f"No counterfactual for {factual!r} in {text!r}: none of {pool} is one token at the slot. The "
                f"counterfactual is the other class's target word; check the model's feature targets."
            )
        counterfactual = max(pool_scores, key=pool_scores.get) if own else next(w for w in pool if w in pool_scores)
        rows.append((FeatureExample(text, factual, counterfactual, "probe"), chosen, math.exp(logprob[factual])))
    h = model.encode_examples(engine, [r[0] for r in rows], batch_size=batch_size)
    return [
        EncodedText(text=e.text, target=e.factual, counterfactual=e.counterfactual, chosen=chosen,
                    target_probability=p, h=tuple(float(v) for v in h[i]))
        for i, (e, chosen, p) in enumerate(rows)
    ]


__all__ = ["EncodedText", "check_slot_texts", "encode_texts"]
