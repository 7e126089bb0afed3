"""Feature examples (a text with one target slot) and two-class datasets with train/validation/test splits."""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradiend_hf.errors import FeatureDataError

SLOT = "[MASK]"
"""The one target slot in `FeatureExample.text`.

An MLM sees it replaced by its mask token; a causal LM sees only the text before it and predicts the
next token.
"""

SPLITS: tuple[str, str, str] = ("train", "validation", "test")
"""Split names, in the order `FeatureDataset` stores them."""

# Split names accepted in files and `DatasetDict`s (Hugging Face datasets often say "valid" or "dev").
_SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
}

# Columns every record must have; `split` and `meta` are optional, any other column goes into `meta`.
_REQUIRED_COLUMNS = ("text", "factual", "counterfactual", "label")


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


@dataclass
class FeatureDataset:
    """A two-class feature: examples split into train, validation and test.

    `classes[0]` is the class the GRADIEND encoder is trained to map to +1, `classes[1]` the one it maps to
    -1. Train must hold examples of both classes and test must not be empty; validation may be empty.

    Example:
        >>> records = [{"text": "Mary said [MASK] was tired.", "factual": "she", "counterfactual": "he",
        ...             "label": "female"}, ...]
        >>> ds = FeatureDataset.from_records(records, name="toy", classes=("female", "male"))
    """

    name: str
    """Short name of the feature, e.g. "gender"; stored in the model config."""

    classes: tuple[str, str]
    """The two classes; `classes[0]` maps to +1, `classes[1]` to -1."""

    train: list[FeatureExample]
    validation: list[FeatureExample]
    test: list[FeatureExample]
    description: str = ""
    """One or two sentences on what the data is and where it comes from."""

    license: str = ""
    """Licence of the texts (e.g. "CC BY-SA 3.0"), carried into model cards."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise FeatureDataError(f"FeatureDataset.name must be a non-empty str, found {self.name!r}.")
        classes = tuple(self.classes) if isinstance(self.classes, (list, tuple)) else None
        if (
            classes is None
            or len(classes) != 2
            or not all(isinstance(c, str) and c.strip() for c in classes)
            or classes[0] == classes[1]
        ):
            raise FeatureDataError(
                f"FeatureDataset.classes must be two distinct non-empty class names, found {self.classes!r}. "
                "GRADIEND learns one neuron for two classes; for more, build one dataset per pair."
            )
        self.classes = (classes[0], classes[1])
        for split_name in SPLITS:
            examples = getattr(self, split_name)
            if not isinstance(examples, list):
                examples = list(examples)
                setattr(self, split_name, examples)
            for position, example in enumerate(examples):
                if not isinstance(example, FeatureExample):
                    raise FeatureDataError(
                        f"FeatureDataset.{split_name}[{position}] must be a FeatureExample, found "
                        f"{type(example).__name__}. Use FeatureDataset.from_records for dicts."
                    )
                if example.label not in self.classes:
                    raise FeatureDataError(
                        f"FeatureDataset.{split_name}[{position}] has label {example.label!r}, expected one "
                        f"of {list(self.classes)} (text {example.text!r})."
                    )
        missing = [c for c in self.classes if not any(example.label == c for example in self.train)]
        if missing:
            raise FeatureDataError(
                f"The train split of {self.name!r} has no example of class {missing[0]!r} ({len(self.train)} "
                "train examples); GRADIEND needs both classes to train. Add examples of it."
            )
        if not self.test:
            raise FeatureDataError(
                f"The test split of {self.name!r} is empty; the encoder is evaluated on it. "
                "Give some rows split='test', or leave out the split column for a random split."
            )

    def __len__(self) -> int:
        return len(self.train) + len(self.validation) + len(self.test)

    def __repr__(self) -> str:
        # The dataclass repr would print thousands of examples.
        return (
            f"FeatureDataset(name={self.name!r}, classes={self.classes!r}, train={len(self.train)}, "
            f"validation={len(self.validation)}, test={len(self.test)})"
        )

    def split(self, name: str) -> list[FeatureExample]:
        """Returns the examples of split `name` ("train", "validation" or "test")."""
        if name not in SPLITS:
            raise FeatureDataError(f"Unknown split {name!r}; expected one of {list(SPLITS)}.")
        return getattr(self, name)

    def by_class(self, split: str) -> dict[str, list[FeatureExample]]:
        """Returns the examples of `split` grouped by class, with a (possibly empty) list for each class."""
        groups: dict[str, list[FeatureExample]] = {c: [] for c in self.classes}
        for example in self.split(split):
            groups[example.label].append(example)
        return groups

    def label_value(self, label: str) -> float:
        """Returns the encoder target of a class: +1.0 for `classes[0]`, -1.0 for `classes[1]`."""
        if label == self.classes[0]:
            return 1.0
        if label == self.classes[1]:
            return -1.0
        raise FeatureDataError(
            f"Unknown class {label!r} for feature {self.name!r}; expected one of {list(self.classes)}."
        )

    def targets(self) -> dict[str, list[str]]:
        """Returns the sorted factual words per class over all splits: {"female": ["she"], "male": ["he"]}."""
        words: dict[str, set[str]] = {c: set() for c in self.classes}
        for split_name in SPLITS:
            for example in getattr(self, split_name):
                words[example.label].add(example.factual)
        return {c: sorted(words[c]) for c in self.classes}

    def spec(self) -> dict[str, Any]:
        """Returns the JSON-able description of the feature that goes into a GRADIEND model config."""
        return {"name": self.name, "classes": list(self.classes), "targets": self.targets()}

    def summary(self) -> dict[str, dict[str, int]]:
        """Returns the number of examples per split and class: {"train": {"female": 16, "male": 16}, ...}."""
        return {s: {c: len(examples) for c, examples in self.by_class(s).items()} for s in SPLITS}

    def to_records(self) -> list[dict[str, str]]:
        """Returns one flat dict per example: text, factual, counterfactual, label, split and meta (JSON)."""
        records = []
        for split_name in SPLITS:
            for example in getattr(self, split_name):
                records.append(
                    {
                        "text": example.text,
                        "factual": example.factual,
                        "counterfactual": example.counterfactual,
                        "label": example.label,
                        "split": split_name,
                        "meta": json.dumps(dict(example.meta), sort_keys=True, ensure_ascii=False),
                    }
                )
        return records

    def save_jsonl(self, path: str | Path) -> Path:
        """Writes `to_records()` as JSON lines (UTF-8); `from_jsonl` reads it back with the same splits."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            for record in self.to_records():
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path

    # ------------------------------------------------------------------------------------------------ loaders

    @classmethod
    def from_examples(
        cls,
        examples: Iterable[FeatureExample],
        *,
        name: str,
        classes: Sequence[str] | None = None,
        seed: int = 0,
        validation_fraction: float = 0.1,
        test_fraction: float = 0.2,
        description: str = "",
        license: str = "",
    ) -> FeatureDataset:
        """Splits examples at random (seeded, stratified by label) into train, validation and test.

        Args:
            examples: The examples; their order within each split is kept.
            name: Name of the feature.
            classes: The two classes, first maps to +1; defaults to the sorted labels.
            seed: Seed of the split; the same seed gives the same split.
            validation_fraction: Share of each class that goes to validation.
            test_fraction: Share of each class that goes to test.
            description: Stored on the dataset.
            license: Stored on the dataset.

        Raises:
            FeatureDataError: If there are not exactly two classes or the fractions are out of range.
        """
        examples = list(examples)
        resolved = _resolve_classes(classes, [e.label for e in examples], where=f"feature {name!r}")
        splits = _random_split(
            examples, seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction
        )
        return cls(name=name, classes=resolved, description=description, license=license, **splits)

    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        *,
        name: str,
        classes: Sequence[str] | None = None,
        seed: int = 0,
        validation_fraction: float = 0.1,
        test_fraction: float = 0.2,
        description: str = "",
        license: str = "",
    ) -> FeatureDataset:
        """Builds a dataset from dicts with columns text, factual, counterfactual, label (and split, meta).

        With a `split` column ("train", "validation"/"valid"/"dev", "test") on every record, the splits are
        taken as given; without it, the records are split at random (seeded, stratified by label). `meta` may
        be a dict or a JSON string; any other column is kept in `meta` as a string.

        Args:
            records: The rows.
            name: Name of the feature.
            classes: The two classes, first maps to +1; defaults to the sorted labels.
            seed: Seed of the random split (unused when records have a split column).
            validation_fraction: Share of each class for validation in a random split.
            test_fraction: Share of each class for test in a random split.
            description: Stored on the dataset.
            license: Stored on the dataset.

        Raises:
            FeatureDataError: If a column is missing, a value is malformed, or only some rows give a split.
        """
        rows = ((f"record {index}", record) for index, record in enumerate(records))
        return _from_rows(
            cls,
            rows,
            source="records",
            name=name,
            classes=classes,
            seed=seed,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            description=description,
            license=license,
        )

    @classmethod
    def from_jsonl(cls, path: str | Path, *, name: str | None = None, **options: Any) -> FeatureDataset:
        """Reads a JSON-lines file of records; `name` defaults to the stem; options as in `from_records`."""
        path = Path(path)
        rows = []
        try:
            with path.open(encoding="utf-8-sig") as handle:
                for line_number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise FeatureDataError(
                            f"{path} line {line_number}: not valid JSON ({error.msg})."
                        ) from error
                    rows.append((f"{path} line {line_number}", record))
        except OSError as error:
            raise FeatureDataError(f"Cannot read feature file {path}: {error}") from error
        return _from_rows(cls, rows, source=str(path), name=name or path.stem, **options)

    @classmethod
    def from_csv(cls, path: str | Path, *, name: str | None = None, **options: Any) -> FeatureDataset:
        """Reads a CSV file with a header row; `name` defaults to the stem; options as in `from_records`."""
        path = Path(path)
        rows = []
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                reader = csv.DictReader(handle)
                if reader.fieldnames is None:
                    raise FeatureDataError(
                        f"{path} is empty; expected a header with {list(_REQUIRED_COLUMNS)}."
                    )
                missing = [c for c in _REQUIRED_COLUMNS if c not in reader.fieldnames]
                if missing:
                    raise FeatureDataError(
                        f"{path} lacks the column(s) {missing}; its header is {reader.fieldnames}, expected "
                        f"at least {list(_REQUIRED_COLUMNS)}."
                    )
                for row in reader:
                    # line_num is the last physical line read: a row with quoted newlines is named by its end.
                    rows.append(
                        (f"{path} line {reader.line_num}", {k: v for k, v in row.items() if k is not None})
                    )
        except OSError as error:
            raise FeatureDataError(f"Cannot read feature file {path}: {error}") from error
        return _from_rows(cls, rows, source=str(path), name=name or path.stem, **options)

    @classmethod
    def from_pandas(cls, df: Any, *, name: str, **options: Any) -> FeatureDataset:
        """Builds a dataset from a pandas DataFrame with the columns of `from_records` (NaN = missing)."""
        if not hasattr(df, "to_dict") or not hasattr(df, "columns"):
            raise FeatureDataError(f"from_pandas expects a pandas DataFrame, found {type(df).__name__}.")
        rows = ((f"DataFrame row {index}", record) for index, record in enumerate(df.to_dict("records")))
        return _from_rows(cls, rows, source="DataFrame", name=name, **options)

    @classmethod
    def from_hf_dataset(cls, ds: Any, *, name: str, **options: Any) -> FeatureDataset:
        """Builds a dataset from a Hugging Face `datasets.Dataset` or `DatasetDict`.

        A `Dataset` needs the columns of `from_records` (with a `split` column, or it is split at random). A
        `DatasetDict` gives the splits by its keys: "train", "test" and optionally "validation"
        ("valid"/"dev"). `options` are those of `from_records`.
        """
        if isinstance(ds, Mapping):
            unknown = [key for key in ds if key not in _SPLIT_ALIASES]
            if unknown:
                raise FeatureDataError(
                    f"DatasetDict has split(s) {unknown}; expected keys among {sorted(_SPLIT_ALIASES)}. "
                    "Drop or rename the others."
                )
            rows = [
                (f"DatasetDict[{key!r}] row {index}", {**dict(row), "split": _SPLIT_ALIASES[key]})
                for key in ds
                for index, row in enumerate(ds[key])
            ]
            return _from_rows(cls, rows, source="DatasetDict", name=name, **options)
        if not hasattr(ds, "column_names"):
            raise FeatureDataError(
                f"from_hf_dataset expects a datasets.Dataset or DatasetDict, found {type(ds).__name__}."
            )
        rows = ((f"Dataset row {index}", dict(row)) for index, row in enumerate(ds))
        return _from_rows(cls, rows, source="Dataset", name=name, **options)


