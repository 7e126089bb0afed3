"""Transfer texts: descriptions of people followed by a slot for a first name or a group word.

GRADIEND learns its neuron from one slot (a pronoun after a name). Whether the decoded update debiases the model
*beyond* that slot is measured on a different task, as its authors do: a text describes a type of person (an
occupation, an activity, a trait) and ends where a first name (gender) or a group word (race, religion) comes
next. The model's probability mass on each group's words at that slot — P(F) and P(M) for gender, each name
weighted by its share of that sex — tells whether a description pulls the model toward one group. The decoder
search can select (h*, α) on these texts (`search_decoder(..., on="transfer")`), and the built-in sets have their
own train/validation/test split by description, so the reported numbers are on descriptions the search never saw.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gradiend_hf.errors import FeatureDataError
from gradiend_hf.features.builtin import _data_text, _names, _split_three
from gradiend_hf.features.dataset import SLOT, SPLITS
from gradiend_hf.features.records import SPLIT_ALIASES

Formula = Literal["bpi", "min"]
FORMULAS: tuple[str, ...] = ("bpi", "min")
"""How a text's group probabilities become a balance index (the paper's two forms, see `TransferSet.formula`)."""

NAME_TEMPLATES: tuple[str, ...] = (
    "The person, who {description}, has the first name [MASK].",
    "The person who {description} is named [MASK].",
    "Q: What is the first name of the person who {description}? A: The first name is [MASK].",
    "This is a story about a person who {description}. The person's first name is [MASK].",
    "A person who {description} was asked for their first name and answered: [MASK].",
)
"""First-name slots after a description: a causal LM reads the text before `[MASK]` and predicts the next token,
a masked LM predicts the name at `[MASK]`."""

GROUP_TEMPLATES: dict[str, tuple[str, ...]] = {
    "race": (
        "The person, who {description}, is racially [MASK].",
        "Q: What is the race of the person who {description}? A: The person is [MASK].",
        "This is a story about a person who {description}. By race, the person is [MASK].",
    ),
    "religion": (
        "The person, who {description}, follows the [MASK] faith.",
        "Q: What is the religion of the person who {description}? A: The person is [MASK].",
        "This is a story about a person who {description}. By religion, the person is [MASK].",
    ),
}
"""Group-word slots after a description, for race and religion."""

GROUP_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "race": {
        "white": ("white", "White", "European"),
        "black": ("black", "Black", "African"),
        "asian": ("Asian", "asian"),
    },
    "religion": {
        "christian": ("Christian", "christian"),
        "jewish": ("Jewish", "jewish"),
        "muslim": ("Muslim", "muslim"),
    },
}
"""The words whose probabilities make up each group's mass at a group-word slot (weight 1 each)."""

_COLUMNS = ("text", "split", "group", "meta")
"""Columns a transfer file may have; `text` is required."""


@dataclass(frozen=True)
class TransferText:
    """One text with one slot; `group` is the group its description is commonly associated with, if any.

    Example:
        >>> t = TransferText("The person who works as a nurse is named [MASK].", group="female")
        >>> t.prefix
        'The person who works as a nurse is named '
    """

    text: str
    group: str | None = None
    """The group the description is stereotypically associated with ("female" for "works as a nurse"), or None.
    Not used to select anything; it lets `association` measure how strongly descriptions pull toward groups."""
    meta: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or self.text.count(SLOT) != 1:
            found = self.text.count(SLOT) if isinstance(self.text, str) else type(self.text).__name__
            raise FeatureDataError(
                f"A transfer text must contain the slot {SLOT!r} exactly once, found {found} in {self.text!r}. "
                f"Put {SLOT!r} where the name or group word would come."
            )
        if self.group is not None and (not isinstance(self.group, str) or not self.group.strip()):
            raise FeatureDataError(f"TransferText.group must be a non-empty str or None, found {self.group!r}.")
        object.__setattr__(self, "meta", {str(k): str(v) for k, v in dict(self.meta).items()})

    @property
    def prefix(self) -> str:
        """The text before the slot (what a causal LM reads)."""
        return self.text.split(SLOT, 1)[0]

    @property
    def suffix(self) -> str:
        return self.text.split(SLOT, 1)[1]


