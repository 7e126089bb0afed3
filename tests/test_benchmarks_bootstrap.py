"""Tests for gradiend_hf.benchmarks.bootstrap: seeded percentile intervals."""

from __future__ import annotations

import numpy as np
import pytest

from gradiend_hf.benchmarks.bootstrap import (
    bootstrap_ci,
    bootstrap_cis,
    percentile_interval,
    ratio_ci,
    resample_indices,
)
from gradiend_hf.errors import BenchmarkError


def test_resampling_is_seeded_and_with_replacement() -> None:
    first = resample_indices(10, resamples=50, seed=3)
    assert first.shape == (50, 10) and first.min() >= 0 and first.max() <= 9
    assert np.array_equal(first, resample_indices(10, resamples=50, seed=3))
    assert not np.array_equal(first, resample_indices(10, resamples=50, seed=4))
    assert any(len(set(row)) < 10 for row in first)
    with pytest.raises(BenchmarkError, match="at least one"):
        resample_indices(0, resamples=5, seed=0)


def test_percentile_interval_skips_non_finite_draws() -> None:
    assert percentile_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))
    assert percentile_interval(np.array([np.nan, 1.0, np.inf, 1.0])) == (1.0, 1.0)
    assert percentile_interval(np.array([np.nan])) is None


def test_interval_of_a_mean_holds_it_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=30), rng.normal(size=3000)
    intervals = []
    for data in (small, large):
        ci = bootstrap_ci(lambda idx, d=data: d[idx].mean(), len(data), resamples=500, seed=1)
        assert ci[0] <= data.mean() <= ci[1]
        intervals.append(ci[1] - ci[0])
    assert intervals[1] < intervals[0] / 5  # ~ 1/sqrt(100)
    assert bootstrap_ci(lambda idx: 0.0, 5, resamples=0) is None
    with pytest.raises(BenchmarkError, match=">= 0"):
        bootstrap_ci(lambda idx: 0.0, 5, resamples=-2)


def test_several_values_share_the_same_draws() -> None:
    data = np.arange(20.0)
    mean_ci, double_ci = bootstrap_cis(lambda idx: np.array([data[idx].mean(), 2 * data[idx].mean()]), 20,
                                       resamples=200, seed=0)  # fmt: skip
    assert double_ci == pytest.approx((2 * mean_ci[0], 2 * mean_ci[1]))
    assert bootstrap_cis(lambda idx: np.zeros(3), 4, resamples=0) == [None, None, None]


def test_ratio_interval_matches_the_generic_bootstrap_statistic() -> None:
    rng = np.random.default_rng(1)
    sums, counts = rng.normal(-30, 5, size=200), rng.integers(5, 15, size=200).astype(float)
    ci = ratio_ci(sums, counts, resamples=400, seed=0, transform=lambda r: np.exp(-r))
    point = np.exp(-sums.sum() / counts.sum())
    assert ci[0] <= point <= ci[1]
    assert ratio_ci(sums, counts, resamples=0) is None


def test_centred_interval_keeps_the_spread_and_sits_on_the_estimate():
    from gradiend_hf.benchmarks.bootstrap import centred_interval, percentile_interval

    draws = np.random.default_rng(0).normal(size=20001)
    assert centred_interval(draws, float(np.median(draws))) == pytest.approx(percentile_interval(draws))
    # draws shrunk toward 0 and off the estimate (as SEAT's resampled effect sizes are): the plain interval misses the
    # estimate 2.5, the centred one has the same width around it
    shrunk = 0.1 * draws + 1.0
    assert percentile_interval(shrunk)[1] < 2.5
    low, high = centred_interval(shrunk, 2.5)
    assert low < 2.5 < high
    assert high - low == pytest.approx(percentile_interval(shrunk)[1] - percentile_interval(shrunk)[0])
    assert centred_interval(np.array([np.nan]), 0.0) is None
