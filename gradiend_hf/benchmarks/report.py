"""Presents benchmark reports side by side: a Markdown table with differences, and a bar plot with intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gradiend_hf._utils import save_figure
from gradiend_hf.benchmarks.score import Score
from gradiend_hf.benchmarks.suite import BenchmarkReport
from gradiend_hf.errors import BenchmarkError


@dataclass(frozen=True)
class MetricInfo:
    """How to show a metric and which way is better."""

    label: str
    better: str
    """"higher", "lower", or "ideal" (closer to `ideal` is better)."""
    ideal: float | None = None


METRIC_INFO: dict[tuple[str, str], MetricInfo] = {
    ("stereoset", "ss"): MetricInfo("StereoSet SS", "ideal", 50.0),
    ("stereoset", "lms"): MetricInfo("StereoSet LMS", "higher"),
    ("stereoset", "icat"): MetricInfo("StereoSet ICAT", "higher"),
    ("crows", "metric"): MetricInfo("CrowS-Pairs", "ideal", 50.0),
    ("crows", "stereo"): MetricInfo("CrowS-Pairs stereo", "ideal", 50.0),
    ("crows", "antistereo"): MetricInfo("CrowS-Pairs antistereo", "ideal", 50.0),
    ("seat", "mean_abs_effect_size"): MetricInfo("SEAT mean |d|", "ideal", 0.0),
    ("lm_score", "perplexity"): MetricInfo("Perplexity", "lower"),
    ("lm_score", "masked_accuracy"): MetricInfo("Masked accuracy", "higher"),
}
"""Display name and direction of every metric the suites report."""

PLOTTED = (("stereoset", "ss"), ("stereoset", "lms"), ("stereoset", "icat"), ("crows", "metric"),
           ("seat", "mean_abs_effect_size"), ("lm_score", "perplexity"), ("lm_score", "masked_accuracy"))  # fmt: skip
"""Metrics `plot_reports` draws (the CrowS direction splits are left to the table)."""


def _info(suite: str, metric: str) -> MetricInfo:
    return METRIC_INFO.get((suite, metric), MetricInfo(f"{suite} {metric}", "higher"))


def _rows(reports: Mapping[str, BenchmarkReport], metrics: tuple[tuple[str, str], ...] | None = None):
    """(suite, group, metric) in first-seen order over all reports."""
    seen: dict[tuple[str, str, str], None] = {}
    for report in reports.values():
        for suite, table in report.results.items():
            for group, scores in table.items():
                for metric in scores:
                    if metrics is None or (suite, metric) in metrics:
                        seen[(suite, group, metric)] = None
    return list(seen)


def _cell(score: Score | None) -> str:
    if score is None or math.isnan(score.value):
        return "–"
    text = f"{score.value:.3g}" if abs(score.value) < 10 else f"{score.value:.1f}"
    if score.ci is not None:
        low, high = score.ci
        text += f" [{low:.3g}, {high:.3g}]" if abs(score.value) < 10 else f" [{low:.1f}, {high:.1f}]"
    return text


def _direction(info: MetricInfo) -> str:
    if info.better == "ideal":
        return f" (→ {info.ideal:g})"
    return " (↑)" if info.better == "higher" else " (↓)"


def _verdict(info: MetricInfo, before: float, after: float) -> str:
    if math.isnan(before) or math.isnan(after) or before == after:
        return ""
    if info.better == "ideal":
        improved = abs(after - info.ideal) < abs(before - info.ideal)
    else:
        improved = (after > before) == (info.better == "higher")
    return " (better)" if improved else " (worse)"


def compare_reports(reports: Mapping[str, BenchmarkReport]) -> str:
    """A Markdown table of every score of several reports side by side, with differences to the first.

    Cells are "value [95 % interval]"; each Δ column is report − first report, marked (better)/(worse) by the
    metric's direction (SS and CrowS-Pairs are best at 50, SEAT |d| at 0, perplexity low, the rest high).

    Args:
        reports: Name -> report, e.g. {"base": r0, "debiased": r1}; the first is the reference.

    Returns:
        The Markdown text (a table, then one line per report with its model and seconds).
    """
    if not reports:
        raise BenchmarkError("compare_reports needs at least one report, got none.")
    names = list(reports)
    header = ["Benchmark", "Bias type", "Metric", *names, *(f"Δ {n} − {names[0]}" for n in names[1:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for suite, group, metric in _rows(reports):
        info = _info(suite, metric)
        scores = [r.results.get(suite, {}).get(group, {}).get(metric) for r in reports.values()]
        label = (info.label + _direction(info)).replace("|", "\\|")  # a bare | would split the Markdown cell
        row = [suite, group, label, *(_cell(s) for s in scores)]
        for score in scores[1:]:
            if score is None or scores[0] is None or math.isnan(score.value - scores[0].value):
                row.append("–")
            else:
                row.append(
                    f"{score.value - scores[0].value:+.3g}{_verdict(info, scores[0].value, score.value)}"
                )
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for name, report in reports.items():
        seconds = ", ".join(f"{suite} {s:.1f} s" for suite, s in report.seconds.items())
        limit = report.settings.get("limit")
        lines.append(f"- **{name}**: `{report.model}` ({report.lm_kind} LM), limit {limit}; {seconds}")
        for suite, reason in report.skipped.items():
            lines.append(f"  - {suite} skipped: {reason}")
    return "\n".join(lines) + "\n"


def plot_reports(
    reports: Mapping[str, BenchmarkReport], png_path: str | Path, *, title: str | None = None
) -> Path:
    """Bar plot of several reports: one panel per metric, groups on the x-axis, 95 % intervals as error bars.

    A dashed line marks the ideal value of SS, CrowS-Pairs (50) and SEAT |d| (0). matplotlib is imported here,
    with the Agg backend, so the rest of the package does not need it.

    Args:
        reports: Name -> report; bars keep this order.
        png_path: Where the PNG goes.
        title: Figure title.

    Returns:
        The path written.
    """
    if not reports:
        raise BenchmarkError("plot_reports needs at least one report, got none.")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - matplotlib is a dependency
        raise BenchmarkError("plot_reports needs matplotlib: pip install matplotlib.") from error
    panels: dict[tuple[str, str], list[str]] = {}
    for suite, group, metric in _rows(reports, PLOTTED):
        panels.setdefault((suite, metric), []).append(group)
    if not panels:
        raise BenchmarkError("The reports hold no plottable score; run run_benchmarks first.")
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    width = 0.8 / len(reports)
    for axis, ((suite, metric), groups) in zip(axes.flat, panels.items()):
        info = _info(suite, metric)
        for k, (name, report) in enumerate(reports.items()):
            scores = [report.results.get(suite, {}).get(group, {}).get(metric) for group in groups]
            values = [s.value if s is not None else math.nan for s in scores]
            # A percentile interval can exclude its own estimate (SEAT's mean |d| on a few tests): clip at 0.
            errors = [[0.0, 0.0] if s is None or s.ci is None
                      else [max(0.0, s.value - s.ci[0]), max(0.0, s.ci[1] - s.value)] for s in scores]  # fmt: skip
            positions = [g + (k - (len(reports) - 1) / 2) * width for g in range(len(groups))]
            axis.bar(positions, values, width, yerr=list(zip(*errors)), capsize=3, label=name)
        if info.better == "ideal":
            axis.axhline(info.ideal, color="black", linestyle="--", linewidth=0.8)
        axis.set_title(info.label + _direction(info), fontsize=10)
        axis.set_xticks(range(len(groups)), groups, fontsize=8)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=8)
    return save_figure(figure, png_path, title=title)
