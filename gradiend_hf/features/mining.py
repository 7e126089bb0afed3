"""Mining GRADIEND texts from plain prose: name templates and word slots (cleaning and splitting: `text_cleaning`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from gradiend_hf.errors import FeatureDataError
from gradiend_hf.features.dataset import SLOT, FeatureExample
from gradiend_hf.features.text_cleaning import clean_gutenberg, clean_wikitext, split_sentences

NAME_PLACEHOLDER = "[NAME]"
"""Where a template takes a first name."""

PRONOUN_PLACEHOLDER = "[PRONOUN]"
"""Where a template takes the pronoun that refers back to the name (the target slot)."""

Case = Literal["lower", "title", "upper"]
"""How a word was capitalised: "she", "She" or "SHE"."""

OBJECT_PRONOUNS: tuple[str, ...] = ("him", "his", "himself", "her", "hers", "herself")
"""Gendered pronouns besides he/she; a template may contain none of them, so the slot is the only cue."""

# fmt: off
TITLES: tuple[str, ...] = (
    "aunt", "baron", "brother", "capt", "captain", "col", "colonel", "count", "countess", "cousin", "dame",
    "doctor", "dr", "duchess", "duke", "father", "gen", "general", "judge", "king", "lady", "lord", "madam",
    "madame", "major", "master", "miss", "mister", "mistress", "mlle", "mme", "monsieur", "mother", "mr",
    "mrs", "ms", "nurse", "prince", "princess", "prof", "professor", "queen", "rev", "reverend", "saint",
    "sir", "sister", "st", "uncle",
)
# fmt: on
"""Words that, right before a capitalised name, make it a surname or place ("Mr. Weston", "St. Mary's")."""

# Words: letters, with inner hyphens ("white-haired" is one word, so it never matches "white") and a final
# "'t" ("don't" is one word, not the title "don"); other clitics are words of their own ("she'd": "she", "d").
_WORD_RE = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*(?:'[tT](?![A-Za-z]))?")
# A complete sentence ends in . ! or ? (then maybe closing quotes or brackets), not in a comma, colon or dash.
_COMPLETE_RE = re.compile(r"[.!?][\"')\]]*$")
# Quotation marks, told apart from apostrophes: a single quote counts unless it sits between two letters.
_QUOTE_RE = re.compile(
    r"[\"\u201c\u201d\u201e\u00ab\u00bb]|(?<![A-Za-z])['\u2018\u2019]|['\u2018\u2019](?![A-Za-z])"
)


@dataclass(frozen=True)
class Template:
    """A sentence with a first name as `[NAME]` and the later he/she that refers to it as `[PRONOUN]`.

    Example:
        >>> t = Template("[NAME] was tired, so [PRONOUN] slept.", "emma.txt", "lower", "Emma", "female")
        >>> t.fill("John", "[MASK]")
        'John was tired, so [MASK] slept.'
    """

    template: str
    """The text with exactly one `[NAME]` and, after it, exactly one `[PRONOUN]`."""

    source: str
    """Where the sentence came from (a file name)."""

    pronoun_case: Case
    """Capitalisation of the original pronoun, applied to the pronoun put into the slot."""

    name: str
    """The name in the original sentence."""

    label: str
    """The class of that name (and of the original pronoun)."""

    def fill(self, name: str, pronoun: str) -> str:
        """Returns the text with `name` and `pronoun` (or a slot such as `SLOT`) put in."""
        return self.template.replace(NAME_PLACEHOLDER, name, 1).replace(PRONOUN_PLACEHOLDER, pronoun, 1)


@dataclass(frozen=True)
class WordSlot:
    """A sentence in which one class word was replaced by `SLOT`, as found by `find_word_slots`."""

    text: str
    """The sentence with the class word replaced by `SLOT`."""

    word: str
    """The class word as written (keeps its capitalisation)."""

    label: str
    """The class of the word."""

    index: int
    """Position of the word in its class's aligned list (its counterpart in another class has the same)."""

    source: str = ""
    """Where the sentence came from."""


def match_case(word: str, like: str) -> str:
    """Returns `word` capitalised like `like`: lower, Title or UPPER (mixed case: `word` as given)."""
    case = case_of(like)
    return word if case is None else apply_case(word, case)


