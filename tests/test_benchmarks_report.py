"""Tests for gradiend_hf.benchmarks.report: the Markdown comparison and the bar plot."""

from __future__ import annotations

import pytest

from gradiend_hf.benchmarks import BenchmarkReport, Score, compare_reports, plot_reports
from gradiend_hf.errors import BenchmarkError


def _report(ss: float, perplexity: float, effect: float) -> BenchmarkReport:
    return BenchmarkReport(
        model="tiny", lm_kind="causal",
        results={
            "stereoset": {"gender": {"ss": Score(ss, (ss - 5, ss + 5), 10)}},
            "seat": {"gender": {"mean_abs_effect_size": Score(effect, None, 6)}},
            "lm_score": {"overall": {"perplexity": Score(perplexity, (perplexity - 1, perplexity + 1), 100)}},
        },
        seconds={"stereoset": 1.0}, settings={"limit": 20},
    )  # fmt: skip


def test_table_shows_values_intervals_and_direction_aware_differences() -> None:
    table = compare_reports({"base": _report(62.0, 20.0, 0.5), "debiased": _report(53.0, 21.5, 0.7)})
    lines = table.splitlines()
    assert lines[0].startswith("| Benchmark | Bias type | Metric | base | debiased | Δ debiased − base |")
    ss_row = next(line for line in lines if "StereoSet SS" in line)
    assert "62.0 [57.0, 67.0]" in ss_row and "-9 (better)" in ss_row  # closer to 50
    assert "(worse)" in next(line for line in lines if "Perplexity" in line)  # higher perplexity
    assert "(worse)" in next(line for line in lines if "SEAT" in line)  # further from 0
    assert "**base**: `tiny`" in table


def test_plot_writes_a_png(tmp_path) -> None:
    path = plot_reports({"base": _report(62.0, 20.0, 0.5), "after": _report(55.0, 20.5, 0.2)},
                        tmp_path / "plots" / "bench.png", title="tiny")  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_input_is_refused() -> None:
    with pytest.raises(BenchmarkError, match="at least one report"):
        compare_reports({})
    with pytest.raises(BenchmarkError, match="at least one report"):
        plot_reports({}, "x.png")


def test_plot_accepts_an_interval_that_excludes_its_estimate(tmp_path) -> None:
    # A percentile bootstrap of SEAT's mean |d| over a few tests can end below the estimate (seen on Gemma).
    report = _report(62.0, 20.0, 0.813)
    report.results["seat"]["gender"]["mean_abs_effect_size"] = Score(0.813, (0.289, 0.806), 13)
    path = plot_reports({"base": report}, tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
