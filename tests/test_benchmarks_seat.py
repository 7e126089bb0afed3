"""Tests for gradiend_hf.benchmarks.seat: test data, effect size, permutation p-value, embeddings."""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pytest
import torch
from tiny_models import bpe_tokenizer, tiny_bert, tiny_llama, wordpiece_tokenizer

from gradiend_hf.benchmarks.seat import (
    DEFAULT_SEAT_TESTS,
    SEAT_TESTS,
    SeatTest,
    effect_size,
    effect_size_samples,
    load_seat_tests,
    p_value,
    seat_score,
    sentence_embeddings,
)
from gradiend_hf.errors import BenchmarkError


def test_shipped_tests_are_the_licensed_gender_and_race_ones() -> None:
    files = {p.name for p in resources.files("gradiend_hf.benchmarks.data").joinpath("seat").iterdir()}
    names = [n for tests in SEAT_TESTS.values() for n in tests]
    assert files == {f"{n}.jsonl" for n in names} and len(names) == 38
    assert not any("religion" in f for f in files)
    every = load_seat_tests(names=names)
    assert all(len(t.x) == len(t.y) > 0 and t.a and t.b for t in every)
    defaults = load_seat_tests()
    assert [t.name for t in defaults] == [*DEFAULT_SEAT_TESTS["gender"], *DEFAULT_SEAT_TESTS["race"]]
    weat6 = load_seat_tests(names=["weat6"])[0]
    assert weat6.categories == ("MaleNames", "FemaleNames", "Career", "Family") and weat6.x[0] == "John"
    assert [t.bias_type for t in load_seat_tests(bias_types=["race"])] == ["race"] * 7
    with pytest.raises(BenchmarkError, match="no licensed religion test"):
        load_seat_tests(bias_types=["religion"])
    with pytest.raises(BenchmarkError, match="Unknown SEAT tests \\['sent-religion1'\\]"):
        load_seat_tests(names=["sent-religion1"])


def _cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / math.sqrt((u @ u) * (v @ v)))


def test_effect_size_against_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    x, y, a, b = (rng.normal(size=(n, 6)) for n in (5, 5, 4, 3))

    def s(w):
        return np.mean([_cos(w, v) for v in a]) - np.mean([_cos(w, v) for v in b])

    sx, sy = [s(w) for w in x], [s(w) for w in y]
    expected = (np.mean(sx) - np.mean(sy)) / np.std(sx + sy, ddof=1)
    assert effect_size(x, y, a, b) == pytest.approx(expected)
    assert effect_size(y, x, a, b) == pytest.approx(-expected)
    assert effect_size(x, y, b, a) == pytest.approx(-expected)


def _unit_circle(*angles: float) -> np.ndarray:
    return np.array([[math.cos(t), math.sin(t)] for t in angles])


def test_p_value_has_the_known_exact_answer() -> None:
    a, b = _unit_circle(0.0), _unit_circle(math.pi / 2)
    # s(w) = cos θ − sin θ: distinct and largest for the X angles
    x, y = _unit_circle(0.1, 0.2), _unit_circle(0.9, 1.2)
    assert p_value(x, y, a, b) == (pytest.approx(1 / 6), True)  # only X itself of C(4, 2) = 6 partitions
    assert p_value(y, x, a, b) == (1.0, True)  # every partition has at least X's sum
    # ties count (conservative): all four targets alike -> every partition ties
    same = _unit_circle(0.3, 0.3)
    assert p_value(same, same, a, b)[0] == 1.0


def test_sampled_p_value_is_seeded_and_never_below_one_over_samples() -> None:
    a, b = _unit_circle(0.0), _unit_circle(math.pi / 2)
    x, y = _unit_circle(*np.linspace(0.0, 0.3, 10)), _unit_circle(*np.linspace(1.0, 1.5, 10))
    value, exact = p_value(x, y, a, b, permutations=1000, seed=1)  # C(20, 10) = 184,756 > 1000: sampled
    assert not exact and 1 / 1000 <= value <= 3 / 1000
    assert p_value(x, y, a, b, permutations=1000, seed=1)[0] == value
    assert p_value(y, x, a, b, permutations=1000, seed=1)[0] == 1.0