def apply_case(word: str, case: Case) -> str:
    """Returns `word` in lower, Title or UPPER case."""
    if case == "upper":
        return word.upper()
    if case == "title":
        return word[:1].upper() + word[1:].lower()
    if case == "lower":
        return word.lower()
    raise FeatureDataError(f"Unknown case {case!r}; expected 'lower', 'title' or 'upper'.")


def case_of(word: str) -> Case | None:
    """Returns "lower", "title" or "upper" for "she", "She"/"S" and "SHE", or None for mixed case ("sHe")."""
    if word.islower():
        return "lower"
    if word.isupper() and len(word) > 1:
        return "upper"
    if word[:1].isupper() and (len(word) == 1 or word[1:].islower()):
        return "title"
    return None


def mine_name_templates(
    sentences: Iterable[str],
    names: Mapping[str, str],
    pronouns: Mapping[str, str],
    *,
    source: str = "",
    banned_words: Iterable[str] = (),
    other_pronouns: Iterable[str] = OBJECT_PRONOUNS,
    titles: Iterable[str] = TITLES,
    min_words: int = 6,
    max_words: int = 40,
) -> list[Template]:
    """Finds sentences in which a first name is followed by one he/she that refers back to it.

    A sentence is kept when it has `min_words` to `max_words` words, ends in . ! or ?, has no quotation marks
    (apostrophes are fine), exactly one occurrence of a listed name (matched case-sensitively as a whole word,
    not directly after a title such as Mr or Miss), exactly one nominative pronoun of any class, after the
    name and of the name's class, none of `other_pronouns` (him, his, her, ... of either gender) anywhere, and
    none of `banned_words` before the pronoun (words such as "mother" or "sir" would give the class away
    without the name, or name another referent).

    Args:
        sentences: Sentences, e.g. from `split_sentences`.
        names: First name -> class label, e.g. {"Mary": "female", "John": "male"}. Pass every name you know,
            not only those you want templates for: a sentence with two names is ambiguous and is dropped.
        pronouns: Class label -> nominative pronoun, e.g. {"female": "she", "male": "he"}.
        source: Stored on each template (e.g. the file name).
        banned_words: Words (any case) that may not occur before the pronoun.
        other_pronouns: Words (any case) that may not occur anywhere in the sentence.
        titles: Words (any case) that, directly before the name, disqualify it.
        min_words: Fewest whitespace-separated words.
        max_words: Most whitespace-separated words.

    Returns:
        The templates, in sentence order.

    Raises:
        FeatureDataError: If a name's class has no pronoun, or pronouns are not distinct single words.
    """
    nominative = _validate_pronouns(pronouns)
    unknown = sorted({label for label in names.values() if label not in pronouns})
    if unknown:
        raise FeatureDataError(
            f"Names have class(es) {unknown} without a pronoun; pronouns are given for {sorted(pronouns)}. "
            "Add a pronoun for each class or drop those names."
        )
    banned = {w.lower() for w in banned_words}
    forbidden = {w.lower() for w in other_pronouns} - set(nominative)
    title_words = {w.lower() for w in titles}
    # A cheap test first: most sentences have no he/she at all.
    has_pronoun = re.compile(r"\b(?:" + "|".join(map(re.escape, nominative)) + r")\b").search
    templates = []
    for sentence in sentences:
        if not has_pronoun(sentence.lower()):
            continue
        if (
            "[" in sentence
            or "]" in sentence
            or _QUOTE_RE.search(sentence)
            or not _COMPLETE_RE.search(sentence)
        ):
            continue
        if not min_words <= len(sentence.split()) <= max_words:
            continue
        words = list(_WORD_RE.finditer(sentence))
        lowered = [w.group().lower() for w in words]
        name_positions = [i for i, w in enumerate(words) if w.group() in names]
        pronoun_positions = [i for i, w in enumerate(lowered) if w in nominative]
        if len(name_positions) != 1 or len(pronoun_positions) != 1:
            continue
        name_at, pronoun_at = name_positions[0], pronoun_positions[0]
        if pronoun_at < name_at or any(w in forbidden for w in lowered):
            continue
        if name_at > 0 and lowered[name_at - 1] in title_words:
            continue
        name, pronoun = words[name_at], words[pronoun_at]
        label = names[name.group()]
        case = case_of(pronoun.group())
        if nominative[lowered[pronoun_at]] != label or case is None:
            continue
        if any(w in banned for i, w in enumerate(lowered[:pronoun_at]) if i != name_at):
            continue
        template = (
            sentence[: name.start()]
            + NAME_PLACEHOLDER
            + sentence[name.end() : pronoun.start()]
            + PRONOUN_PLACEHOLDER
            + sentence[pronoun.end() :]
        )
        templates.append(Template(template, source, case, name.group(), label))
    return templates


