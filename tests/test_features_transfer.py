"""Transfer texts: the built-in sets (descriptions × templates, split by description), name weights, your own files."""

import json
from collections import Counter

import pytest

from gradiend_hf.errors import FeatureDataError
from gradiend_hf.features import SLOT
from gradiend_hf.features.transfer import (
    GROUP_TEMPLATES,
    NAME_TEMPLATES,
    TransferSet,
    TransferText,
    builtin_transfer,
    gender_transfer,
    group_transfer,
    load_transfer,
    name_words,
    person_descriptions,
)

WORDS = {"female": ["she"], "male": ["he"]}


def test_the_descriptions_are_three_balanced_kinds_without_gendered_words():
    rows = person_descriptions()
    assert len(rows) == 300 and len({r["id"] for r in rows}) == 300
    assert Counter(r["stereotype"] for r in rows) == {"female": 100, "male": 100, "none": 100}
    assert {r["category"] for r in rows} == {"occupation", "activity", "trait"}
    gendered = {"he", "she", "him", "her", "his", "hers", "man", "men", "woman", "women", "girl", "boy", "mother",
                "father", "wife", "husband", "lady", "son", "daughter", "sister", "brother"}
    for row in rows:
        words = set(row["description"].lower().replace(",", " ").replace("'s", " ").split())
        assert not words & gendered, row
        assert not any(w.endswith(("man", "woman", "men", "women")) for w in words), row


def test_gender_transfer_splits_descriptions_not_templates():
    transfer = gender_transfer()
    assert transfer.formula == "bpi" and transfer.groups == ["female", "male"]
    sizes = {s: len(transfer.split(s)) for s in ("train", "validation", "test")}
    assert sum(sizes.values()) == 300 * len(NAME_TEMPLATES)
    assert sizes["test"] == 60 * len(NAME_TEMPLATES) and sizes["validation"] == 30 * len(NAME_TEMPLATES)
    ids = {s: {t.meta["description_id"] for t in transfer.split(s)} for s in ("train", "validation", "test")}
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"] and not ids["validation"] & ids["test"]
    for split in ("train", "validation", "test"):
        texts = transfer.split(split)
        assert {t.meta["template"] for t in texts} == {str(i) for i in range(len(NAME_TEMPLATES))}
        assert Counter(t.group for t in texts) == {"female": len(texts) // 3, "male": len(texts) // 3,
                                                   None: len(texts) // 3}
        assert all(t.text.count(SLOT) == 1 and t.prefix.endswith(" ") for t in texts)
    assert gender_transfer().test == transfer.test and gender_transfer(seed=1).test != transfer.test


def test_names_count_for_both_sexes_by_their_share():
    words = name_words()
    assert set(words) == {"female", "male"} and set(words["female"]) == set(words["male"])
    assert len(words["female"]) == 3179
    for name in ("Mary", "James", "Emma"):
        assert words["female"][name] + words["male"][name] == pytest.approx(1.0)
    assert words["male"]["James"] == pytest.approx(0.9955) and words["female"]["Mary"] > 0.95


def test_race_and_religion_sets_use_group_words():
    for attribute in ("race", "religion"):
        transfer = group_transfer(attribute)
        assert transfer.formula == "min" and len(transfer.groups) == 3
        assert len(transfer.test) == 60 * len(GROUP_TEMPLATES[attribute])
        assert all(t.group is None for t in transfer.test)
    pair = builtin_transfer("religion", ["christian", "muslim"])
    assert pair.groups == ["christian", "muslim"] and pair.words["muslim"] == {"Muslim": 1.0, "muslim": 1.0}
    with pytest.raises(FeatureDataError, match="no words for group"):
        builtin_transfer("race", ["white", "purple"])
    with pytest.raises(FeatureDataError, match="no built-in transfer set for the feature 'toxicity'"):
        builtin_transfer("toxicity")


def test_your_own_file_with_and_without_splits(tmp_path):
    rows = [{"text": f"The person who likes item {i} is named [MASK].", "group": "female" if i % 2 else "male"}
            for i in range(20)]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    transfer = load_transfer(path, {"female": ["she"], "male": {"he": 0.5}}, name="gender")
    assert len(transfer.train) == 14 and len(transfer.validation) == 2 and len(transfer.test) == 4
    assert transfer.words == {"female": {"she": 1.0}, "male": {"he": 0.5}}
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text("text,split\nA person who sings is [MASK].,test\nA person who runs is [MASK].,validation\n")
    words_path = tmp_path / "words.json"
    words_path.write_text(json.dumps(WORDS))
    transfer = load_transfer(csv_path, words_path)
    assert [t.text for t in transfer.test] == ["A person who sings is [MASK]."] and transfer.train == []
    assert transfer.name == "mine"


@pytest.mark.parametrize("record, match", [
    ({"text": "No slot here."}, "exactly once, found 0"),
    ({"text": "Two [MASK] and [MASK]."}, "exactly once, found 2"),
    ({"text": "One [MASK].", "label": "x"}, r"unknown column\(s\) \['label'\]"),
    ({"group": "female"}, "missing the `text` column"),
    ({"text": "One [MASK].", "split": "holdout"}, "unknown split 'holdout'"),
    ({"text": "One [MASK].", "meta": "{not json"}, "`meta` is not a JSON object"),
])
def test_bad_records_get_one_clear_error(record, match):
    with pytest.raises(FeatureDataError, match=match):
        TransferSet.from_records([record], words=WORDS)


def test_bad_words_and_mixed_splits_are_refused(tmp_path):
    texts = [{"text": "A [MASK].", "split": "test"}, {"text": "B [MASK]."}]
    with pytest.raises(FeatureDataError, match="1 of 2 rows give a split"):
        TransferSet.from_records(texts, words=WORDS)
    good = [{"text": "A [MASK].", "split": "test"}]
    with pytest.raises(FeatureDataError, match="at least two groups"):
        TransferSet.from_records(good, words={"female": ["she"]})
    with pytest.raises(FeatureDataError, match="without whitespace"):
        TransferSet.from_records(good, words={"female": ["two words"], "male": ["he"]})
    with pytest.raises(FeatureDataError, match=r"number in \[0, 1\]"):
        TransferSet.from_records(good, words={"female": {"she": 2.0}, "male": ["he"]})
    with pytest.raises(FeatureDataError, match="must be a .csv or .jsonl"):
        load_transfer(tmp_path / "texts.txt", WORDS)
    with pytest.raises(FeatureDataError, match="does not exist"):
        load_transfer(tmp_path / "missing.csv", WORDS)
    with pytest.raises(FeatureDataError, match="exactly once"):
        TransferText("no slot")
