"""One feature example: a text with one target slot, the word its class calls for, and the other class's word."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gradiend_hf.errors import FeatureDataError

SLOT = "[MASK]"
"""The one target slot in `FeatureExample.text`.

An MLM sees it replaced by its mask token; a causal LM sees only the text before it and predicts the
next token.
"""

SPLITS: tuple[str, str, str] = ("train", "validation", "test")
"""Split names, in the order `FeatureDataset` stores them."""

@dataclass(frozen=True)
class FeatureExample:
    """One text with one target slot, and the words the two classes call for at that slot.

    Example:
        >>> ex = FeatureExample("Mary said that [MASK] would come.", "she", "he", "female")
        >>> ex.prefix, ex.filled("she")
        ('Mary said that ', 'Mary said that she would come.')
    """

    text: str
    """The text, with exactly one `SLOT` where the target word goes."""

    factual: str
    """The word the example's class calls for at the slot ("she" after a female name)."""

    counterfactual: str
    """The other class's word at the same slot ("he")."""

    label: str
    """The example's class ("female")."""

    meta: Mapping[str, str] = field(default_factory=dict, compare=False)
    """Provenance that does not change the example, e.g. `{"name": "Mary", "template_id": "t1a2b3c4d"}`."""

    def __post_init__(self) -> None:
        for attribute in ("text", "factual", "counterfactual", "label"):
            value = getattr(self, attribute)
            if not isinstance(value, str):
                raise FeatureDataError(
                    f"FeatureExample.{attribute} must be a str, found {type(value).__name__} ({value!r})."
                )
        slots = self.text.count(SLOT)
        if slots != 1:
            raise FeatureDataError(
                f"FeatureExample.text must contain the slot {SLOT!r} exactly once, found it {slots} times in "
                f"{self.text!r}. Replace the one target word by {SLOT!r}."
            )
        for attribute in ("factual", "counterfactual"):
            word = getattr(self, attribute)
            if not word or any(character.isspace() for character in word):
                raise FeatureDataError(
                    f"FeatureExample.{attribute} must be one non-empty word without whitespace, found "
                    f"{word!r} (text {self.text!r})."
                )
        if self.factual == self.counterfactual:
            raise FeatureDataError(
                f"FeatureExample.factual and .counterfactual must differ, both are {self.factual!r} "
                f"(text {self.text!r}); the counterfactual is the other class's word."
            )
        if not self.label.strip():
            raise FeatureDataError(
                f"FeatureExample.label must be a non-empty class name (text {self.text!r})."
            )
        if not isinstance(self.meta, Mapping):
            raise FeatureDataError(
                f"FeatureExample.meta must be a mapping of str to str, found {type(self.meta).__name__}."
            )
        meta = dict(self.meta)
        for key, value in meta.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise FeatureDataError(
                    f"FeatureExample.meta must map str to str, found {key!r}: {value!r}. Convert the values "
                    "with str()."
                )
        # A private copy, so that a caller's dict changed later does not change the example.
        object.__setattr__(self, "meta", meta)

    @property
    def prefix(self) -> str:
        """The text before the slot, as written, including the whitespace before the slot.

        A causal LM sees this prefix (without the trailing whitespace); the whitespace decides how the target
        word is tokenised (`" she"` vs `"she"` for BPE tokenizers).
        """
        return self.text.split(SLOT, 1)[0]

    @property
    def suffix(self) -> str:
        """The text after the slot, as written (it may start with punctuation such as "'s")."""
        return self.text.split(SLOT, 1)[1]

    def filled(self, word: str) -> str:
        """Returns the text with the slot replaced by `word` (e.g. the factual or counterfactual target)."""
        return self.text.replace(SLOT, word, 1)


__all__ = ["SLOT", "SPLITS", "FeatureExample"]