def _validate_pronouns(pronouns: Mapping[str, str]) -> dict[str, str]:
    """Returns pronoun -> class, after checking the pronouns are distinct single words."""
    if len(pronouns) < 2:
        raise FeatureDataError(
            f"pronouns must give a pronoun for at least two classes, found {dict(pronouns)}."
        )
    by_word: dict[str, str] = {}
    for label, word in pronouns.items():
        if not isinstance(word, str) or not _WORD_RE.fullmatch(word):
            raise FeatureDataError(
                f"The pronoun of class {label!r} must be one word of letters, found {word!r}."
            )
        if word.lower() in by_word:
            raise FeatureDataError(
                f"Classes {by_word[word.lower()]!r} and {label!r} have the same pronoun {word!r}; they must "
                "differ."
            )
        by_word[word.lower()] = label
    return by_word


def find_word_slots(
    sentences: Iterable[str],
    class_words: Mapping[str, Sequence[str]],
    *,
    source: str = "",
    exclude_words: Iterable[str] = (),
    keep: Callable[[str, str, str], bool] | None = None,
    min_prefix_words: int = 4,
    min_words: int = 6,
    max_words: int = 40,
) -> list[WordSlot]:
    """Finds sentences with exactly one class word (of any class), and replaces it by `SLOT`.

    Words match whole (case-insensitively; a hyphenated compound such as "white-haired" is one word). The
    sentence must have `min_words` to `max_words` words and end in . ! or ? (then maybe quotes); the word must
    be in lower, Title or UPPER case and have at least `min_prefix_words` words before it, because a causal LM
    only sees that prefix.

    Args:
        sentences: Sentences, e.g. from `split_sentences`.
        class_words: Class -> word list, any number of classes; lists are aligned by index (see
            `mine_word_slots`) and must have equal lengths.
        source: Stored on each slot.
        exclude_words: Words (any case) that disqualify a sentence, e.g. words of the same attribute that are
            in no list ("african" when the lists hold "africa").
        keep: Optional test `keep(prefix, word, suffix) -> bool` for a candidate; e.g. to accept "white" only
            when a word like "man" follows it.
        min_prefix_words: Fewest words before the slot.
        min_words: Fewest words in the sentence.
        max_words: Most words in the sentence.

    Returns:
        The slots, in sentence order.

    Raises:
        FeatureDataError: If the word lists are malformed (see `mine_word_slots`).
    """
    lookup = _word_lookup(class_words)
    excluded = {w.lower() for w in exclude_words}
    # A cheap test first: most sentences have no class word at all.
    has_word = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(lookup))) + r")\b").search
    slots = []
    for sentence in sentences:
        if not has_word(sentence.lower()):
            continue
        if "[" in sentence or "]" in sentence or not _COMPLETE_RE.search(sentence):
            continue
        if not min_words <= len(sentence.split()) <= max_words:
            continue
        words = list(_WORD_RE.finditer(sentence))
        lowered = [w.group().lower() for w in words]
        hits = [i for i, w in enumerate(lowered) if w in lookup]
        if len(hits) != 1 or any(w in excluded for w in lowered):
            continue
        match = words[hits[0]]
        prefix, word, suffix = sentence[: match.start()], match.group(), sentence[match.end() :]
        if len(prefix.split()) < min_prefix_words or case_of(word) is None:
            continue
        if keep is not None and not keep(prefix, word, suffix):
            continue
        label, index = lookup[lowered[hits[0]]]
        slots.append(WordSlot(prefix + SLOT + suffix, word, label, index, source))
    return slots


