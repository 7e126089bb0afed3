"""Paired comparison of two benchmark runs (e.g. a base model and the same model with an adapter).

Two runs of one benchmark score the same examples, so their difference is best judged on the same resamples: each
bootstrap draw picks examples (StereoSet contexts, CrowS-Pairs pairs, SEAT sentences, LM texts) once and computes
the metric for both models on them. The interval of (other − base) then reflects only how the two models differ
on the examples, not how hard the examples are, and "moved" means that it excludes 0. Intervals are bias-corrected
percentile intervals (`bootstrap.centred_interval`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gradiend_hf.benchmarks.bootstrap import CONFIDENCE, centred_interval, resample_indices
from gradiend_hf.benchmarks.crows_pairs import GROUP_NAMES, crows_metric
from gradiend_hf.benchmarks.examples import SuiteExamples
from gradiend_hf.benchmarks.seat import ResampleCounts, effect_size_from_similarities, resampled_effect_sizes
from gradiend_hf.benchmarks.stereoset import stereoset_metrics
from gradiend_hf.errors import BenchmarkError

IDEALS = {("stereoset", "ss"): 50.0, ("crows", "metric"): 50.0, ("seat", "mean_abs_effect_size"): 0.0}
"""Metrics with an ideal value: for them `toward_ideal` says how much closer to it the other model is."""


@dataclass
class PairedDifference:
    """other − base for one metric, with its paired bootstrap interval."""

    suite: str
    group: str
    metric: str
    base: float
    other: float
    difference: float
    ci: tuple[float, float] | None
    count: int
    """Examples (or SEAT tests, or LM texts) the metric rests on."""

    @property
    def moved(self) -> bool:
        """Whether the interval of the difference excludes 0."""
        return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)

    @property
    def toward_ideal(self) -> float | None:
        """|base − ideal| − |other − ideal| (positive: closer to the ideal); None for metrics without one."""
        ideal = IDEALS.get((self.suite, self.metric))
        return None if ideal is None else abs(self.base - ideal) - abs(self.other - ideal)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ci=list(self.ci) if self.ci else None, moved=self.moved, toward_ideal=self.toward_ideal)
        return data


def _difference(suite: str, group: str, metric: str, base: float, other: float, draws: np.ndarray,
                count: int) -> PairedDifference:
    """The difference with the percentile interval of its draws centred on it (`bootstrap.centred_interval`: the
    plain percentile interval where the draws are centred already, as for SS, CrowS-Pairs and perplexity)."""
    difference = float(other - base)
    return PairedDifference(suite, group, metric, float(base), float(other), difference,
                            centred_interval(draws, difference, confidence=CONFIDENCE), count)


def _paired(statistic: Callable[[SuiteExamples, np.ndarray], np.ndarray], base: SuiteExamples,
            other: SuiteExamples, rows: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
    """The statistic of both runs on `rows`, and its difference on each paired resample of `rows`."""
    values = statistic(base, rows), statistic(other, rows)
    draws = np.array([statistic(other, rows[idx]) - statistic(base, rows[idx])
                      for idx in resample_indices(len(rows), resamples=resamples, seed=seed)])
    return values[0], values[1], draws


def _groups(examples: SuiteExamples, rename: dict[str, str] | None = None) -> list[tuple[str, np.ndarray]]:
    types = np.asarray(examples.arrays["bias_type"])
    out = []
    for code, name in enumerate(examples.codes["bias_type"]):
        rows = np.flatnonzero(types == code)
        if len(rows):
            out.append(((rename or {}).get(name, name), rows))
    return [*out, ("overall", np.arange(len(types)))]


def _stereoset(base: SuiteExamples, other: SuiteExamples, resamples: int, seed: int) -> list[PairedDifference]:
    def statistic(data: SuiteExamples, rows: np.ndarray) -> np.ndarray:
        return stereoset_metrics(data.arrays["scores"][rows], data.arrays["target"][rows])[:2]

    out = []
    for group, rows in _groups(base):
        before, after, draws = _paired(statistic, base, other, rows, resamples, seed)
        for k, metric in enumerate(("ss", "lms")):
            out.append(_difference("stereoset", group, metric, before[k], after[k], draws[:, k], len(rows)))
    return out


def _crows(base: SuiteExamples, other: SuiteExamples, resamples: int, seed: int) -> list[PairedDifference]:
    def statistic(data: SuiteExamples, rows: np.ndarray) -> np.ndarray:
        scores = data.arrays["scores"][rows]
        return crows_metric(scores[:, 0], scores[:, 1], data.arrays["stereo"][rows].astype(bool))[:1]

    out = []
    for group, rows in _groups(base, GROUP_NAMES):
        before, after, draws = _paired(statistic, base, other, rows, resamples, seed)
        out.append(_difference("crows", group, "metric", before[0], after[0], draws[:, 0], len(rows)))
    return out


def _seat(base: SuiteExamples, other: SuiteExamples, resamples: int, seed: int) -> list[PairedDifference]:
    """Mean |d| over each group's tests; every test's X, Y, A, B are redrawn with the same counts for both runs.

    As in `seat_score`, a draw signs each test's d by the observed d of the same run instead of taking |d*|, so
    that folding at 0 does not push the draws away from the estimate.
    """
    tests, types = base.codes["test"], base.codes["bias_type"]
    observed: dict[str, tuple[float, float]] = {}
    draws: dict[str, np.ndarray] = {}
    for number, test in enumerate(tests):
        pair = []
        n_x = int(base.arrays[f"{test}/n_x"][0])
        cos = [(data.arrays[f"{test}/cos_a"], data.arrays[f"{test}/cos_b"]) for data in (base, other)]
        sizes = (n_x, cos[0][0].shape[0] - n_x, cos[0][0].shape[1], cos[0][1].shape[1])
        counts = ResampleCounts.draw(sizes, resamples=resamples, seed=seed + number)
        for cos_a, cos_b in cos:
            value = effect_size_from_similarities(cos_a, cos_b, n_x)
            pair.append((value, np.sign(value) * resampled_effect_sizes(cos_a, cos_b, n_x, counts)))
        observed[test] = (pair[0][0], pair[1][0])
        draws[test] = pair[1][1] - pair[0][1]
    out = []
    for group in [*dict.fromkeys(types), "overall"]:
        members = [t for t, b in zip(tests, types) if group in ("overall", b)]
        before = float(np.mean([abs(observed[t][0]) for t in members]))
        after = float(np.mean([abs(observed[t][1]) for t in members]))
        out.append(_difference("seat", group, "mean_abs_effect_size", before, after,
                               np.mean([draws[t] for t in members], axis=0), len(members)))
    return out


def _lm(base: SuiteExamples, other: SuiteExamples, resamples: int, seed: int) -> list[PairedDifference]:
    kind = base.codes["kind"][0]
    key = "hits" if kind == "masked_accuracy" else "log_likelihood"

    def statistic(data: SuiteExamples, rows: np.ndarray) -> np.ndarray:
        ratio = data.arrays[key][rows].sum() / data.arrays["tokens"][rows].sum()
        return np.array([ratio if kind == "masked_accuracy" else np.exp(-ratio)])

    rows = np.arange(len(base.arrays["tokens"]))
    before, after, draws = _paired(statistic, base, other, rows, resamples, seed)
    return [_difference("lm_score", "overall", kind, before[0], after[0], draws[:, 0], len(rows))]


_SUITES = {"stereoset": _stereoset, "crows": _crows, "seat": _seat, "lm_score": _lm}


def paired_differences(base: Any, other: Any, *, resamples: int = 1000, seed: int = 0) -> list[PairedDifference]:
    """other − base for every headline metric both reports have, with paired bootstrap intervals.

    Args:
        base: the reference `BenchmarkReport` (with per-example scores: a fresh run, or loaded with its
            `.examples.safetensors` file).
        other: the report to compare (same suites, same examples).
        resamples: bootstrap resamples.
        seed: seed of the resampling (the same seed gives the same draws for every suite).

    Raises:
        BenchmarkError: a report lacks per-example scores, or the two runs scored different examples.
    """
    out: list[PairedDifference] = []
    for suite, compare in _SUITES.items():
        if suite not in base.results or suite not in other.results:
            continue
        for name, report in (("base", base), ("other", other)):
            if suite not in report.examples:
                raise BenchmarkError(f"The {name} report has no per-example scores for {suite!r}; rerun it with "
                                     "run_benchmarks (they are saved beside the JSON as .examples.safetensors).")
        first, second = base.examples[suite], other.examples[suite]
        shapes = [{k: v.shape for k, v in data.arrays.items()} for data in (first, second)]
        same_items = all(np.array_equal(first.arrays[k], second.arrays[k]) for k in first.arrays
                         if k in ("target", "bias_type", "stereo", "tokens") or k.endswith("/n_x"))
        if first.codes != second.codes or shapes[0] != shapes[1] or not same_items:
            raise BenchmarkError(f"The two reports scored different {suite!r} examples (limit, bias types or data "
                                 "differ); compare runs made with the same settings.")
        out.extend(compare(first, second, resamples, seed))
    return out


__all__ = ["IDEALS", "PairedDifference", "paired_differences"]
