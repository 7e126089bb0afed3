"""The paper-shaped comparison table: variants ranked by mean proportional rank over SS and SEAT, and its plot.

Proportional rank (the GRADIEND paper): for one metric, every variant that has it (the base included) is sorted from
worst to best; the i-th (0-based) of n gets i/(n − 1), so the best gets 1 and the worst 0 (ties share the mean of
their places). A variant's score is the mean of its SS and SEAT ranks; CrowS-Pairs is ranked in a third column
outside the mean, as in the paper's final version. Worse and better are distances to the unbiased value: |SS − 50|,
SEAT's mean |d|, |CrowS − 50|.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._utils import save_figure
from .benchmarks import BenchmarkReport, Score
from .benchmarks.glue import GLUE_TASKS
from .benchmarks.suite import SUITES

LM_SUITE = next(suite for suite in SUITES if suite.startswith("lm"))
"""The suite key of the LM score (perplexity / masked accuracy) in `BenchmarkReport.results`, taken from the suite."""

RANKED: dict[str, tuple[str, str, float]] = {
    "ss": ("stereoset", "ss", 50.0),
    "seat": ("seat", "mean_abs_effect_size", 0.0),
    "crows": ("crows", "metric", 50.0),
}
"""Ranked metric -> (suite, metric, unbiased value)."""

IN_MEAN = ("ss", "seat")
"""The metrics whose proportional ranks are averaged (CrowS-Pairs is shown beside, outside the mean)."""


@dataclass
class ComparisonRow:
    """One variant of the comparison with its scores, ranks and language-modelling cost."""

    name: str
    label: str
    scores: dict[str, Score | None]
    """"ss", "seat", "crows", "lms" (StereoSet LMS), "lm" (perplexity or masked accuracy)."""
    glue: dict[str, Score] = field(default_factory=dict)
    ranks: dict[str, float | None] = field(default_factory=dict)
    mean_rank: float | None = None
    notes: list[str] = field(default_factory=list)
    lm_metric: str | None = None
    """"perplexity" (causal LM) or "masked_accuracy" (masked LM): what `scores["lm"]` is."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "mean_rank": self.mean_rank, "ranks": self.ranks,
                "lm_metric": self.lm_metric,
                "scores": {k: (s.to_dict() if s else None) for k, s in self.scores.items()},
                "glue": {k: s.to_dict() for k, s in self.glue.items()}, "notes": self.notes}


def _score(report: BenchmarkReport, suite: str, metric: str, group: str) -> Score | None:
    table = report.results.get(suite, {})
    chosen = table.get(group) or table.get("overall") or {}
    return chosen.get(metric)


def row_for(name: str, label: str, report: BenchmarkReport, *, bias_type: str | None,
            glue: Mapping[str, Score] | None = None) -> ComparisonRow:
    """A row from one variant's benchmark report (the bias type's group, else "overall")."""
    group = bias_type or "overall"
    scores = {key: _score(report, suite, metric, group) for key, (suite, metric, _) in RANKED.items()}
    scores["lms"] = _score(report, "stereoset", "lms", group)
    lm = report.results.get(LM_SUITE, {}).get("overall", {})
    scores["lm"] = next(iter(lm.values()), None)
    notes = [f"{suite}: {reason}" for suite, reason in report.skipped.items()]
    return ComparisonRow(name, label, scores, dict(glue or {}), notes=notes, lm_metric=next(iter(lm), None))


def proportional_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Badness (distance to unbiased) per variant -> proportional rank in [0, 1], 1 the best; ties share."""
    order = sorted(values, key=lambda name: -values[name])  # worst (largest distance) first
    if len(order) == 1:
        return {order[0]: 1.0}
    ranks: dict[str, float] = {}
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for name in order[start:end + 1]:
            ranks[name] = (start + end) / 2 / (len(order) - 1)
        start = end + 1
    return ranks


def rank_rows(rows: list[ComparisonRow]) -> list[ComparisonRow]:
    """Fill every row's ranks and mean rank, and sort the rows best first (rows with no rank last)."""
    for key, (_, _, ideal) in RANKED.items():
        badness = {row.name: abs(row.scores[key].value - ideal) for row in rows
                   if row.scores.get(key) is not None and math.isfinite(row.scores[key].value)}
        ranks = proportional_ranks(badness) if badness else {}
        for row in rows:
            row.ranks[key] = ranks.get(row.name)
    for row in rows:
        ranked = [row.ranks[key] for key in IN_MEAN if row.ranks.get(key) is not None]
        row.mean_rank = sum(ranked) / len(ranked) if ranked else None
    return sorted(rows, key=lambda row: -1.0 if row.mean_rank is None else row.mean_rank, reverse=True)