def test_bootstrap_interval_holds_the_effect_and_narrows() -> None:
    rng = np.random.default_rng(2)
    direction = np.array([1.0, 0.0, 0.0, 0.0])

    def sets(n):
        return (rng.normal(size=(n, 4)) + 0.6 * direction, rng.normal(size=(n, 4)) - 0.6 * direction,
                rng.normal(size=(n, 4)) + direction, rng.normal(size=(n, 4)) - direction)  # fmt: skip

    widths = []
    for n in (8, 200):
        x, y, a, b = sets(n)
        draws = effect_size_samples(x, y, a, b, resamples=400, seed=0)
        low, high = np.percentile(draws, [2.5, 97.5])
        assert low <= effect_size(x, y, a, b) <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_embeddings_are_masked_means_of_the_body_output() -> None:
    bpe = bpe_tokenizer()
    llama = tiny_llama(len(bpe))
    texts = ["This is John.", "Mary is here and she smiled.", "Home."]
    calls = []
    handle = llama.lm_head.register_forward_hook(lambda *args: calls.append(1))
    try:
        vectors = sentence_embeddings(llama, bpe, texts, batch_size=2)
    finally:
        handle.remove()
    assert not calls  # the 262k-vocabulary head of Gemma would cost more than the body
    with_bos = sentence_embeddings(llama, bpe, texts, batch_size=2, skip_bos=False)
    for text, vector, vector_with_bos in zip(texts, vectors, with_bos):
        ids = bpe(text, return_tensors="pt")["input_ids"]
        assert ids[0, 0] == bpe.bos_token_id  # the tokenizer adds a BOS, as Gemma's does
        with torch.no_grad():
            hidden = llama(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        # a causal LM's BOS state is the same for every sentence: the mean leaves it out
        expected = hidden[1:].mean(0).double().numpy()
        assert np.allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)
        everything = hidden.mean(0).double().numpy()
        assert np.allclose(vector_with_bos, everything / np.linalg.norm(everything), atol=1e-5)
        assert not np.allclose(vector, vector_with_bos, atol=1e-3)


def test_masked_lm_embeddings_keep_cls_and_sep() -> None:
    wordpiece = wordpiece_tokenizer()
    bert = tiny_bert(len(wordpiece))
    (vector,) = sentence_embeddings(bert, wordpiece, ["mary is here."])
    ids = wordpiece("mary is here.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = bert(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
    expected = hidden.mean(0).double().numpy()  # [CLS] and [SEP] attend to the sentence: bias-bench keeps them
    assert np.allclose(vector, expected / np.linalg.norm(expected), atol=1e-5)


def test_seat_score_on_a_masked_lm_with_limit() -> None:
    wordpiece = wordpiece_tokenizer()
    bert = tiny_bert(len(wordpiece))
    result = seat_score(bert, wordpiece, tests=["weat6", "sent-weat3"], limit=6, bootstrap=100,
                        permutations=2000)  # fmt: skip
    assert [t.name for t in result.tests] == ["weat6", "sent-weat3"]
    assert [t.exact for t in result.tests] == [True, True]  # C(12, 6) = 924 <= 2000 partitions
    for test in result.tests:
        assert test.effect_size.count == 12 and 0 < test.p_value <= 1
        assert test.effect_size.ci[0] <= test.effect_size.value <= test.effect_size.ci[1]
    gender = result.scores["gender"]["mean_abs_effect_size"]
    assert gender.value == pytest.approx(abs(result.tests[0].effect_size.value)) and gender.count == 1
    overall = result.scores["overall"]["mean_abs_effect_size"]
    assert overall.value == pytest.approx(np.mean([abs(t.effect_size.value) for t in result.tests]))
    assert overall.ci[0] <= overall.value <= overall.ci[1]
    sampled = seat_score(bert, wordpiece, tests=["weat6"], limit=6, bootstrap=0, permutations=500)
    assert not sampled.tests[0].exact and sampled.tests[0].effect_size.ci is None
    assert sampled.tests[0].effect_size.value == pytest.approx(result.tests[0].effect_size.value, rel=1e-5)
    again = SeatTest("toy", "gender", ("X", "Y", "A", "B"), ("a b",), ("a c",), ("b",), ("c",))
    with pytest.raises(BenchmarkError, match="at least 3 targets"):
        seat_score(bert, wordpiece, tests=[again])