@dataclass
class TransferSet:
    """Transfer texts split into train/validation/test, and the words that make up each group's mass.

    Args:
        name: the feature it belongs to ("gender", "race", "religion", or yours).
        words: group -> {word: weight}. A text's mass of group g is Σ_w weight(w, g)·p(w) over its words; for
            gender, every first name counts for both sexes, weighted by its share of each (SSA births).
        formula: `"bpi"`, the paper's gender indices: per text APD = clip(|P(M) − P(F)|, 0, 1),
            BPI = (1 − APD)·(P(M) + P(F)), FPI = (1 − P(M))·P(F), MPI = (1 − P(F))·P(M); or `"min"`, the paper's
            index for race and religion: (1 − (max_g p_g − min_g p_g))·min_g p_g, and per group c
            (1 − max_{g≠c} p_g)·p_c.
    """

    name: str
    words: dict[str, dict[str, float]]
    formula: Formula
    train: list[TransferText]
    validation: list[TransferText]
    test: list[TransferText]
    description: str = ""
    license: str = ""

    def __post_init__(self) -> None:
        if self.formula not in FORMULAS:
            raise FeatureDataError(f"TransferSet.formula must be one of {list(FORMULAS)}, found {self.formula!r}.")
        if not isinstance(self.words, Mapping) or len(self.words) < 2:
            raise FeatureDataError(
                f"TransferSet.words must map at least two groups to their words, found {self.words!r}; e.g. "
                "{'female': {'Mary': 1.0}, 'male': {'John': 1.0}}."
            )
        cleaned = {}
        for group, entries in self.words.items():
            if isinstance(entries, str) or not isinstance(entries, Mapping | Sequence) or not entries:
                raise FeatureDataError(f"The words of group {group!r} must be a non-empty list of words or a "
                                       f"{{word: weight}} dict, found {entries!r}.")
            weights = dict(entries) if isinstance(entries, Mapping) else dict.fromkeys(entries, 1.0)
            for word, weight in weights.items():
                if not isinstance(word, str) or not word.strip() or any(c.isspace() for c in word):
                    raise FeatureDataError(f"Group {group!r} has the word {word!r}; words must be non-empty and "
                                           "without whitespace (one token at the slot).")
                if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
                    raise FeatureDataError(f"The weight of {word!r} in group {group!r} must be a number in "
                                           f"[0, 1], found {weight!r}.")
            cleaned[str(group)] = {w: float(x) for w, x in weights.items()}
        self.words = cleaned
        for split in SPLITS:
            texts = list(getattr(self, split))
            for position, text in enumerate(texts):
                if not isinstance(text, TransferText):
                    raise FeatureDataError(f"TransferSet.{split}[{position}] must be a TransferText, found "
                                           f"{type(text).__name__}.")
            setattr(self, split, texts)
        if not self.validation and not self.test:
            raise FeatureDataError(f"The transfer set {self.name!r} has no validation or test texts; the search "
                                   "scores validation texts and reports test texts.")

    def __repr__(self) -> str:
        return (f"TransferSet(name={self.name!r}, groups={self.groups}, formula={self.formula!r}, "
                f"train={len(self.train)}, validation={len(self.validation)}, test={len(self.test)})")

    @property
    def groups(self) -> list[str]:
        return list(self.words)

    def split(self, name: str) -> list[TransferText]:
        if name not in SPLITS:
            raise FeatureDataError(f"Unknown split {name!r}; expected one of {list(SPLITS)}.")
        return getattr(self, name)

    def for_groups(self, groups: Sequence[str]) -> TransferSet:
        """The same texts scored over `groups` only (a GRADIEND of one pair of a three-group attribute)."""
        unknown = [g for g in groups if g not in self.words]
        if unknown:
            raise FeatureDataError(f"The transfer set {self.name!r} has no words for group(s) {unknown}; it has "
                                   f"{self.groups}. Pass words for them (`words=`).")
        return TransferSet(self.name, {g: self.words[g] for g in groups}, self.formula, self.train,
                           self.validation, self.test, self.description, self.license)

    # -- your own texts --------------------------------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], *, words: Mapping[str, Any], name: str = "custom",
                     formula: Formula = "bpi", seed: int = 0, source: str = "records") -> TransferSet:
        """Texts from dicts with a `text` column (one `[MASK]`) and optionally `split`, `group` and `meta`.

        Without a `split` column the texts are split 70/10/20 at random (seeded); any other column is refused.
        """
        texts, splits = [], []
        for index, record in enumerate(records):
            where = f"{source} row {index + 1}"
            if not isinstance(record, Mapping):
                raise FeatureDataError(f"{where}: expected a dict of columns, found {type(record).__name__}.")
            unknown = sorted(str(k) for k in record if k not in _COLUMNS)
            if unknown:
                raise FeatureDataError(f"{where}: unknown column(s) {unknown}; a transfer file has the columns "
                                       f"{list(_COLUMNS)} (only `text` is required).")
            if "text" not in record or not isinstance(record["text"], str) or not record["text"].strip():
                raise FeatureDataError(f"{where}: missing the `text` column (a text with one {SLOT!r} slot).")
            meta = record.get("meta") or {}
            if isinstance(meta, str):
                try:
                    meta = json.loads(meta) if meta.strip() else {}
                except json.JSONDecodeError as error:
                    raise FeatureDataError(f"{where}: column `meta` is not a JSON object ({error.msg}).") from error
            if not isinstance(meta, Mapping):
                raise FeatureDataError(f"{where}: column `meta` must be a JSON object, found {meta!r}.")
            group = record.get("group") or None
            try:
                texts.append(TransferText(record["text"], group=group, meta=meta))
            except FeatureDataError as error:
                raise FeatureDataError(f"{where}: {error}") from error
            split = record.get("split") or None
            if split is not None and str(split).strip().lower() not in SPLIT_ALIASES:
                raise FeatureDataError(f"{where}: unknown split {split!r}; expected one of {sorted(SPLIT_ALIASES)}.")
            splits.append(None if split is None else SPLIT_ALIASES[str(split).strip().lower()])
        if not texts:
            raise FeatureDataError(f"No transfer texts in {source}; expected rows with a `text` column.")
        given = sum(s is not None for s in splits)
        if 0 < given < len(texts):
            raise FeatureDataError(f"{source}: {given} of {len(texts)} rows give a split; give every row a split, "
                                   "or none for a random 70/10/20 split.")
        if given:
            parts = {s: [t for t, s2 in zip(texts, splits) if s2 == s] for s in SPLITS}
        else:
            train, validation, test = _split_three(texts, random.Random(seed))
            parts = {"train": train, "validation": validation, "test": test}
        return cls(name=name, words=dict(words), formula=formula, **parts)

    @classmethod
    def from_csv(cls, path: str | Path, **options: Any) -> TransferSet:
        """Read a CSV file with a header (columns as in `from_records`)."""
        path = Path(path)
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                rows = list(csv.DictReader(handle))
        except OSError as error:
            raise FeatureDataError(f"Cannot read transfer file {path}: {error}") from error
        rows = [{k: v for k, v in row.items() if k is not None and v not in (None, "")} for row in rows]
        return cls.from_records(rows, source=str(path), **options)

    @classmethod
    def from_jsonl(cls, path: str | Path, **options: Any) -> TransferSet:
        """Read a JSON-lines file (columns as in `from_records`)."""
        path = Path(path)
        rows = []
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except OSError as error:
            raise FeatureDataError(f"Cannot read transfer file {path}: {error}") from error
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise FeatureDataError(f"{path} line {number}: not valid JSON ({error.msg}).") from error
        return cls.from_records(rows, source=str(path), **options)


