"""Rows to feature examples: column checks, optional splits and `meta`, class resolution and the seeded split;
what every `FeatureDataset` loader (records, JSONL, CSV, pandas, 🤗 datasets) shares."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gradiend_hf.errors import FeatureDataError
from gradiend_hf.features.example import SPLITS, FeatureExample

# Split names accepted in files and `DatasetDict`s (Hugging Face datasets often say "valid" or "dev").
SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
}

# Columns every record must have; `split` and `meta` are optional, any other column goes into `meta`.
REQUIRED_COLUMNS = ("text", "factual", "counterfactual", "label")


def dataset_from_rows(
    cls: type,
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
) -> Any:
    """Shared body of the loaders; each row comes with a name ("data.csv line 3") for error messages. `cls` is
    `FeatureDataset`, passed in so that this lower layer does not import it."""
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
            f"No examples in {source}; expected rows with columns {list(REQUIRED_COLUMNS)}."
        )
    resolved = resolve_classes(classes, [e.label for e in examples], where=source)
    with_split = sum(s is not None for s in given_splits)
    if with_split == 0:
        splits = random_split(
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
    for column in REQUIRED_COLUMNS:
        if column not in record:
            raise FeatureDataError(
                f"{row_name}: missing column {column!r}; found columns {sorted(map(str, record))}, expected "
                f"at least {list(REQUIRED_COLUMNS)}."
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
        if raw_split not in SPLIT_ALIASES:
            raise FeatureDataError(
                f"{row_name}: unknown split {record['split']!r}; expected one of {sorted(SPLIT_ALIASES)}."
            )
        split_name = SPLIT_ALIASES[raw_split]
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
        if key not in REQUIRED_COLUMNS and key not in ("split", "meta") and not _is_missing(value):
            meta[str(key)] = str(value)
    return meta


def resolve_classes(classes: Sequence[str] | None, labels: Sequence[str], *, where: str) -> tuple[str, str]:
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


def random_split(
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


__all__ = ["REQUIRED_COLUMNS", "SPLIT_ALIASES", "dataset_from_rows", "random_split", "resolve_classes"]
