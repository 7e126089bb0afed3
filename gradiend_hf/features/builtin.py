"""Built-in features (gender, race, religion), features from a user's corpus, and neutral text."""

from __future__ import annotations

import csv
import functools
import io
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import cast

from gradiend_hf.errors import FeatureDataError
from gradiend_hf.features.dataset import SLOT, FeatureDataset, FeatureExample
from gradiend_hf.features.mining import (
    NAME_PLACEHOLDER,
    PRONOUN_PLACEHOLDER,
    Case,
    apply_case,
    match_case,
    mine_word_slots,
    split_sentences,
)

GENDER_PRONOUNS: Mapping[str, str] = {"female": "she", "male": "he"}
"""The target word of each gender class; "female" is `classes[0]` and so maps to +1."""

RACE_WORDS: Mapping[str, tuple[str, ...]] = {
    "white": ("white", "whites", "europe", "european", "europeans"),
    "black": ("black", "blacks", "africa", "african", "africans"),
    "asian": ("asian", "asians", "asia", "asian", "asians"),
}
"""Race class words, aligned by index; written for this package.

Positions: adjective, plural noun, continent of origin, its adjective, its plural. "asian"/"asians" serve as
the counterpart of both the colour words and the continental ones; a sentence with "Asian" takes the
counterpart at the first position ("white"/"black"). The shipped sentences use "white"/"black"/"asian" only
directly before a word for people ("white man"), since in novels "white" and "black" are nearly always
colours.
"""

RELIGION_WORDS: Mapping[str, tuple[str, ...]] = {
    "christian": tuple("christian christians christianity church churches bible bible christian".split()),
    "jewish": tuple("jewish jews judaism synagogue synagogues torah torah jewish".split()),
    "muslim": tuple("muslim muslims islam mosque mosques quran koran moslem".split()),
}
"""Religion class words, aligned by index; written for this package.

Positions: adjective, plural noun, religion, house of worship, its plural, scripture, and the older spellings
"Koran" and "Moslem" of the novels (whose Christian and Jewish counterparts repeat earlier words).
"""

_DATA_PACKAGE = "gradiend_hf.features.data"
_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
_GENDER_DESCRIPTION = (
    "Sentences from 29 public-domain novels (Project Gutenberg) in which a first name is followed by one "
    "he/she that refers to it, used as templates: [NAME] is filled with SSA first names and the pronoun is "
    "the target. Names and templates are disjoint across train, validation and test."
)


@dataclass(frozen=True)
class _TemplateRow:
    template_id: str
    template: str
    pronoun_case: Case
    source: str


def _data_text(filename: str) -> str:
    """Reads a shipped data file (package data, so it works from a wheel or a zip too)."""
    try:
        return resources.files(_DATA_PACKAGE).joinpath(filename).read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise FeatureDataError(
            f"The shipped data file {filename!r} is missing from {_DATA_PACKAGE}. Reinstall gradiend-hf, or "
            "rebuild the files with `python -m gradiend_hf.features.build_data --shared <data pack>`."
        ) from error


def _case(value: str) -> Case:
    if value not in ("lower", "title", "upper"):
        raise FeatureDataError(
            f"Shipped template has pronoun case {value!r}; expected lower, title or upper."
        )
    return cast("Case", value)


def _read_tsv(filename: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_data_text(filename)), delimiter="\t", quoting=csv.QUOTE_NONE))


@functools.cache
def _names() -> tuple[tuple[str, str], ...]:
    """(name, class) for every usable name, most frequent first."""
    genders = {"F": "female", "M": "male"}
    return tuple((row["name"], genders[row["gender"]]) for row in _read_tsv("names.tsv"))


@functools.cache
def _templates() -> tuple[_TemplateRow, ...]:
    return tuple(
        _TemplateRow(row["template_id"], row["template"], _case(row["pronoun_case"]), row["source"])
        for row in _read_tsv("gender_templates.tsv")
    )


@functools.cache
def _sentences(attribute: str) -> tuple[dict[str, str], ...]:
    text = _data_text(f"{attribute}_sentences.jsonl")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def _split_three(items: Sequence, rng: random.Random) -> tuple[list, list, list]:
    """Shuffles a copy of `items` and cuts it 70/10/20 into train, validation and test."""
    items = list(items)
    rng.shuffle(items)
    n_test = round(_SPLIT_FRACTIONS[2] * len(items))
    n_validation = round(_SPLIT_FRACTIONS[1] * len(items))
    return items[n_test + n_validation :], items[n_test : n_test + n_validation], items[:n_test]