def _cell(score: Score | None, digits: int = 1) -> str:
    if score is None or not math.isfinite(score.value):
        return "–"
    text = f"{score.value:.{digits}f}"
    if score.ci is not None:
        text += f" [{score.ci[0]:.{digits}f}, {score.ci[1]:.{digits}f}]"
    return text


def _rank(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _delta(row: ComparisonRow, base: ComparisonRow, key: str, *, relative: bool = False) -> str:
    score, reference = row.scores.get(key), base.scores.get(key)
    if score is None or reference is None:
        return "–"
    if relative:
        return f"{100 * (score.value / reference.value - 1):+.1f} %"
    return f"{score.value - reference.value:+.2f}"


def comparison_markdown(rows: list[ComparisonRow], *, base: str = "base") -> str:
    """The table (best first): mean rank, SS / SEAT / CrowS with intervals and ranks, LMS and LM-score changes, and
    zero-shot GLUE accuracies when measured; notes below say what a row lacks and why."""
    reference = next((row for row in rows if row.name == base), rows[0])
    tasks = sorted({task for row in rows for task in row.glue})
    lm_metric = next((row.lm_metric for row in rows if row.lm_metric), "perplexity")
    header = ["#", "variant", "mean rank (SS, SEAT)", "SS (→ 50)", "rank", "SEAT \\|d\\| (→ 0)", "rank",
              "CrowS (→ 50)", "rank", "LMS", "Δ LMS",
              "Δ perplexity" if lm_metric == "perplexity" else "Δ masked acc.",
              *(f"{GLUE_TASKS[task].folder if task in GLUE_TASKS else task} acc." for task in tasks)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for number, row in enumerate(rows, start=1):
        mark = " *" if row.ranks.get("seat") is None and row.mean_rank is not None else ""
        cells = [str(number), f"**{row.label}**" if row.name == base else row.label, _rank(row.mean_rank) + mark,
                 _cell(row.scores["ss"]), _rank(row.ranks.get("ss")), _cell(row.scores["seat"], 3),
                 _rank(row.ranks.get("seat")), _cell(row.scores["crows"]), _rank(row.ranks.get("crows")),
                 _cell(row.scores["lms"]), _delta(row, reference, "lms"),
                 _delta(row, reference, "lm", relative=True), *(_cell(row.glue.get(t)) for t in tasks)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {row.label}: {note}" for row in rows for note in row.notes]
    if any(row.ranks.get("seat") is None and row.mean_rank is not None for row in rows):
        notes.insert(0, "- \\* mean over SS alone: the variant has no SEAT score (see the note on its row).")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def plot_comparison(rows: list[ComparisonRow], png_path: str | Path, *, title: str | None = None) -> Path:
    """Two panels: mean proportional rank per variant (best on top), and SS against SEAT |d| with 95 % intervals."""
    from .evaluation.plots import _pyplot

    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 0.35 * len(rows) + 2.5))
    ranked = [row for row in rows if row.mean_rank is not None][::-1]
    colours = ["tab:gray" if row.name == "base" else "tab:blue" for row in ranked]
    left.barh([row.label for row in ranked], [row.mean_rank for row in ranked], color=colours)
    left.set(xlim=(0, 1), xlabel="mean proportional rank over SS and SEAT (1 = best)")
    left.tick_params(axis="y", labelsize=8)
    for row in rows:
        ss, seat = row.scores.get("ss"), row.scores.get("seat")
        if ss is None or seat is None:
            continue
        xerr = [[ss.value - ss.ci[0]], [ss.ci[1] - ss.value]] if ss.ci else None
        yerr = [[max(0.0, seat.value - seat.ci[0])], [max(0.0, seat.ci[1] - seat.value)]] if seat.ci else None
        right.errorbar(ss.value, seat.value, xerr=xerr, yerr=yerr, fmt="o", capsize=2, alpha=0.7, elinewidth=0.6)
        right.annotate(row.label, (ss.value, seat.value), fontsize=7, xytext=(3, 3), textcoords="offset points")
    right.axvline(50, color="black", linestyle="--", linewidth=0.8)
    right.set(xlabel="StereoSet SS (→ 50)", ylabel="SEAT mean |d| (→ 0)")
    right.grid(alpha=0.3)
    return save_figure(figure, png_path, title=title)


__all__ = ["IN_MEAN", "LM_SUITE", "RANKED", "ComparisonRow", "comparison_markdown", "plot_comparison",
           "proportional_ranks", "rank_rows", "row_for"]
