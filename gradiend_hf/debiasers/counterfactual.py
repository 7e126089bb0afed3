"""Counterfactual word swapping for CDA: a gender word list written for this package, and race/religion from the
feature word lists.

`GENDER_WORD_PAIRS` was written for gradiend-hf from general English (it is neither bias-bench's unlicensed
`bias_attribute_words.json` nor derived from it) and ships under the package's licence (Apache-2.0). Swaps keep the
capitalisation of the original word. English "her" is both object ("saw her") and possessive ("her book"), and "his"
both determiner and pronoun ("the book is his"): the word after it decides (a content word → possessive).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache

from ..errors import FeatureDataError
from ..features import RACE_WORDS, RELIGION_WORDS, match_case

GENDER_WORD_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"), ("him", "her"), ("himself", "herself"), ("his", "her"), ("his", "hers"),
    ("man", "woman"), ("men", "women"), ("boy", "girl"), ("boys", "girls"), ("male", "female"),
    ("males", "females"), ("masculine", "feminine"), ("gentleman", "lady"), ("gentlemen", "ladies"),
    ("father", "mother"), ("fathers", "mothers"), ("dad", "mom"), ("dads", "moms"), ("daddy", "mommy"),
    ("papa", "mama"), ("son", "daughter"), ("sons", "daughters"), ("brother", "sister"), ("brothers", "sisters"),
    ("husband", "wife"), ("husbands", "wives"), ("uncle", "aunt"), ("uncles", "aunts"), ("nephew", "niece"),
    ("nephews", "nieces"), ("grandfather", "grandmother"), ("grandfathers", "grandmothers"),
    ("grandpa", "grandma"), ("grandson", "granddaughter"), ("grandsons", "granddaughters"),
    ("stepfather", "stepmother"), ("stepson", "stepdaughter"), ("boyfriend", "girlfriend"),
    ("boyfriends", "girlfriends"), ("groom", "bride"), ("grooms", "brides"), ("widower", "widow"),
    ("widowers", "widows"), ("king", "queen"), ("kings", "queens"), ("prince", "princess"),
    ("princes", "princesses"), ("duke", "duchess"), ("dukes", "duchesses"), ("emperor", "empress"),
    ("baron", "baroness"), ("monk", "nun"), ("monks", "nuns"), ("actor", "actress"), ("actors", "actresses"),
    ("waiter", "waitress"), ("waiters", "waitresses"), ("hero", "heroine"), ("heroes", "heroines"),
    ("steward", "stewardess"), ("schoolboy", "schoolgirl"), ("schoolboys", "schoolgirls"), ("lad", "lass"),
    ("lads", "lasses"), ("mr", "mrs"), ("sir", "madam"), ("fatherhood", "motherhood"), ("paternal", "maternal"),
    ("paternity", "maternity"), ("brotherhood", "sisterhood"), ("manhood", "womanhood"),
    ("fraternity", "sorority"), ("spokesman", "spokeswoman"), ("chairman", "chairwoman"),
    ("businessman", "businesswoman"), ("businessmen", "businesswomen"), ("policeman", "policewoman"),
    ("congressman", "congresswoman"), ("salesman", "saleswoman"), ("sportsman", "sportswoman"),
)
"""(male, female) word pairs, each direction swapped (two-sided CDA); written for this package, Apache-2.0."""

_OBJECT_CONTEXT = frozenset({
    "to", "and", "or", "but", "nor", "that", "with", "in", "on", "at", "for", "from", "by", "as", "about", "if",
    "when", "while", "because", "than", "up", "down", "out", "off", "away", "back", "again", "now", "then", "too",
    "so", "into", "onto", "over", "under", "after", "before", "until", "since", "though", "through", "the", "a",
    "an", "this", "these", "those", "all", "not",
})
"""Words after which "her" is an object ("gave it to her and left"), so it becomes "him" rather than "his"."""


def _word_map(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Both directions of every pair; the first pair that names a word decides its counterpart."""
    mapping: dict[str, str] = {}
    for left, right in pairs:
        mapping.setdefault(left.lower(), right.lower())
        mapping.setdefault(right.lower(), left.lower())
    return mapping


@cache
def _pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b({alternatives})\b(?=(\s*)([\w]*))", re.IGNORECASE)


def swap_words(text: str, pairs: Sequence[tuple[str, str]] = GENDER_WORD_PAIRS) -> str:
    """`text` with every listed word replaced by its counterpart, case kept ("She told him" → "He told her")."""
    mapping = _word_map(pairs)
    english_pronouns = "her" in mapping and "his" in mapping

    def replace(match: re.Match[str]) -> str:
        word, next_word = match.group(1), match.group(3).lower()
        key = word.lower()
        content_follows = bool(next_word) and next_word not in _OBJECT_CONTEXT
        if english_pronouns and key == "her":
            counterpart = "his" if content_follows else "him"
        elif english_pronouns and key == "his":
            counterpart = "her" if content_follows else "hers"
        else:
            counterpart = mapping[key]
        return match_case(counterpart, word)

    return _pattern(tuple(mapping)).sub(replace, text)


def word_pairs_for(feature_name: str, classes: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The swap list of a built-in feature: gender's own list, or the aligned race / religion words of two classes."""
    if feature_name == "gender":
        return GENDER_WORD_PAIRS
    tables: Mapping[str, Mapping[str, Sequence[str]]] = {"race": RACE_WORDS, "religion": RELIGION_WORDS}
    if feature_name not in tables or any(c not in tables[feature_name] for c in classes):
        raise FeatureDataError(
            f"CDA needs a word list for feature {feature_name!r} with classes {list(classes)}; expected gender, race "
            f"or religion with built-in classes. Pass your own pairs (word_pairs=[(a, b), ...])."
        )
    first, second = (tables[feature_name][c] for c in classes)
    return tuple(dict.fromkeys(zip(first, second)))


def two_sided(texts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Every text and, where it differs, its swapped counterpart (two-sided counterfactual data augmentation)."""
    out = []
    for text in texts:
        out.append(text)
        swapped = swap_words(text, pairs)
        if swapped != text:
            out.append(swapped)
    return out


__all__ = ["GENDER_WORD_PAIRS", "swap_words", "two_sided", "word_pairs_for"]