def gender(
    *,
    seed: int = 0,
    names_per_template: int = 8,
    eval_names_per_template: int = 4,
    max_train: int | None = None,
) -> FeatureDataset:
    """The built-in gender feature: first names followed by the pronoun that refers to them.

    Classes are ("female", "male"): female maps to +1, male to -1. Each text is a template mined from
    public-domain novels (see `data/ATTRIBUTION.md`) with `[NAME]` filled with a first name and the pronoun
    replaced by `SLOT`; the factual target is the pronoun of the name's gender (in the template's
    capitalisation), the counterfactual the other one. The name always comes before the slot, so a causal LM
    sees it in the prefix.

    Names (the whole usable SSA list, split per gender) and templates are each split 70/10/20 at random, so
    the splits share neither names nor templates: test holds held-out names in held-out templates. Each
    template of a split is filled with names of that split, half female and half male, cycling through the
    split's names in a shuffled order so that rare names are used as often as common ones.

    Args:
        seed: Seed of the name and template splits and of the name order; the same seed gives the same data.
        names_per_template: Names per train template (even: half per class).
        eval_names_per_template: Names per validation and test template (even: half per class).
        max_train: If given, keep at most this many train examples (a seeded, class-balanced sample).

    Returns:
        About 2,800 train, 200 validation and 400 test examples with the defaults; `meta` holds the name,
        template_id and source book.

    Raises:
        FeatureDataError: If a count is not a positive even number.
    """
    for argument, value in (
        ("names_per_template", names_per_template),
        ("eval_names_per_template", eval_names_per_template),
    ):
        if not isinstance(value, int) or value < 2 or value % 2:
            raise FeatureDataError(
                f"{argument} must be a positive even number (half the names per class), found {value!r}."
            )
    if max_train is not None and (not isinstance(max_train, int) or max_train < 2):
        raise FeatureDataError(f"max_train must be None or an int >= 2, found {max_train!r}.")
    rng = random.Random(seed)
    names_by_split: list[dict[str, list[str]]] = [{}, {}, {}]
    for label in GENDER_PRONOUNS:
        parts = _split_three([name for name, name_label in _names() if name_label == label], rng)
        for split_names, part in zip(names_by_split, parts, strict=True):
            split_names[label] = part
    template_parts = _split_three(_templates(), rng)
    splits = []
    per_template = (names_per_template, eval_names_per_template, eval_names_per_template)
    for part, split_names, count in zip(template_parts, names_by_split, per_template, strict=True):
        splits.append(_fill_templates(part, split_names, count // 2))
    train = splits[0]
    if max_train is not None and max_train < len(train):
        train = _balanced_sample(train, max_train, rng)
    return FeatureDataset(
        name="gender",
        classes=("female", "male"),
        train=train,
        validation=splits[1],
        test=splits[2],
        description=_GENDER_DESCRIPTION,
        license="Public domain (novels from Project Gutenberg; first names from US SSA data)",
    )


def _fill_templates(
    templates: Sequence[_TemplateRow], names: Mapping[str, list[str]], per_class: int
) -> list[FeatureExample]:
    labels = list(GENDER_PRONOUNS)
    cursor = {label: 0 for label in labels}
    examples = []
    for row in templates:
        for label in labels:
            other = labels[1 - labels.index(label)]
            factual = apply_case(GENDER_PRONOUNS[label], row.pronoun_case)
            counterfactual = apply_case(GENDER_PRONOUNS[other], row.pronoun_case)
            for _ in range(per_class):
                pool = names[label]
                name = pool[cursor[label] % len(pool)]
                cursor[label] += 1
                text = row.template.replace(NAME_PLACEHOLDER, name, 1).replace(PRONOUN_PLACEHOLDER, SLOT, 1)
                meta = {"name": name, "template_id": row.template_id, "source": row.source}
                examples.append(FeatureExample(text, factual, counterfactual, label, meta))
    return examples


def _balanced_sample(examples: list[FeatureExample], size: int, rng: random.Random) -> list[FeatureExample]:
    """A seeded sample of `size` examples, as even across classes as possible, in the original order."""
    labels = sorted({e.label for e in examples})
    chosen: set[int] = set()
    for position, label in enumerate(labels):
        indices = [i for i, e in enumerate(examples) if e.label == label]
        quota = size // len(labels) + (1 if position < size % len(labels) else 0)
        chosen.update(rng.sample(indices, min(quota, len(indices))))
    return [e for i, e in enumerate(examples) if i in chosen]


def race(a: str = "white", b: str = "black", *, seed: int = 0) -> FeatureDataset:
    """The built-in race feature for one pair of classes among "white", "black" and "asian".

    Sentences from public-domain novels and WikiText-2 (CC BY-SA 3.0) with exactly one race word of
    `RACE_WORDS`; the factual target is that word, the counterfactual the aligned word of the other class
    ("black man" -> "white man", "Africa" -> "Europe"). Class `a` maps to +1. Sentences are split 70/10/20 per
    class (seeded), and every sentence gives one example of each class of the pair (counterfactual
    augmentation: the label is the class of the factual word, so the classes stay balanced).

    The sources say little about race: the shipped file has 117 "white", 18 "black" and 10 "asian" sentences
    (see `data/ATTRIBUTION.md`), 145 contexts in all. For serious use, mine a larger corpus with `from_corpus`
    (note that it keeps "white"/"black" in every sense, colours included).

    Raises:
        FeatureDataError: If a class is unknown or `a == b`.
    """
    return _word_feature("race", RACE_WORDS, a, b, seed=seed)


def religion(a: str = "christian", b: str = "muslim", *, seed: int = 0) -> FeatureDataset:
    """The built-in religion feature for one pair of classes among "christian", "jewish" and "muslim".

    Built like `race` from `RELIGION_WORDS` ("church" -> "mosque"); class `a` maps to +1.

    The corpus is 19th-century fiction plus one slice of Wikipedia: the shipped file has 428 "christian", 36
    "jewish" and only 6 "muslim" sentences (see `data/ATTRIBUTION.md`). With counterfactual augmentation every
    one of the 470 contexts serves both classes, but most contexts were written about Christianity; use
    `from_corpus` on your own texts for real work.

    Raises:
        FeatureDataError: If a class is unknown or `a == b`.
    """
    return _word_feature("religion", RELIGION_WORDS, a, b, seed=seed)


def _word_feature(
    attribute: str, class_words: Mapping[str, Sequence[str]], a: str, b: str, *, seed: int
) -> FeatureDataset:
    for value in (a, b):
        if value not in class_words:
            raise FeatureDataError(
                f"Unknown {attribute} class {value!r}; expected one of {list(class_words)}."
            )
    if a == b:
        raise FeatureDataError(
            f"{attribute}({a!r}, {b!r}) needs two different classes, e.g. {list(class_words)[:2]}."
        )
    # Counterfactual augmentation: every mined context (of any class of the attribute) yields one example per
    # class of the pair, with that class's aligned word as the factual target. The label is the class of the
    # factual word, so both classes get the same contexts and the data stay balanced however rare a class is
    # in the corpus. Splitting by sentence first keeps both versions of a context in the same split.
    rng = random.Random(seed)
    by_class: dict[str, list[dict[str, str]]] = {label: [] for label in class_words}
    for row in _sentences(attribute):
        by_class[row["class"]].append(row)
    splits: dict[str, list[FeatureExample]] = {"train": [], "validation": [], "test": []}
    for label in sorted(by_class):
        words = class_words[label]
        for split, rows in zip(splits, _split_three(by_class[label], rng)):
            for row in rows:
                if row["word"].lower() not in words:
                    raise FeatureDataError(
                        f"The shipped {attribute} sentence {row['text']!r} has word {row['word']!r}, which is not "
                        f"a {label!r} word of {attribute.upper()}_WORDS; rebuild the data with build_data."
                    )
                position = words.index(row["word"].lower())
                word_of = {c: match_case(class_words[c][position], row["word"]) for c in (a, b)}
                meta = {"source": row["source"], "context_class": label}
                splits[split].append(FeatureExample(row["text"], word_of[a], word_of[b], a, meta))
                splits[split].append(FeatureExample(row["text"], word_of[b], word_of[a], b, meta))
    return FeatureDataset(
        name=attribute,
        classes=(a, b),
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        description=(
            f"Sentences with one {attribute} word from public-domain novels and WikiText-2; each context appears "
            f"once with the {a} word and once with the aligned {b} word as the factual target (counterfactual "
            "augmentation), split by sentence."
        ),
        license="CC BY-SA 3.0 (WikiText-2 sentences); public domain (novels)",
    )


def from_corpus(
    texts: Iterable[str],
    class_words: Mapping[str, Sequence[str]],
    *,
    name: str = "custom",
    seed: int = 0,
) -> FeatureDataset:
    """Builds a feature from your own texts and two aligned word lists.

    Each text is split into sentences (`split_sentences`); sentences with exactly one class word and at least
    four words before it become examples (see `mine_word_slots`), split 70/10/20 per class (seeded). The first
    class of `class_words` maps to +1.

    Example:
        >>> words = {"christian": ["christian", "church"], "muslim": ["muslim", "mosque"]}
        >>> feature = from_corpus(open("corpus.txt").read().split("\\n\\n"), words, name="religion")

    Raises:
        FeatureDataError: If the word lists are malformed or too few sentences are found for a class.
    """
    if isinstance(texts, str):
        raise FeatureDataError("from_corpus expects an iterable of texts, found one str; wrap it in a list.")
    sentences = [sentence for text in texts for sentence in split_sentences(text)]
    examples = mine_word_slots(sentences, class_words)
    counts = {label: sum(e.label == label for e in examples) for label in class_words}
    if min(counts.values()) < 2:
        raise FeatureDataError(
            f"Found too few sentences per class for {name!r} in {len(sentences)} sentences: {counts} (need "
            "at least 2 each; a sentence counts when it has exactly one class word and 4+ words before it). "
            "Add text or words."
        )
    classes = tuple(class_words)
    return FeatureDataset.from_examples(examples, name=name, classes=(classes[0], classes[1]), seed=seed)


def neutral_texts(limit: int | None = None) -> list[str]:
    """Sentences from WikiText-2 (CC BY-SA 3.0) with no gender, race or religion words, e.g. for LM scores.

    Args:
        limit: Return only the first `limit` sentences.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise FeatureDataError(f"limit must be None or a non-negative int, found {limit!r}.")
    lines = [line for line in _data_text("neutral.txt").splitlines() if line.strip()]
    return lines if limit is None else lines[:limit]


_SPEC_FORMS = (
    '"gender", "race", "race:white,black", "religion", "religion:christian,muslim", '
    "or a path to a .csv or .jsonl file of examples"
)


def load_feature(spec: str, *, seed: int = 0) -> FeatureDataset:
    """Loads a feature from a short spec, as the command line gives it.

    Args:
        spec: "gender"; "race" or "race:A,B"; "religion" or "religion:A,B"; or the path of a .csv or .jsonl
            file with columns text, factual, counterfactual, label (and optionally split).
        seed: Seed of the splits.

    Raises:
        FeatureDataError: If the spec has none of these forms or the file is malformed.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise FeatureDataError(
            f"Feature spec must be a non-empty str, found {spec!r}; expected {_SPEC_FORMS}."
        )
    spec = spec.strip()
    suffix = Path(spec).suffix.lower()
    if suffix in (".csv", ".jsonl"):
        path = Path(spec)
        if not path.is_file():
            raise FeatureDataError(f"Feature file {path} does not exist.")
        return (
            FeatureDataset.from_csv(path, seed=seed)
            if suffix == ".csv"
            else FeatureDataset.from_jsonl(path, seed=seed)
        )
    attribute, _, pair = spec.partition(":")
    if attribute == "gender" and not pair:
        return gender(seed=seed)
    if attribute in ("race", "religion"):
        build = race if attribute == "race" else religion
        if not pair:
            return build(seed=seed)
        classes = [c.strip() for c in pair.split(",")]
        if len(classes) != 2:
            raise FeatureDataError(f"Feature spec {spec!r} must name two classes, like {attribute}:A,B.")
        return build(classes[0], classes[1], seed=seed)
    raise FeatureDataError(f"Unknown feature spec {spec!r}; expected {_SPEC_FORMS}.")


__all__ = [
    "GENDER_PRONOUNS",
    "RACE_WORDS",
    "RELIGION_WORDS",
    "from_corpus",
    "gender",
    "load_feature",
    "neutral_texts",
    "race",
    "religion",
]