def _from_rows(
    cls: type[FeatureDataset],
    rows: Iterable[tuple[str, Any]],
    *,
    source: str,
    name: str,
    classes: Sequence[str] | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    description: str = "",
    license: str = "",
) -> FeatureDataset:
    """Shared body of the loaders; each row comes with a name ("data.csv line 3") for error messages."""
    examples: list[FeatureExample] = []
    given_splits: list[str | None] = []
    row_names: list[str] = []
    for row_name, record in rows:
        example, split_name = _example_from_record(record, row_name)
        examples.append(example)
        given_splits.append(split_name)
        row_names.append(row_name)
    if not examples:
        raise FeatureDataError(
            f"No examples in {source}; expected rows with columns {list(_REQUIRED_COLUMNS)}."
        )
    resolved = _resolve_classes(classes, [e.label for e in examples], where=source)
    with_split = sum(s is not None for s in given_splits)
    if with_split == 0:
        splits = _random_split(
            examples, seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction
        )
    elif with_split == len(examples):
        splits = {s: [] for s in SPLITS}
        for example, split_name in zip(examples, given_splits, strict=True):
            splits[split_name].append(example)  # type: ignore[index]
    else:
        first_missing = row_names[given_splits.index(None)]
        raise FeatureDataError(
            f"{source}: {with_split} of {len(examples)} rows give a split, but {first_missing} does not. "
            "Give every row a split, or drop the split column for a random split."
        )
    return cls(name=name, classes=resolved, description=description, license=license, **splits)


