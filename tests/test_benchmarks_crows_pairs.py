"""Tests for gradiend_hf.benchmarks.crows_pairs: data, the metric's direction handling, PLL and causal scoring."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from tiny_models import bpe_tokenizer, tiny_bert, tiny_llama, wordpiece_tokenizer

from gradiend_hf.benchmarks.crows_pairs import (
    CrowsPair,
    crows_metric,
    crows_pairs_score,
    load_crows_pairs,
    shared_positions,
)
from gradiend_hf.errors import BenchmarkError


def test_shipped_pairs_load_completely() -> None:
    pairs = load_crows_pairs()
    assert Counter(p.bias_type for p in pairs) == {"gender": 262, "race-color": 516, "religion": 105}
    assert {p.direction for p in pairs} == {"stereo", "antistereo"}
    assert len({p.index for p in pairs}) == len(pairs)
    assert load_crows_pairs(bias_types=["race"]) == load_crows_pairs(bias_types=["race-color"])
    subset = load_crows_pairs(limit=10)
    assert Counter(p.bias_type for p in subset) == {"gender": 10, "race-color": 10, "religion": 10}
    assert subset == load_crows_pairs(limit=10)


def test_metric_counts_sent_more_preferred_in_both_directions() -> None:
    more = np.array([-10.0, -12.0, -5.0, -7.0, -3.0])
    less = np.array([-11.0, -11.0, -6.0, -7.0, -4.0])
    stereo = np.array([True, True, False, True, False])
    # wins: 1, 0, 1, tie (no win), 1 -> 3 of N = 5; stereo: 1 of the 2 untied (the tie is neutral, as in
    # Nangia et al.'s metric.py: it counts in N only); antistereo 2 of 2
    metric, stereo_score, antistereo_score = crows_metric(more, less, stereo)
    assert metric == pytest.approx(60.0)
    assert stereo_score == pytest.approx(50.0) and antistereo_score == pytest.approx(100.0)
    assert np.isnan(crows_metric(more[:2], less[:2], stereo[:2])[2])
    # only ties of one kind: no split score for it, while the metric counts them as non-preferences
    assert np.isnan(crows_metric(np.array([1.0, 2.0]), np.array([1.0, 1.0]), np.array([False, True]))[2])
    assert crows_metric(np.array([1.0, 2.0]), np.array([1.0, 1.0]), np.array([False, True]))[0] == 50.0


def test_shared_positions_are_difflib_equal_blocks() -> None:
    first, second = shared_positions([101, 7, 8, 9, 102], [101, 7, 5, 6, 9, 102])
    assert first == [0, 1, 3, 4] and second == [0, 1, 4, 5]


def test_masked_score_is_the_pseudo_log_likelihood_of_shared_tokens() -> None:
    wordpiece = wordpiece_tokenizer()
    bert = tiny_bert(len(wordpiece))
    pairs = [CrowsPair(0, "the white cats sat on the wall.", "the black cats sat on the wall.", "stereo", "race-color"),
             CrowsPair(1, "she knew the answer.", "he knew the answer.", "antistereo", "gender")]  # fmt: skip
    result = crows_pairs_score(bert, wordpiece, pairs=pairs, bootstrap=0, batch_size=3)

    def pll(sentence: str, positions: list[int]) -> float:  # one masked token at a time, plain loop
        ids = wordpiece(sentence)["input_ids"]
        total = 0.0
        for position in positions:
            masked = list(ids)
            masked[position] = wordpiece.mask_token_id
            with torch.no_grad():
                logits = bert(input_ids=torch.tensor([masked])).logits[0, position]
            total += torch.log_softmax(logits, -1)[ids[position]].item()
        return round(total, 3)

    for pair, (more, less) in zip(pairs, result.pair_scores):
        ids_more, ids_less = (wordpiece(s)["input_ids"] for s in (pair.sent_more, pair.sent_less))
        shared_more, shared_less = shared_positions(ids_more, ids_less)
        # the original skips the first and last shared token: [CLS] and [SEP]
        assert more == pytest.approx(pll(pair.sent_more, shared_more[1:-1]), abs=1e-3)
        assert less == pytest.approx(pll(pair.sent_less, shared_less[1:-1]), abs=1e-3)
    wins = [more > less for more, less in result.pair_scores]
    assert result.scores["overall"]["metric"].value == pytest.approx(100 * np.mean(wins))
    assert set(result.scores) == {"race", "gender", "overall"}


def test_causal_score_is_the_mean_token_log_probability() -> None:
    bpe = bpe_tokenizer()
    llama = tiny_llama(len(bpe))
    pairs = load_crows_pairs(limit=4)
    result = crows_pairs_score(llama, bpe, pairs=pairs, bootstrap=300)
    for pair, scores in zip(pairs, result.pair_scores):
        for sentence, value in zip((pair.sent_more, pair.sent_less), scores):
            ids = bpe(sentence, return_tensors="pt")["input_ids"]  # this tokenizer adds <s> itself
            with torch.no_grad():
                assert value == pytest.approx(-llama(input_ids=ids, labels=ids).loss.item(), rel=1e-5)
    for group in ("gender", "race", "religion", "overall"):
        score = result.scores[group]["metric"]
        assert score.ci[0] <= score.value <= score.ci[1]
    assert result.scores["overall"]["metric"].count == 12


def test_bad_input_names_the_choices() -> None:
    bpe = bpe_tokenizer()
    llama = tiny_llama(len(bpe))
    with pytest.raises(BenchmarkError, match=r"no bias type 'age'.*'gender', 'race-color', 'religion'"):
        load_crows_pairs(bias_types=["age"])
    with pytest.raises(BenchmarkError, match="'stereo' or 'antistereo'"):
        crows_pairs_score(llama, bpe, pairs=[CrowsPair(0, "a b", "a c", "both", "gender")])
    with pytest.raises(BenchmarkError, match="at least one pair"):
        crows_pairs_score(llama, bpe, pairs=[])