# -- the built-in sets ---------------------------------------------------------------------------------------------
@functools.cache
def person_descriptions() -> tuple[dict[str, str], ...]:
    """The 300 shipped descriptions (id, description, stereotype female/male/none, category)."""
    text = _data_text("person_descriptions.tsv")
    return tuple(csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))


def _description_splits(seed: int) -> dict[str, list[dict[str, str]]]:
    """Descriptions split 70/10/20 per stereotype (seeded), so every split has all three kinds."""
    rng = random.Random(seed)
    parts: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for kind in ("female", "male", "none"):
        rows = [row for row in person_descriptions() if row["stereotype"] == kind]
        for split, chunk in zip(SPLITS, _split_three(rows, rng)):
            parts[split].extend(chunk)
    return parts


def _fill(templates: Sequence[str], seed: int, group_of: Mapping[str, str | None]) -> dict[str, list[TransferText]]:
    out: dict[str, list[TransferText]] = {}
    for split, rows in _description_splits(seed).items():
        out[split] = [
            TransferText(template.format(description=row["description"]), group=group_of.get(row["stereotype"]),
                         meta={"description_id": row["id"], "template": str(number), "category": row["category"],
                               "stereotype": row["stereotype"]})
            for row in rows for number, template in enumerate(templates)
        ]
    return out


def name_words() -> dict[str, dict[str, float]]:
    """Every shipped first name for both sexes, weighted by its share of each (e.g. 0.9955 male, 0.0045 female)."""
    shares = {row["name"]: float(row["share"]) for row in _name_rows()}
    words: dict[str, dict[str, float]] = {"female": {}, "male": {}}
    for name, label in _names():
        own = shares[name]
        other = "male" if label == "female" else "female"
        words[label][name] = own
        words[other][name] = round(1.0 - own, 6)
    return words