def _is_missing(value: Any) -> bool:
    # pandas writes missing cells as float NaN; CSV as "".
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value)
    )


def _example_from_record(record: Mapping[str, Any], row_name: str) -> tuple[FeatureExample, str | None]:
    if not isinstance(record, Mapping):
        raise FeatureDataError(f"{row_name}: expected a dict of columns, found {type(record).__name__}.")
    values: dict[str, str] = {}
    for column in _REQUIRED_COLUMNS:
        if column not in record:
            raise FeatureDataError(
                f"{row_name}: missing column {column!r}; found columns {sorted(map(str, record))}, expected "
                f"at least {list(_REQUIRED_COLUMNS)}."
            )
        value = record[column]
        if _is_missing(value) or not isinstance(value, str):
            raise FeatureDataError(
                f"{row_name}: column {column!r} must be a non-empty string, found {value!r}."
            )
        values[column] = value.strip() if column != "text" else value
    split_name = None
    if "split" in record and not _is_missing(record["split"]):
        raw_split = str(record["split"]).strip().lower()
        if raw_split not in _SPLIT_ALIASES:
            raise FeatureDataError(
                f"{row_name}: unknown split {record['split']!r}; expected one of {sorted(_SPLIT_ALIASES)}."
            )
        split_name = _SPLIT_ALIASES[raw_split]
    meta = _meta_from_record(record, row_name)
    try:
        example = FeatureExample(meta=meta, **values)
    except FeatureDataError as error:
        raise FeatureDataError(f"{row_name}: {error}") from error
    return example, split_name