def mine_word_slots(
    sentences: Iterable[str],
    class_words: Mapping[str, Sequence[str]],
    *,
    source: str = "",
    exclude_words: Iterable[str] = (),
    keep: Callable[[str, str, str], bool] | None = None,
    min_prefix_words: int = 4,
    min_words: int = 6,
    max_words: int = 40,
) -> list[FeatureExample]:
    """Mines feature examples for two classes given as aligned word lists.

    The lists are aligned by index: the counterfactual of word i of one class is word i of the other, e.g.
    `{"christian": ["christian", "christians", "church"], "muslim": ["muslim", "muslims", "mosque"]}` turns
    "They walked to the Church" into factual "Church", counterfactual "Mosque" (capitalisation is copied). A
    word may repeat within one class when it is the counterpart of several words of another class; a sentence
    with it then takes the counterpart at its first position. See
    `find_word_slots` for which sentences are kept and what the other arguments do. For more than two classes,
    mine once per pair (or call `find_word_slots` once with all classes and pair up the slots).

    Returns:
        One `FeatureExample` per kept sentence, labelled with the class of its word; `meta` holds the source.

    Raises:
        FeatureDataError: If there are not exactly two classes, the lists differ in length, or a word is
            empty, not a single word, or listed for both classes.
    """
    if len(class_words) != 2:
        raise FeatureDataError(
            f"mine_word_slots takes exactly two classes, found {len(class_words)}: {sorted(class_words)}. "
            "Mine once per pair of classes."
        )
    slots = find_word_slots(
        sentences,
        class_words,
        source=source,
        exclude_words=exclude_words,
        keep=keep,
        min_prefix_words=min_prefix_words,
        min_words=min_words,
        max_words=max_words,
    )
    first, second = class_words
    other = {first: second, second: first}
    examples = []
    for slot in slots:
        counterfactual = match_case(class_words[other[slot.label]][slot.index].lower(), slot.word)
        meta = {"source": slot.source} if slot.source else {}
        examples.append(FeatureExample(slot.text, slot.word, counterfactual, slot.label, meta))
    return examples


def _word_lookup(class_words: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, int]]:
    """Returns lower-cased word -> (class, first index) after checking the lists are aligned and disjoint."""
    if len(class_words) < 2:
        raise FeatureDataError(
            f"class_words must give word lists for at least two classes, found {sorted(class_words)}."
        )
    for label, words in class_words.items():
        if isinstance(words, str):
            raise FeatureDataError(
                f"The words of class {label!r} must be a list of words, found the str {words!r}."
            )
    lengths = {label: len(words) for label, words in class_words.items()}
    if len(set(lengths.values())) != 1:
        raise FeatureDataError(
            "The word lists must have equal lengths (aligned by index: word i of one class is the "
            f"counterfactual of word i of the other), found lengths {lengths}."
        )
    if next(iter(lengths.values())) == 0:
        raise FeatureDataError("The word lists are empty; give at least one word per class.")
    lookup: dict[str, tuple[str, int]] = {}
    for label, words in class_words.items():
        for index, word in enumerate(words):
            if not isinstance(word, str) or not _WORD_RE.fullmatch(word):
                raise FeatureDataError(
                    f"Word {index} of class {label!r} must be one word of letters (hyphens allowed), found "
                    f"{word!r}."
                )
            key = word.lower()
            if key not in lookup:
                lookup[key] = (label, index)
            elif lookup[key][0] != label:
                raise FeatureDataError(
                    f"Word {word!r} is listed for class {lookup[key][0]!r} (position {lookup[key][1]}) and "
                    f"class {label!r} (position {index}); a word may name only one class."
                )
    return lookup


__all__ = [
    "NAME_PLACEHOLDER",
    "OBJECT_PRONOUNS",
    "PRONOUN_PLACEHOLDER",
    "TITLES",
    "Case",
    "Template",
    "WordSlot",
    "apply_case",
    "case_of",
    "clean_gutenberg",
    "clean_wikitext",
    "find_word_slots",
    "match_case",
    "mine_name_templates",
    "mine_word_slots",
    "split_sentences",
]
