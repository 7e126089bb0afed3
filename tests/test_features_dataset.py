"""Tests for gradiend_hf.features.dataset: FeatureExample, FeatureDataset and its loaders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from gradiend_hf.errors import FeatureDataError
from gradiend_hf.features.dataset import SLOT, FeatureDataset, FeatureExample


def _example(label: str = "female", i: int = 0, **changes: object) -> FeatureExample:
    words = {"female": ("she", "he"), "male": ("he", "she")}[label]
    fields = {
        "text": f"Person {i} ({label}) said that {SLOT} was tired.",
        "factual": words[0],
        "counterfactual": words[1],
    }
    fields.update(changes)
    return FeatureExample(label=label, **fields)  # type: ignore[arg-type]


def _records(n_per_class: int = 10, with_split: bool = False) -> list[dict[str, str]]:
    records = []
    for label in ("female", "male"):
        for i in range(n_per_class):
            ex = _example(label, i)
            record = {
                "text": ex.text,
                "factual": ex.factual,
                "counterfactual": ex.counterfactual,
                "label": label,
            }
            if with_split:
                record["split"] = ("train", "train", "train", "validation", "test")[i % 5]
            records.append(record)
    return records


# -------------------------------------------------------------------------------------------- FeatureExample


def test_example_prefix_suffix_and_filled() -> None:
    ex = FeatureExample("Mary said that [MASK]'d come. Then", "she", "he", "female", {"name": "Mary"})
    assert ex.prefix == "Mary said that "  # as written: the space decides how BPE tokenizers split the target
    assert ex.suffix == "'d come. Then"
    assert ex.filled("she") == "Mary said that she'd come. Then"
    assert ex.filled(ex.counterfactual) == "Mary said that he'd come. Then"


def test_example_meta_is_not_compared_and_is_copied() -> None:
    meta = {"name": "Mary"}
    a = FeatureExample("Mary said [MASK] was.", "she", "he", "female", meta)
    b = FeatureExample("Mary said [MASK] was.", "she", "he", "female", {"name": "Other"})
    assert a == b and hash(a) == hash(b)
    meta["name"] = "changed"
    assert a.meta == {"name": "Mary"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"text": "Mary said she was tired."}, "exactly once, found it 0 times"),
        ({"text": "[MASK] and [MASK]"}, "exactly once, found it 2 times"),
        ({"factual": ""}, "factual must be one non-empty word"),
        ({"counterfactual": "he is"}, "counterfactual must be one non-empty word"),
        ({"factual": "he"}, "must differ"),
        ({"label": "  "}, "label must be a non-empty class name"),
        ({"text": 3}, "text must be a str, found int"),
        ({"meta": {"count": 3}}, "meta must map str to str"),
    ],
)
def test_example_validation(fields: dict, message: str) -> None:
    base = {
        "text": "Mary said [MASK] was tired.",
        "factual": "she",
        "counterfactual": "he",
        "label": "female",
    }
    base.update(fields)
    with pytest.raises(FeatureDataError, match=message):
        FeatureExample(**base)


# -------------------------------------------------------------------------------------------- FeatureDataset


def _dataset() -> FeatureDataset:
    return FeatureDataset(
        name="toy",
        classes=("female", "male"),
        train=[
            _example("female", 0),
            _example("male", 1),
            _example("male", 2, factual="He", counterfactual="She"),
        ],
        validation=[],
        test=[_example("female", 3)],
    )


def test_dataset_accessors() -> None:
    ds = _dataset()
    assert len(ds) == 4
    assert ds.split("train") is ds.train
    assert ds.label_value("female") == 1.0 and ds.label_value("male") == -1.0
    assert ds.targets() == {"female": ["she"], "male": ["He", "he"]}
    assert ds.summary() == {
        "train": {"female": 1, "male": 2},
        "validation": {"female": 0, "male": 0},
        "test": {"female": 1, "male": 0},
    }
    assert [e.label for e in ds.by_class("train")["male"]] == ["male", "male"]
    spec = ds.spec()
    assert json.loads(json.dumps(spec)) == {
        "name": "toy",
        "classes": ["female", "male"],
        "targets": ds.targets(),
    }
    assert repr(ds) == "FeatureDataset(name='toy', classes=('female', 'male'), train=3, validation=0, test=1)"


def test_dataset_errors() -> None:
    ds = _dataset()
    with pytest.raises(
        FeatureDataError, match=r"Unknown split 'dev'; expected one of \['train', 'validation', 'test'\]"
    ):
        ds.split("dev")
    with pytest.raises(FeatureDataError, match="Unknown class 'other'"):
        ds.label_value("other")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"classes": ("female",)}, "two distinct non-empty class names"),
        ({"classes": ("female", "female")}, "two distinct non-empty class names"),
        ({"train": [_example("female", 0)]}, "no example of class 'male'"),
        ({"test": []}, "test split of 'toy' is empty"),
        (
            {"test": [FeatureExample("A said [MASK] was.", "she", "he", "other")]},
            r"has label 'other', expected one of \['female', 'male'\]",
        ),
        ({"validation": [{"text": "x"}]}, "must be a FeatureExample, found dict"),
        ({"name": ""}, "name must be a non-empty str"),
    ],
)
def test_dataset_validation(changes: dict, message: str) -> None:
    fields = {
        "name": "toy",
        "classes": ("female", "male"),
        "train": [_example("female", 0), _example("male", 1)],
        "validation": [],
        "test": [_example("female", 2)],
    }
    fields.update(changes)
    with pytest.raises(FeatureDataError, match=message):
        FeatureDataset(**fields)


# --------------------------------------------------------------------------------------------------- loaders


def test_from_records_honours_split_column_and_aliases() -> None:
    records = _records(5, with_split=True)
    records[3]["split"] = "dev"
    ds = FeatureDataset.from_records(records, name="toy")
    assert ds.classes == ("female", "male")
    assert [len(ds.train), len(ds.validation), len(ds.test)] == [6, 2, 2]
    assert ds.validation[0].text == records[3]["text"]


def test_from_records_random_split_is_stratified_and_seeded() -> None:
    records = _records(20)
    a = FeatureDataset.from_records(records, name="toy", seed=1)
    b = FeatureDataset.from_records(records, name="toy", seed=1)
    c = FeatureDataset.from_records(records, name="toy", seed=2)
    assert a.train == b.train and a.validation == b.validation and a.test == b.test
    assert a.test != c.test
    assert a.summary() == {
        "train": {"female": 14, "male": 14},
        "validation": {"female": 2, "male": 2},
        "test": {"female": 4, "male": 4},
    }
    # Splits are disjoint and together hold every record.
    texts = [e.text for s in ("train", "validation", "test") for e in a.split(s)]
    assert sorted(texts) == sorted(r["text"] for r in records)


def test_from_records_classes_order_and_extra_columns() -> None:
    records = _records(5)
    records[0]["name"] = "Mary"
    records[1]["meta"] = json.dumps({"template_id": "t1"})
    ds = FeatureDataset.from_records(records, name="toy", classes=("male", "female"))
    assert ds.classes == ("male", "female") and ds.label_value("male") == 1.0
    by_text = {e.text: e for s in ("train", "validation", "test") for e in ds.split(s)}
    assert by_text[records[0]["text"]].meta == {"name": "Mary"}
    assert by_text[records[1]["text"]].meta == {"template_id": "t1"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rs: rs[2].pop("factual"), r"record 2: missing column 'factual'"),
        (lambda rs: rs[1].update(split="holdout"), r"record 1: unknown split 'holdout'"),
        (lambda rs: rs[0].update(split="train"), r"1 of 10 rows give a split, but record 1 does not"),
        (lambda rs: rs[4].update(label="other"), r"expected exactly two classes, found 3"),
        (
            lambda rs: rs[0].update(text="no slot here"),
            r"record 0: FeatureExample.text must contain the slot",
        ),
        (lambda rs: rs[0].update(label=None), r"record 0: column 'label' must be a non-empty string"),
    ],
)
def test_from_records_errors(mutate, message: str) -> None:
    records = _records(5)
    mutate(records)
    with pytest.raises(FeatureDataError, match=message):
        FeatureDataset.from_records(records, name="toy")


def test_from_records_rejects_unknown_class_and_too_few() -> None:
    with pytest.raises(FeatureDataError, match=r"label\(s\) \['male'\] are not among classes"):
        FeatureDataset.from_records(_records(5), name="toy", classes=("female", "other"))
    with pytest.raises(FeatureDataError, match="No examples in records"):
        FeatureDataset.from_records([], name="toy")
    with pytest.raises(FeatureDataError, match="Split fractions"):
        FeatureDataset.from_records(_records(5), name="toy", test_fraction=0.0)


def test_jsonl_round_trip(tmp_path: Path) -> None:
    ds = FeatureDataset.from_records(_records(10), name="toy", seed=3)
    ds.train[0] = FeatureExample(ds.train[0].text, "she", "he", "female", {"name": "Mary", "source": "x.txt"})
    path = ds.save_jsonl(tmp_path / "sub" / "toy.jsonl")
    back = FeatureDataset.from_jsonl(path)
    assert back.name == "toy"
    for split in ("train", "validation", "test"):
        assert back.split(split) == ds.split(split)
        assert [e.meta for e in back.split(split)] == [e.meta for e in ds.split(split)]


def test_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    rows = [json.dumps(r) for r in _records(3)]
    rows[4] = json.dumps({"text": "x [MASK]", "factual": "she", "label": "female"})
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(FeatureDataError, match=r"bad.jsonl line 5: missing column 'counterfactual'"):
        FeatureDataset.from_jsonl(path)
    path.write_text(rows[0] + "\n{not json\n", encoding="utf-8")
    with pytest.raises(FeatureDataError, match=r"bad.jsonl line 2: not valid JSON"):
        FeatureDataset.from_jsonl(path)
    with pytest.raises(FeatureDataError, match="Cannot read feature file"):
        FeatureDataset.from_jsonl(tmp_path / "missing.jsonl")


def _write_csv(path: Path, records: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def test_csv_round_trip_and_split(tmp_path: Path) -> None:
    records = _records(5, with_split=True)
    path = tmp_path / "pairs.csv"
    _write_csv(path, records)
    ds = FeatureDataset.from_csv(path, classes=("male", "female"))
    assert ds.name == "pairs" and ds.classes == ("male", "female")
    expected = FeatureDataset.from_records(records, name="pairs", classes=("male", "female"))
    assert ds.train == expected.train and ds.validation == expected.validation and ds.test == expected.test


def test_csv_errors_name_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "pairs.csv"
    _write_csv(path, [{k: v for k, v in r.items() if k != "label"} for r in _records(2)])
    with pytest.raises(FeatureDataError, match=r"pairs.csv lacks the column\(s\) \['label'\]"):
        FeatureDataset.from_csv(path)
    records = _records(3)
    records[2]["factual"] = ""
    _write_csv(path, records)
    with pytest.raises(
        FeatureDataError, match=r"pairs.csv line 4: column 'factual' must be a non-empty string"
    ):
        FeatureDataset.from_csv(path)


def test_from_pandas() -> None:
    pd = pytest.importorskip("pandas")
    records = _records(5, with_split=True)
    records[0]["note"] = "kept"  # the other rows get NaN in this column, which is not kept
    ds = FeatureDataset.from_pandas(pd.DataFrame(records), name="toy")
    assert [len(ds.train), len(ds.validation), len(ds.test)] == [6, 2, 2]
    assert ds.train[0].meta == {"note": "kept"} and ds.train[1].meta == {}
    with pytest.raises(FeatureDataError, match="expects a pandas DataFrame"):
        FeatureDataset.from_pandas(records, name="toy")


def test_from_hf_dataset() -> None:
    datasets = pytest.importorskip("datasets")
    records = _records(5, with_split=True)
    ds = FeatureDataset.from_hf_dataset(datasets.Dataset.from_list(records), name="toy")
    assert ds.train == FeatureDataset.from_records(records, name="toy").train

    by_split = {
        "train": [r for r in records if r["split"] == "train"],
        "valid": [r for r in records if r["split"] == "validation"],
        "test": [r for r in records if r["split"] == "test"],
    }
    dataset_dict = datasets.DatasetDict(
        {k: datasets.Dataset.from_list([{c: v for c, v in r.items() if c != "split"} for r in rows])
         for k, rows in by_split.items()}
    )  # fmt: skip
    ds = FeatureDataset.from_hf_dataset(dataset_dict, name="toy")
    assert [len(ds.train), len(ds.validation), len(ds.test)] == [6, 2, 2]
    with pytest.raises(FeatureDataError, match=r"DatasetDict has split\(s\) \['extra'\]"):
        FeatureDataset.from_hf_dataset(
            datasets.DatasetDict({**dataset_dict, "extra": dataset_dict["test"]}), name="x"
        )
    with pytest.raises(FeatureDataError, match=r"expects a datasets\.Dataset or DatasetDict"):
        FeatureDataset.from_hf_dataset([1, 2], name="toy")
