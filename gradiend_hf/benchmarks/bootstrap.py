"""Seeded percentile-bootstrap confidence intervals over examples, pairs or texts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gradiend_hf.errors import BenchmarkError

CONFIDENCE = 0.95
"""Coverage of every interval the benchmarks report."""


def resample_indices(n: int, *, resamples: int, seed: int) -> np.ndarray:
    """Indices of `resamples` bootstrap samples of size `n` (rows), drawn with replacement.

    Args:
        n: Number of items resampled (examples, pairs, texts).
        resamples: Number of bootstrap samples.
        seed: Seed of numpy's PCG64 generator; the same seed gives the same samples.

    Returns:
        An int64 array of shape (resamples, n).
    """
    if n < 1:
        raise BenchmarkError(f"Cannot bootstrap over {n} items; at least one is needed.")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(samples: np.ndarray, *, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The central `confidence` interval of bootstrap statistics (NaNs from degenerate samples are skipped)."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def centred_interval(samples: np.ndarray, estimate: float, *,
                     confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The percentile interval of bootstrap statistics moved so that their median sits on `estimate`.

    SEAT's effect sizes shrink under resampling with replacement (duplicated sentences), so their bootstrap draws sit
    off the estimate by an offset, and a plain percentile interval (or a bias-corrected one, which cannot reach past
    the draws) can miss the estimate altogether. Keeping the draws' spread but centring it on the estimate corrects
    that offset; for statistics whose draws are centred already (SS, CrowS-Pairs, perplexity) it is the percentile
    interval.
    """
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    return percentile_interval(samples - np.median(samples) + estimate, confidence=confidence)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of `statistic` recomputed on resampled item indices.

    Args:
        statistic: Maps an index array (length n, with repeats) to the score on those items.
        n: Number of items.
        resamples: Number of bootstrap samples; 0 disables the bootstrap.
        seed: Seed of the resampling.
        confidence: Coverage of the interval.

    Returns:
        (low, high), or None when `resamples` is 0 or no sample gives a finite score.
    """
    if resamples < 0:
        raise BenchmarkError(f"bootstrap must be >= 0 resamples, got {resamples}.")
    if resamples == 0:
        return None
    values = np.array([statistic(indices) for indices in resample_indices(n, resamples=resamples, seed=seed)])
    return percentile_interval(values, confidence=confidence)


def bootstrap_cis(
    statistics: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> list[tuple[float, float] | None]:
    """Like `bootstrap_ci` for a statistic with several values (e.g. SS, LMS and ICAT from the same samples).

    Returns:
        One interval per value (None for each when `resamples` is 0).
    """
    if resamples < 0:
        raise BenchmarkError(f"bootstrap must be >= 0 resamples, got {resamples}.")
    if resamples == 0:
        return [None] * len(np.atleast_1d(statistics(np.arange(n))))
    values = np.array(
        [np.atleast_1d(statistics(idx)) for idx in resample_indices(n, resamples=resamples, seed=seed)]
    )
    return [percentile_interval(values[:, k], confidence=confidence) for k in range(values.shape[1])]


def ratio_ci(
    numerators: np.ndarray,
    denominators: np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    confidence: float = CONFIDENCE,
) -> tuple[float, float] | None:
    """Interval of transform(Σ numerators / Σ denominators) with items resampled, vectorised.

    Used for token-weighted scores: per text, the summed log-likelihood (or hits) over its token count.
    """
    if resamples < 0:
        raise BenchmarkError(f"bootstrap must be >= 0 resamples, got {resamples}.")
    if resamples == 0:
        return None
    numerators = np.asarray(numerators, dtype=np.float64)
    denominators = np.asarray(denominators, dtype=np.float64)
    values = []
    # blocks of resamples keep the index matrix small for many texts
    block = max(1, 2_000_000 // max(1, numerators.size))
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, block):
        indices = rng.integers(0, numerators.size, size=(min(block, resamples - start), numerators.size))
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = numerators[indices].sum(1) / denominators[indices].sum(1)
        values.append(transform(ratio) if transform is not None else ratio)
    return percentile_interval(np.concatenate(values), confidence=confidence)
