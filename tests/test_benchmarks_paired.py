"""Paired comparisons of two benchmark runs: the same resamples for both, checked against a plain loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import bpe_tokenizer, tiny_llama

from gradiend_hf.benchmarks import BenchmarkReport, run_benchmarks
from gradiend_hf.benchmarks.bootstrap import centred_interval, resample_indices
from gradiend_hf.benchmarks.crows_pairs import crows_metric
from gradiend_hf.benchmarks.examples import SuiteExamples
from gradiend_hf.benchmarks.paired import paired_differences
from gradiend_hf.benchmarks.seat import effect_size_from_similarities
from gradiend_hf.benchmarks.stereoset import stereoset_metrics
from gradiend_hf.errors import BenchmarkError

OPTIONS = {"bias_types": ["gender"], "limit": 6, "progress": False, "bootstrap": 0}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    bpe = bpe_tokenizer()
    model = tiny_llama(len(bpe))
    base = run_benchmarks(model, bpe, **OPTIONS)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "mlp" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    other = run_benchmarks(model, bpe, **OPTIONS)
    folder = tmp_path_factory.mktemp("paired")
    return BenchmarkReport.load(base.save(folder / "base.json")), BenchmarkReport.load(other.save(folder / "o.json"))


def _by_key(differences):
    return {(d.suite, d.group, d.metric): d for d in differences}


def test_a_run_against_itself_moves_nothing(reports):
    base, _ = reports
    differences = paired_differences(base, base, resamples=200)
    assert {d.suite for d in differences} == {"stereoset", "crows", "seat", "lm_score"}
    for d in differences:
        assert d.difference == 0.0 and d.ci == (0.0, 0.0) and not d.moved


def test_stereoset_and_crows_match_a_plain_paired_loop(reports):
    base, other = reports
    found = _by_key(paired_differences(base, other, resamples=300, seed=3))
    for suite in ("stereoset", "crows"):
        b, o = base.examples[suite].arrays, other.examples[suite].arrays
        n = len(b["scores"])
        draws = []
        for idx in resample_indices(n, resamples=300, seed=3):
            if suite == "stereoset":
                draws.append(stereoset_metrics(o["scores"][idx], o["target"][idx])[0]
                             - stereoset_metrics(b["scores"][idx], b["target"][idx])[0])
            else:
                stereo = b["stereo"][idx].astype(bool)
                draws.append(crows_metric(o["scores"][idx, 0], o["scores"][idx, 1], stereo)[0]
                             - crows_metric(b["scores"][idx, 0], b["scores"][idx, 1], stereo)[0])
        metric = "ss" if suite == "stereoset" else "metric"
        d = found[(suite, "overall", metric)]
        assert d.ci == pytest.approx(centred_interval(np.array(draws), d.difference))
        assert d.difference == pytest.approx(other.results[suite]["overall"][metric].value
                                             - base.results[suite]["overall"][metric].value)


def test_seat_and_perplexity_differences(reports):
    base, other = reports
    found = _by_key(paired_differences(base, other, resamples=200))
    seat = found[("seat", "overall", "mean_abs_effect_size")]
    assert seat.base == pytest.approx(base.results["seat"]["overall"]["mean_abs_effect_size"].value)
    assert seat.other == pytest.approx(other.results["seat"]["overall"]["mean_abs_effect_size"].value)
    data = base.examples["seat"]
    test = data.codes["test"][0]
    d = effect_size_from_similarities(data.arrays[f"{test}/cos_a"], data.arrays[f"{test}/cos_b"],
                                      int(data.arrays[f"{test}/n_x"][0]))
    assert d == pytest.approx(base.details["seat"]["tests"][0]["effect_size"]["value"])
    lm = found[("lm_score", "overall", "perplexity")]
    assert lm.base == pytest.approx(base.results["lm_score"]["overall"]["perplexity"].value)
    assert lm.ci[0] <= lm.difference <= lm.ci[1]


def test_a_clear_shift_is_moved_and_toward_the_ideal():
    rng = np.random.default_rng(0)
    n = 200
    scores = rng.normal(size=(n, 3))
    scores[:, 2] = -10.0  # unrelated candidates always lose
    base_scores = scores.copy()
    base_scores[:, 0] = base_scores[:, 1] + 1.0  # the stereotype always wins: SS 100
    other_scores = scores.copy()  # SS about 50
    codes = {"target": ["t"], "bias_type": ["gender"]}
    arrays = {"target": np.zeros(n, dtype=np.int64), "bias_type": np.zeros(n, dtype=np.int64)}
    base = BenchmarkReport("m", "causal", {"stereoset": {}},
                           examples={"stereoset": SuiteExamples({**arrays, "scores": base_scores}, codes)})
    other = BenchmarkReport("m", "causal", {"stereoset": {}},
                            examples={"stereoset": SuiteExamples({**arrays, "scores": other_scores}, codes)})
    d = _by_key(paired_differences(base, other, resamples=500))[("stereoset", "gender", "ss")]
    assert d.base == 100.0 and 40 < d.other < 60 and d.moved and d.toward_ideal > 40
    assert d.to_dict()["moved"] is True


def test_mismatched_runs_are_refused(reports):
    base, other = reports
    fewer = run_benchmarks(tiny_llama(len(bpe_tokenizer())), bpe_tokenizer(), suites=["stereoset"],
                           **{**OPTIONS, "limit": 3})
    with pytest.raises(BenchmarkError, match="different 'stereoset' examples"):
        paired_differences(base, fewer)
    bare = BenchmarkReport.from_dict(other.to_dict())  # JSON alone: no per-example scores
    with pytest.raises(BenchmarkError, match="no per-example scores"):
        paired_differences(base, bare)
