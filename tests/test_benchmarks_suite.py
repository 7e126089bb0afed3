"""Tests for gradiend_hf.benchmarks.suite: running several benchmarks into a JSON-ready report."""

from __future__ import annotations

import json

import numpy as np

import pytest
from tiny_models import bpe_tokenizer, tiny_bert, tiny_llama, wordpiece_tokenizer

from gradiend_hf import benchmarks
from gradiend_hf.benchmarks import BenchmarkReport, run_benchmarks
from gradiend_hf.errors import BenchmarkError


@pytest.fixture(scope="module")
def bpe():
    return bpe_tokenizer()


@pytest.fixture(scope="module")
def report(bpe) -> BenchmarkReport:
    return run_benchmarks(tiny_llama(len(bpe)), bpe, limit=4, progress=False, bootstrap=50)


def test_public_api_is_sorted() -> None:
    def kind(name: str) -> int:
        return 0 if name.isupper() else 1 if name[0].isupper() else 2

    assert benchmarks.__all__ == sorted(benchmarks.__all__, key=lambda name: (kind(name), name))
    assert all(hasattr(benchmarks, name) for name in benchmarks.__all__)


def test_every_suite_reports_its_groups(report: BenchmarkReport) -> None:
    assert report.lm_kind == "causal" and set(report.seconds) == {"stereoset", "crows", "seat", "lm_score"}
    assert set(report.results["stereoset"]) == {"gender", "profession", "race", "religion", "overall"}
    assert set(report.results["crows"]) == {"gender", "race", "religion", "overall"}
    assert set(report.results["seat"]) == {"gender", "race", "overall"}
    assert set(report.results["lm_score"]["overall"]) == {"perplexity"}
    assert report.score("stereoset", "overall", "ss").count == 16
    assert report.score("crows", "race", "metric").count == 4
    assert report.details["lm_score"]["num_texts"] == 4 and len(report.details["seat"]["tests"]) == 13
    with pytest.raises(BenchmarkError, match="No score seat/religion"):
        report.score("seat", "religion", "mean_abs_effect_size")


def test_report_round_trips_through_json(report: BenchmarkReport, tmp_path) -> None:
    text = json.dumps(report.to_dict(), allow_nan=False)  # strict JSON: no NaN anywhere
    data = json.loads(text)
    again = BenchmarkReport.from_dict(data)
    assert again == report and json.dumps(again.to_dict(), allow_nan=False) == text
    loaded = BenchmarkReport.load(report.save(tmp_path / "r" / "report.json"))
    assert loaded == report
    # the per-example scores travel beside the JSON, exactly
    assert (tmp_path / "r" / "report.examples.safetensors").is_file()
    assert set(loaded.examples) == set(report.examples) == {"stereoset", "crows", "seat", "lm_score"}
    for suite, saved in report.examples.items():
        assert loaded.examples[suite].codes == saved.codes
        assert set(loaded.examples[suite].arrays) == set(saved.arrays)
        for name, array in saved.arrays.items():
            assert np.array_equal(loaded.examples[suite].arrays[name], array), (suite, name)
    with pytest.raises(BenchmarkError, match="version"):
        BenchmarkReport.from_dict({**data, "version": 99})


def test_bias_types_select_and_skip_suites(bpe) -> None:
    report = run_benchmarks(tiny_llama(len(bpe)), bpe, suites=["seat", "crows"], bias_types=["religion"],
                            limit=3, progress=False, bootstrap=0)  # fmt: skip
    assert "none of the bias types ['religion']" in report.skipped["seat"]
    assert set(report.results) == {"crows"} and set(report.results["crows"]) == {"religion", "overall"}


def test_masked_lm_suite(bpe) -> None:
    wordpiece = wordpiece_tokenizer()
    report = run_benchmarks(tiny_bert(len(wordpiece)), wordpiece, suites=("lm_score", "stereoset"), limit=2,
                            progress=False, bootstrap=0, bias_types=["gender"])  # fmt: skip
    assert report.lm_kind == "masked"
    assert set(report.results["lm_score"]["overall"]) == {"masked_accuracy"}
    assert set(report.results["stereoset"]) == {"gender", "overall"}


def test_bad_input_names_the_choices(bpe) -> None:
    llama = tiny_llama(len(bpe))
    with pytest.raises(BenchmarkError, match=r"Unknown or no suites \['glue'\].*'stereoset', 'crows'"):
        run_benchmarks(llama, bpe, suites=["glue"])
    with pytest.raises(BenchmarkError, match=r"Unknown or no bias types \['age'\].*'gender', 'race'"):
        run_benchmarks(llama, bpe, bias_types=["age"])
    with pytest.raises(BenchmarkError, match="Unknown or no suites"):
        run_benchmarks(llama, bpe, suites=[])
