"""Tests for gradiend_hf.features.builtin and the shipped data (which build_data rebuilds byte for byte)."""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from pathlib import Path

import pytest

import gradiend_hf.features as features
from gradiend_hf.errors import FeatureDataError
from gradiend_hf.features import (
    RACE_WORDS,
    RELIGION_WORDS,
    SLOT,
    FeatureDataset,
    from_corpus,
    gender,
    load_feature,
    neutral_texts,
    race,
    religion,
)

DATA = resources.files("gradiend_hf.features.data")
SHARED = Path(__file__).parents[2] / "shared" / "data"
SHIPPED = ("ATTRIBUTION.md", "gender_templates.tsv", "names.tsv", "neutral.txt", "race_sentences.jsonl",
           "religion_sentences.jsonl")  # fmt: skip


def _names_by_rank() -> list[tuple[str, str]]:
    rows = csv.DictReader(io.StringIO(DATA.joinpath("names.tsv").read_text(encoding="utf-8")), delimiter="\t")
    return [(row["name"], {"F": "female", "M": "male"}[row["gender"]]) for row in rows]


@pytest.fixture(scope="module")
def gender_data() -> FeatureDataset:
    return gender()


def test_public_api_is_sorted_and_complete() -> None:
    # Ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical.
    def kind(name: str) -> int:
        return 0 if name.isupper() else 1 if name[0].isupper() else 2

    assert features.__all__ == sorted(features.__all__, key=lambda name: (kind(name), name))
    for name in ("FeatureExample", "FeatureDataset", "SLOT", "gender", "race", "religion", "from_corpus",
                 "neutral_texts", "load_feature", "mine_name_templates", "mine_word_slots", "split_sentences",
                 "clean_gutenberg"):  # fmt: skip
        assert name in features.__all__ and hasattr(features, name)


def test_shipped_files_are_compact_and_licensed() -> None:
    names = {p.name for p in DATA.iterdir()}
    assert set(SHIPPED) <= names
    assert not any("bias_attribute" in n or "sent-religion" in n for n in names)
    assert sum(len(DATA.joinpath(n).read_bytes()) for n in SHIPPED) < 3_000_000
    attribution = DATA.joinpath("ATTRIBUTION.md").read_text(encoding="utf-8")
    for needle in ("CC BY-SA 3.0", "CC BY 3.0 US", "public domain", "uci_share", "not** shipped"):
        assert needle in attribution


def test_gender_sizes_and_balance(gender_data: FeatureDataset) -> None:
    ds = gender_data
    assert ds.name == "gender" and ds.classes == ("female", "male")
    assert ds.label_value("female") == 1.0
    assert 2000 <= len(ds.train) <= 5000 and 100 <= len(ds.validation) <= 250 and 200 <= len(ds.test) <= 600
    for split, counts in ds.summary().items():
        assert counts["female"] == counts["male"], split
    targets = ds.targets()
    assert "she" in targets["female"] and set(targets["female"]) <= {"she", "She", "SHE"}
    assert "he" in targets["male"] and set(targets["male"]) <= {"he", "He", "HE"}


def test_gender_names_and_templates_are_disjoint(gender_data: FeatureDataset) -> None:
    ds = gender_data
    names = {s: {e.meta["name"] for e in ds.split(s)} for s in ("train", "validation", "test")}
    templates = {s: {e.meta["template_id"] for e in ds.split(s)} for s in ("train", "validation", "test")}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not names[a] & names[b], (a, b)
        assert not templates[a] & templates[b], (a, b)
    # Every test example uses a held-out name in a held-out template.
    for example in ds.test:
        assert example.meta["name"] not in names["train"] | names["validation"]
        assert example.meta["template_id"] not in templates["train"] | templates["validation"]


def test_gender_targets_follow_the_name(gender_data: FeatureDataset) -> None:
    label_of = dict(_names_by_rank())
    for example in [*gender_data.train, *gender_data.validation, *gender_data.test]:
        name = example.meta["name"]
        assert example.label == label_of[name]
        assert example.factual.lower() == {"female": "she", "male": "he"}[example.label]
        assert example.counterfactual.lower() == {"female": "he", "male": "she"}[example.label]
        assert example.factual[0].isupper() == example.counterfactual[0].isupper()
        # The name is in the prefix, so a causal LM sees the class signal.
        assert name in example.prefix
        assert example.text.count(SLOT) == 1 and "[NAME]" not in example.text


