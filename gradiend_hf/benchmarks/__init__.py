"""Bias and language-ability benchmarks (StereoSet, CrowS-Pairs, SEAT, LM score) with their bundled data.

Each benchmark takes any transformers masked or causal LM (a base model, one with an adapter applied in place,
or a merged model) and imports no GRADIEND code.
"""

from gradiend_hf.benchmarks.bootstrap import bootstrap_ci, bootstrap_cis, percentile_interval, ratio_ci
from gradiend_hf.benchmarks.crows_pairs import (
    CROWS_BIAS_TYPES,
    CrowsPair,
    CrowsPairsResult,
    crows_metric,
    crows_pairs_score,
    load_crows_pairs,
)
from gradiend_hf.benchmarks.glue import GLUE_TASKS, glue_zero_shot, load_glue
from gradiend_hf.benchmarks.lm_score import LMScoreResult, default_lm_texts, lm_score
from gradiend_hf.benchmarks.paired import PairedDifference, paired_differences
from gradiend_hf.benchmarks.report import METRIC_INFO, compare_reports, plot_reports
from gradiend_hf.benchmarks.score import Score
from gradiend_hf.benchmarks.seat import (
    DEFAULT_SEAT_TESTS,
    SEAT_BIAS_TYPES,
    SEAT_TESTS,
    SeatResult,
    SeatTest,
    SeatTestResult,
    effect_size,
    load_seat_tests,
    p_value,
    seat_score,
    sentence_embeddings,
)
from gradiend_hf.benchmarks.stereoset import (
    STEREOSET_BIAS_TYPES,
    StereoSetExample,
    StereoSetResult,
    load_stereoset,
    stereoset_metrics,
    stereoset_score,
)
from gradiend_hf.benchmarks.suite import BIAS_TYPES, LM_SCORE, SUITES, BenchmarkReport, run_benchmarks

__all__ = [
    "BIAS_TYPES",
    "CROWS_BIAS_TYPES",
    "DEFAULT_SEAT_TESTS",
    "GLUE_TASKS",
    "LM_SCORE",
    "METRIC_INFO",
    "SEAT_BIAS_TYPES",
    "SEAT_TESTS",
    "STEREOSET_BIAS_TYPES",
    "SUITES",
    "BenchmarkReport",
    "CrowsPair",
    "CrowsPairsResult",
    "LMScoreResult",
    "PairedDifference",
    "Score",
    "SeatResult",
    "SeatTest",
    "SeatTestResult",
    "StereoSetExample",
    "StereoSetResult",
    "bootstrap_ci",
    "bootstrap_cis",
    "compare_reports",
    "crows_metric",
    "crows_pairs_score",
    "default_lm_texts",
    "effect_size",
    "glue_zero_shot",
    "lm_score",
    "load_crows_pairs",
    "load_glue",
    "load_seat_tests",
    "load_stereoset",
    "p_value",
    "paired_differences",
    "percentile_interval",
    "plot_reports",
    "ratio_ci",
    "run_benchmarks",
    "seat_score",
    "sentence_embeddings",
    "stereoset_metrics",
    "stereoset_score",
]