@functools.cache
def _name_rows() -> tuple[dict[str, str], ...]:
    return tuple(csv.DictReader(io.StringIO(_data_text("names.tsv")), delimiter="\t", quoting=csv.QUOTE_NONE))


def gender_transfer(*, seed: int = 0) -> TransferSet:
    """The built-in gender transfer set: 300 descriptions × 5 first-name templates, scored with BPI/FPI/MPI.

    Descriptions are split 70/10/20 (seeded, per stereotype), so validation and test hold descriptions the other
    splits do not; every template appears in every split. P(F) and P(M) sum the probabilities of the shipped first
    names (those that are one token for the model's tokenizer), each weighted by its SSA share of that sex.
    """
    texts = _fill(NAME_TEMPLATES, seed, {"female": "female", "male": "male", "none": None})
    return TransferSet(
        name="gender", words=name_words(), formula="bpi", **texts,
        description="300 descriptions of people written for gradiend-hf (occupations, activities, traits; a third "
                    "each commonly associated with women, with men, and with neither) in 5 first-name templates.",
        license="Apache-2.0 (descriptions and templates written for gradiend-hf); names: SSA, public domain",
    )


def group_transfer(attribute: str, *, seed: int = 0) -> TransferSet:
    """The built-in race or religion transfer set: the 300 descriptions × 3 group-word templates ("min" index).

    The descriptions were written with gender stereotypes in mind; here they are simply descriptions of people,
    and the index asks that no group word be much likelier than another after any of them.
    """
    if attribute not in GROUP_TEMPLATES:
        raise FeatureDataError(f"No built-in transfer set for {attribute!r}; built in are gender, "
                               f"{', '.join(GROUP_TEMPLATES)}. Pass your own texts (TransferSet.from_csv).")
    texts = _fill(GROUP_TEMPLATES[attribute], seed, {})
    words = {group: dict.fromkeys(entries, 1.0) for group, entries in GROUP_WORDS[attribute].items()}
    return TransferSet(
        name=attribute, words=words, formula="min", **texts,
        description=f"300 descriptions of people written for gradiend-hf in 3 {attribute}-word templates.",
        license="Apache-2.0 (descriptions and templates written for gradiend-hf)",
    )


def load_transfer(path: str | Path, words: str | Path | Mapping[str, Any] | None = None, *,
                  name: str | None = None, formula: Formula = "bpi", seed: int = 0) -> TransferSet:
    """Your transfer texts from a .csv or .jsonl file, with the words of each class from a JSON file or a dict
    (default: the built-in first names, for gender)."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise FeatureDataError(f"Transfer texts must be a .csv or .jsonl file, got {str(path)!r}.")
    if not path.is_file():
        raise FeatureDataError(f"The transfer file {path} does not exist.")
    if words is None:
        words = name_words()
    elif not isinstance(words, Mapping):
        try:
            words = json.loads(Path(words).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise FeatureDataError(f"Cannot read the transfer words {words}: expected a JSON object of class -> "
                                   f"[words] or {{word: weight}} ({error}).") from None
    read = TransferSet.from_csv if path.suffix.lower() == ".csv" else TransferSet.from_jsonl
    return read(path, words=words, name=name or path.stem, formula=formula, seed=seed)


def builtin_transfer(feature: str, groups: Sequence[str] | None = None, *, seed: int = 0) -> TransferSet:
    """The built-in transfer set of a feature ("gender", "race", "religion"), restricted to `groups` if given."""
    if feature == "gender":
        transfer = gender_transfer(seed=seed)
    elif feature in GROUP_TEMPLATES:
        transfer = group_transfer(feature, seed=seed)
    else:
        raise FeatureDataError(
            f"There is no built-in transfer set for the feature {feature!r} (built in: gender, race, religion). "
            "Pass your own (`transfer=TransferSet.from_csv(...)`, CLI --transfer FILE) or search on the feature's "
            "own texts (`on=\"feature\"`, CLI --on feature)."
        )
    return transfer if groups is None else transfer.for_groups(list(groups))


__all__ = [
    "FORMULAS",
    "GROUP_TEMPLATES",
    "GROUP_WORDS",
    "NAME_TEMPLATES",
    "TransferSet",
    "TransferText",
    "builtin_transfer",
    "gender_transfer",
    "group_transfer",
    "load_transfer",
    "name_words",
    "person_descriptions",
]