def test_gender_names_span_the_whole_list(gender_data: FeatureDataset) -> None:
    ranked = _names_by_rank()
    rank = {name: i for i, (name, _) in enumerate(ranked)}
    train_ranks = sorted(rank[e.meta["name"]] for e in gender_data.train)
    used = {e.meta["name"] for e in gender_data.train}
    assert len(used) > 1000  # not ~32 names as in the original code
    assert train_ranks[0] < 50 and train_ranks[-1] > len(ranked) - 50
    assert train_ranks[len(train_ranks) // 2] > len(ranked) // 4  # the median is far from the top names


def test_gender_is_deterministic_per_seed_and_options(gender_data: FeatureDataset) -> None:
    again = gender()
    assert again.train == gender_data.train and again.test == gender_data.test
    assert [e.meta for e in again.test] == [e.meta for e in gender_data.test]
    other = gender(seed=1)
    assert other.test != gender_data.test
    small = gender(max_train=100, names_per_template=2, eval_names_per_template=2)
    assert len(small.train) == 100 and small.summary()["train"] == {"female": 50, "male": 50}
    with pytest.raises(FeatureDataError, match="names_per_template must be a positive even number"):
        gender(names_per_template=3)
    with pytest.raises(FeatureDataError, match="max_train must be None or an int"):
        gender(max_train=0)


@pytest.mark.parametrize(
    ("build", "class_words", "pair"),
    [
        (race, RACE_WORDS, ("white", "black")),
        (race, RACE_WORDS, ("black", "asian")),
        (religion, RELIGION_WORDS, ("christian", "muslim")),
        (religion, RELIGION_WORDS, ("jewish", "christian")),
    ],
)
def test_race_and_religion_targets_are_aligned(build, class_words, pair) -> None:
    ds = build(*pair)
    assert ds.classes == pair and ds.test
    other = {pair[0]: pair[1], pair[1]: pair[0]}
    for example in [*ds.train, *ds.validation, *ds.test]:
        aligned = set(zip(class_words[example.label], class_words[other[example.label]]))
        assert (example.factual.lower(), example.counterfactual.lower()) in aligned
        assert example.counterfactual[0].isupper() == example.factual[0].isupper()
        assert len(example.prefix.split()) >= 4
    assert build(*pair).test == ds.test  # seeded
    # counterfactual augmentation: every context appears once per class, in one split only
    counts = ds.summary()
    for split in ("train", "validation", "test"):
        assert counts[split][pair[0]] == counts[split][pair[1]] > 0
    contexts = {split: {e.text for e in ds.split(split)} for split in ("train", "validation", "test")}
    assert not (contexts["train"] & contexts["test"]) and not (contexts["train"] & contexts["validation"])


def test_race_and_religion_errors() -> None:
    with pytest.raises(
        FeatureDataError, match=r"Unknown race class 'green'; expected one of \['white', 'black', 'asian'\]"
    ):
        race("green", "black")
    with pytest.raises(FeatureDataError, match="needs two different classes"):
        religion("muslim", "muslim")


def test_from_corpus() -> None:
    texts = [
        f"Day {i}: on Sunday morning the family walked to the {w} together. Nothing else happened."
        for i in range(6)
        for w in ("church", "Mosque")
    ]
    ds = from_corpus(texts, {"christian": ["church"], "muslim": ["mosque"]}, name="toy")
    assert ds.name == "toy" and ds.classes == ("christian", "muslim") and len(ds) == 12
    assert {(e.factual, e.counterfactual) for e in ds.train} == {("church", "mosque"), ("Mosque", "Church")}
    with pytest.raises(FeatureDataError, match="too few sentences per class"):
        from_corpus(texts[:2], {"christian": ["church"], "muslim": ["mosque"]})
    with pytest.raises(FeatureDataError, match="one str"):
        from_corpus("just a string", {"christian": ["church"], "muslim": ["mosque"]})


def test_neutral_texts() -> None:
    lines = neutral_texts()
    assert 1000 <= len(lines) <= 5000 and neutral_texts(5) == lines[:5]
    banned = {
        "he",
        "she",
        "him",
        "her",
        "his",
        "hers",
        "himself",
        "herself",
        "man",
        "woman",
        "church",
        "white",
    }
    for line in lines:
        assert 6 <= len(line.split()) <= 40
        assert not banned & {w.strip(".,;:!?()\"'").lower() for w in line.split()}, line
    with pytest.raises(FeatureDataError, match="limit must be None"):
        neutral_texts(-1)


def test_load_feature(tmp_path: Path, gender_data: FeatureDataset) -> None:
    assert load_feature("gender").test == gender_data.test
    assert load_feature("race").classes == ("white", "black")
    assert load_feature("religion:christian, jewish").classes == ("christian", "jewish")
    path = race().save_jsonl(tmp_path / "race.jsonl")
    assert load_feature(str(path)).train == FeatureDataset.from_jsonl(path).train
    with pytest.raises(FeatureDataError, match=r"Unknown feature spec 'colour'; expected \"gender\""):
        load_feature("colour")
    with pytest.raises(FeatureDataError, match="must name two classes"):
        load_feature("race:white")
    with pytest.raises(FeatureDataError, match="does not exist"):
        load_feature(str(tmp_path / "missing.csv"))


def test_shipped_sentence_files_are_well_formed() -> None:
    for attribute, class_words in (("race", RACE_WORDS), ("religion", RELIGION_WORDS)):
        rows = [
            json.loads(line)
            for line in DATA.joinpath(f"{attribute}_sentences.jsonl").read_text("utf-8").splitlines()
        ]
        assert rows and all(set(row) == {"text", "word", "class", "source"} for row in rows)
        for row in rows:
            assert row["text"].count(SLOT) == 1 and row["word"].lower() in class_words[row["class"]]


@pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"the raw data pack is not at {SHARED} (CI lays it out beside the repo)"
)
def test_build_data_reproduces_the_shipped_files(tmp_path: Path) -> None:
    from gradiend_hf.features.build_data import build

    build(SHARED, tmp_path)
    for name in SHIPPED:
        assert (tmp_path / name).read_bytes() == DATA.joinpath(name).read_bytes(), name