def _meta_from_record(record: Mapping[str, Any], row_name: str) -> dict[str, str]:
    """Reads the optional `meta` column (dict or JSON object) plus any extra column, all as strings."""
    raw = record.get("meta")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError as error:
            raise FeatureDataError(
                f"{row_name}: column 'meta' is not a JSON object ({error.msg})."
            ) from error
    if _is_missing(raw):
        raw = {}
    if not isinstance(raw, Mapping):
        raise FeatureDataError(f"{row_name}: column 'meta' must be a dict or JSON object, found {raw!r}.")
    meta = {str(key): str(value) for key, value in raw.items() if not _is_missing(value)}
    for key, value in record.items():
        if key not in _REQUIRED_COLUMNS and key not in ("split", "meta") and not _is_missing(value):
            meta[str(key)] = str(value)
    return meta


def _resolve_classes(classes: Sequence[str] | None, labels: Sequence[str], *, where: str) -> tuple[str, str]:
    found = sorted(set(labels))
    if classes is None:
        if len(found) != 2:
            raise FeatureDataError(
                f"{where}: expected exactly two classes, found {len(found)}: {found}. GRADIEND learns one "
                "neuron for two classes; keep the rows of two classes (one dataset per pair)."
            )
        return found[0], found[1]
    if isinstance(classes, str) or len(classes) != 2 or classes[0] == classes[1]:
        raise FeatureDataError(f"{where}: classes must be two distinct class names, found {classes!r}.")
    unknown = [label for label in found if label not in classes]
    if unknown:
        raise FeatureDataError(
            f"{where}: label(s) {unknown} are not among classes {list(classes)}. Fix the labels or the "
            "classes."
        )
    return classes[0], classes[1]


def _random_split(
    examples: Sequence[FeatureExample], *, seed: int, validation_fraction: float, test_fraction: float
) -> dict[str, list[FeatureExample]]:
    """Splits each class separately, so that every split has (about) the class proportions of the whole."""
    if not (
        0.0 <= validation_fraction < 1.0
        and 0.0 < test_fraction < 1.0
        and validation_fraction + test_fraction < 1.0
    ):
        raise FeatureDataError(
            "Split fractions must satisfy 0 <= validation_fraction, 0 < test_fraction and their sum < 1; "
            f"found validation_fraction={validation_fraction}, test_fraction={test_fraction}."
        )
    rng = random.Random(seed)
    assignment: dict[int, str] = {}
    for label in sorted({e.label for e in examples}):
        indices = [i for i, e in enumerate(examples) if e.label == label]
        rng.shuffle(indices)
        n_test = round(test_fraction * len(indices))
        n_validation = round(validation_fraction * len(indices))
        for position, index in enumerate(indices):
            if position < n_test:
                assignment[index] = "test"
            elif position < n_test + n_validation:
                assignment[index] = "validation"
            else:
                assignment[index] = "train"
    splits: dict[str, list[FeatureExample]] = {s: [] for s in SPLITS}
    for index, example in enumerate(examples):
        splits[assignment[index]].append(example)
    return splits


__all__ = ["SLOT", "SPLITS", "FeatureDataset", "FeatureExample"]
