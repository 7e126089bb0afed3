"""Two-class feature datasets with train/validation/test splits, from examples, records or files."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradiend_hf.errors import FeatureDataError
from gradiend_hf.features.example import SLOT, SPLITS, FeatureExample
from gradiend_hf.features.records import (
    REQUIRED_COLUMNS,
    SPLIT_ALIASES,
    dataset_from_rows,
    random_split,
    resolve_classes,
)


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
        resolved = resolve_classes(classes, [e.label for e in examples], where=f"feature {name!r}")
        splits = random_split(
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
        return dataset_from_rows(
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
        return dataset_from_rows(cls, rows, source=str(path), name=name or path.stem, **options)

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
                        f"{path} is empty; expected a header with {list(REQUIRED_COLUMNS)}."
                    )
                missing = [c for c in REQUIRED_COLUMNS if c not in reader.fieldnames]
                if missing:
                    raise FeatureDataError(
                        f"{path} lacks the column(s) {missing}; its header is {reader.fieldnames}, expected "
                        f"at least {list(REQUIRED_COLUMNS)}."
                    )
                for row in reader:
                    # line_num is the last physical line read: a row with quoted newlines is named by its end.
                    rows.append(
                        (f"{path} line {reader.line_num}", {k: v for k, v in row.items() if k is not None})
                    )
        except OSError as error:
            raise FeatureDataError(f"Cannot read feature file {path}: {error}") from error
        return dataset_from_rows(cls, rows, source=str(path), name=name or path.stem, **options)

    @classmethod
    def from_pandas(cls, df: Any, *, name: str, **options: Any) -> FeatureDataset:
        """Builds a dataset from a pandas DataFrame with the columns of `from_records` (NaN = missing)."""
        if not hasattr(df, "to_dict") or not hasattr(df, "columns"):
            raise FeatureDataError(f"from_pandas expects a pandas DataFrame, found {type(df).__name__}.")
        rows = ((f"DataFrame row {index}", record) for index, record in enumerate(df.to_dict("records")))
        return dataset_from_rows(cls, rows, source="DataFrame", name=name, **options)

    @classmethod
    def from_hf_dataset(cls, ds: Any, *, name: str, **options: Any) -> FeatureDataset:
        """Builds a dataset from a Hugging Face `datasets.Dataset` or `DatasetDict`.

        A `Dataset` needs the columns of `from_records` (with a `split` column, or it is split at random). A
        `DatasetDict` gives the splits by its keys: "train", "test" and optionally "validation"
        ("valid"/"dev"). `options` are those of `from_records`.
        """
        if isinstance(ds, Mapping):
            unknown = [key for key in ds if key not in SPLIT_ALIASES]
            if unknown:
                raise FeatureDataError(
                    f"DatasetDict has split(s) {unknown}; expected keys among {sorted(SPLIT_ALIASES)}. "
                    "Drop or rename the others."
                )
            rows = [
                (f"DatasetDict[{key!r}] row {index}", {**dict(row), "split": SPLIT_ALIASES[key]})
                for key in ds
                for index, row in enumerate(ds[key])
            ]
            return dataset_from_rows(cls, rows, source="DatasetDict", name=name, **options)
        if not hasattr(ds, "column_names"):
            raise FeatureDataError(
                f"from_hf_dataset expects a datasets.Dataset or DatasetDict, found {type(ds).__name__}."
            )
        rows = ((f"Dataset row {index}", dict(row)) for index, row in enumerate(ds))
        return dataset_from_rows(cls, rows, source="Dataset", name=name, **options)


__all__ = ["SLOT", "SPLITS", "FeatureDataset", "FeatureExample"]
