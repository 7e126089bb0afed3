"""Tests for gradiend_hf.benchmarks.stereoset: data, SS/LMS/ICAT arithmetic, masked and causal scoring."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from tiny_models import bpe_tokenizer, tiny_bert, tiny_gpt2, tiny_llama, wordpiece_tokenizer

from gradiend_hf.benchmarks.stereoset import (
    LABELS,
    StereoSetExample,
    load_stereoset,
    stereoset_metrics,
    stereoset_score,
    word_queries,
)
from gradiend_hf.errors import BenchmarkError


@pytest.fixture(scope="module")
def wordpiece():
    return wordpiece_tokenizer()


@pytest.fixture(scope="module")
def bpe():
    return bpe_tokenizer()


def test_shipped_dev_set_loads_completely() -> None:
    examples = load_stereoset()
    assert len(examples) == 2106
    assert Counter(e.bias_type for e in examples) == {
        "race": 962,
        "profession": 810,
        "gender": 255,
        "religion": 79,
    }
    for example in examples:
        assert set(example.sentences) == set(LABELS) == set(example.words)
        for label in LABELS:
            filled = example.context.replace("BLANK", example.words[label])
            assert filled.lower() == example.sentences[label].lower()


def test_limit_is_balanced_deterministic_and_spread() -> None:
    subset = load_stereoset(limit=7)
    assert Counter(e.bias_type for e in subset) == dict.fromkeys(
        ("race", "profession", "gender", "religion"), 7
    )
    assert subset == load_stereoset(limit=7)
    genders = load_stereoset(bias_types=["gender"])
    assert [e for e in subset if e.bias_type == "gender"][1] == genders[int(255 / 7)]
    assert {e.bias_type for e in load_stereoset(bias_types=["religion"], limit=3)} == {"religion"}


def test_ss_lms_icat_by_hand() -> None:
    # target 0: two examples; target 1: one. Columns: stereotype, anti-stereotype, unrelated.
    scores = np.array(
        [
            [0.9, 0.1, 0.5],  # pro > anti; related: pro > unrel, anti < unrel  -> 1 of 2
            [0.2, 0.3, 0.1],  # anti > pro; both related                        -> 2 of 2
            [0.4, 0.4, 0.4],
        ]
    )  # tie counts as anti; nothing beats the unrelated -> 0 of 2
    ss, lms, icat = stereoset_metrics(scores, np.array([0, 0, 1]))
    # per target: SS_0 = 50, SS_1 = 0; LMS_0 = 100 * 3/4 = 75, LMS_1 = 0
    assert ss == pytest.approx(25.0) and lms == pytest.approx(37.5)
    assert icat == pytest.approx(37.5 * 25.0 / 50)
    assert stereoset_metrics(np.array([[1.0, 0.0, 2.0]]), np.array([0]))[2] == 0.0  # SS 100 -> ICAT 0


def test_word_queries_match_the_reference_string_construction(wordpiece) -> None:
    # StereoSet's loader: context.replace("BLANK", decode(word_tokens[:j]) + "[MASK]"), tokenised again
    context, word = "the chess player was BLANK.", "hispanic"
    word_ids = wordpiece(word, add_special_tokens=False)["input_ids"]
    assert len(word_ids) > 1
    queries = word_queries(wordpiece, context, word, max_length=64)
    assert [target for _, _, target in queries] == word_ids
    for j, (ids, position, _) in enumerate(queries):
        text = context.replace("BLANK", wordpiece.decode(word_ids[:j]) + wordpiece.mask_token)
        assert ids == wordpiece(text)["input_ids"]
        assert ids[position] == wordpiece.mask_token_id and ids.count(wordpiece.mask_token_id) == 1
    # two BLANKs: the first holds the word, the last is scored
    queries = word_queries(wordpiece, "is very BLANK and strict about BLANK", "cat", max_length=64)
    assert wordpiece.decode(queries[0][0], skip_special_tokens=False).startswith("[CLS] is very cat and")


def test_masked_scores_are_mean_subword_probabilities(wordpiece) -> None:
    bert = tiny_bert(len(wordpiece))
    examples = load_stereoset(bias_types=["gender"], limit=3)
    result = stereoset_score(bert, wordpiece, examples=examples, bootstrap=0, batch_size=4)
    assert result.lm_kind == "masked"
    for example, row in zip(examples, result.candidate_scores):
        for label, value in zip(LABELS, row):
            probabilities = []
            for ids, position, target in word_queries(wordpiece, example.context, example.words[label],
                                                      max_length=128):  # fmt: skip
                with torch.no_grad():
                    logits = bert(input_ids=torch.tensor([ids])).logits[0, position]
                probabilities.append(torch.softmax(logits, -1)[target].item())
            assert value == pytest.approx(np.mean(probabilities), rel=1e-4)
    assert result.scores["gender"]["ss"].count == 3 and result.scores["gender"]["ss"].ci is None


def test_causal_scores_are_mean_log_probabilities_after_a_start_token(bpe) -> None:
    gpt2 = tiny_gpt2(len(bpe))
    tokenizer = bpe_tokenizer()
    tokenizer._tokenizer.post_processor = None  # adds no BOS, like GPT-2: the start token is prepended
    examples = load_stereoset(limit=2)
    result = stereoset_score(gpt2, tokenizer, examples=examples, bootstrap=0)
    for example, row in zip(examples, result.candidate_scores):
        for label, value in zip(LABELS, row):
            ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(example.sentences[label])["input_ids"]]])
            with torch.no_grad():
                assert value == pytest.approx(-gpt2(input_ids=ids, labels=ids).loss.item(), rel=1e-5)


def test_reported_scores_follow_the_candidate_scores(bpe) -> None:
    llama = tiny_llama(len(bpe))
    result = stereoset_score(llama, bpe, limit=6, bootstrap=200)
    examples = load_stereoset(limit=6)
    scores = np.array(result.candidate_scores)
    for group in ("gender", "race", "overall"):
        rows = [i for i, e in enumerate(examples) if group in ("overall", e.bias_type)]
        _, targets = np.unique([examples[i].target for i in rows], return_inverse=True)
        expected = stereoset_metrics(scores[rows], targets)
        for metric, value in zip(("ss", "lms", "icat"), expected):
            score = result.scores[group][metric]
            assert score.value == pytest.approx(value) and score.ci[0] <= value <= score.ci[1]
    assert set(result.scores) == {"gender", "profession", "race", "religion", "overall"}
    assert result.to_dict()["scores"]["overall"]["ss"]["count"] == 24


def test_bad_input_names_the_choices(bpe) -> None:
    llama = tiny_llama(len(bpe))
    with pytest.raises(BenchmarkError, match=r"no bias type 'age'.*'gender', 'profession'"):
        stereoset_score(llama, bpe, bias_types=["age"])
    with pytest.raises(BenchmarkError, match="at least one example"):
        stereoset_score(llama, bpe, examples=[])
    with pytest.raises(BenchmarkError, match="positive number"):
        load_stereoset(limit=0)
    with pytest.raises(BenchmarkError, match=r"lacks the fields \['words'\]"):
        StereoSetExample.from_record({"target": "t", "bias_type": "gender", "context": "BLANK",
                                      "stereotype": "a", "anti-stereotype": "b", "unrelated": "c"})  # fmt: skip
