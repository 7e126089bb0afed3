"""The demo's `report.md`, and the measured results it puts into the GRADIEND model's and the adapter's cards."""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

GOAL_LM_DROP = 1.0
"""The debiasing goal allows the StereoSet LM score (LMS) to drop by less than this many points."""


def _fmt(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.{digits}g}" if signed else f"{value:.{digits}g}"


def _score(report: Any, suite: str, group: str, metric: str):
    return report.results.get(suite, {}).get(group, {}).get(metric)


def _ci(score: Any) -> str:
    if score is None:
        return "–"
    interval = f" [{score.ci[0]:.3g}, {score.ci[1]:.3g}]" if score.ci else ""
    return f"{score.value:.3g}{interval}"


def goal_lines(base: Any, debiased: Any, bias_type: str | None) -> list[str]:
    """Plain sentences on whether the debiasing goal was met: SS toward 50, SEAT |d| toward 0, LMS drop < 1 point."""
    group = bias_type or "overall"
    lines = []
    checks = [("stereoset", "ss", 50.0, "StereoSet SS"), ("crows", "metric", 50.0, "CrowS-Pairs"),
              ("seat", "mean_abs_effect_size", 0.0, "SEAT mean |d|")]
    for suite, metric, ideal, label in checks:
        before, after = _score(base, suite, group, metric), _score(debiased, suite, group, metric)
        if before is None or after is None:
            continue
        gain = abs(before.value - ideal) - abs(after.value - ideal)
        overlap = bool(before.ci and after.ci and not (after.ci[1] < before.ci[0] or after.ci[0] > before.ci[1]))
        if gain <= 0:
            verdict = "missed: not closer to neutral"
        elif overlap:
            verdict = "toward neutral, but within the 95 % intervals (not a clear change)"
        else:
            verdict = "met: closer to neutral, outside the base's 95 % interval"
        lines.append(f"- {label} ({group}): {before.value:.3g} → {after.value:.3g}, {abs(gain):.3g} "
                     f"{'closer to' if gain > 0 else 'further from'} the neutral {ideal:g}. **{verdict}**")
    before, after = _score(base, "stereoset", group, "lms"), _score(debiased, "stereoset", group, "lms")
    if before is not None and after is not None:
        drop = before.value - after.value
        met = drop < GOAL_LM_DROP
        change = ("unchanged" if abs(drop) < 5e-4 else
                  f"a drop of {drop:.3g} points" if drop > 0 else f"a rise of {-drop:.3g} points")
        lines.append(f"- StereoSet LMS ({group}): {before.value:.3g} → {after.value:.3g}, {change} "
                     f"(goal: a drop of less than {GOAL_LM_DROP:g}). **{'met' if met else 'missed'}**")
    for metric, label in (("perplexity", "Perplexity"), ("masked_accuracy", "Masked-token accuracy")):
        before, after = _score(base, "lms", "overall", metric), _score(debiased, "lms", "overall", metric)
        if before is not None and after is not None:
            change = 100 * (after.value - before.value) / before.value
            lines.append(f"- {label} on held-out WikiText: {before.value:.4g} → {after.value:.4g} ({change:+.2f} %).")
    return lines


def eval_results(report: Any, *, task_type: str, suffix: str,
                 groups: list[str] | None = None) -> list[dict[str, Any]]:
    """`model-index` rows (EvalResult fields) for the headline benchmark numbers of one report (only `groups`,
    e.g. the adapter's bias type, when given; the LM score always)."""
    names = {("stereoset", "ss"): ("stereoset", "StereoSet (dev, intrasentence)", "ss", "SS"),
             ("stereoset", "lms"): ("stereoset", "StereoSet (dev, intrasentence)", "lms", "LMS"),
             ("stereoset", "icat"): ("stereoset", "StereoSet (dev, intrasentence)", "icat", "ICAT"),
             ("crows", "metric"): ("crows_pairs", "CrowS-Pairs", "stereotype_preference", "CrowS-Pairs"),
             ("seat", "mean_abs_effect_size"): ("seat", "SEAT", "effect_size", "SEAT mean |d|"),
             ("lms", "perplexity"): ("wikitext", "WikiText-2 test (held-out lines)", "perplexity", "perplexity"),
             ("lms", "masked_accuracy"): ("wikitext", "WikiText-2 test (held-out lines)", "accuracy",
                                          "masked accuracy")}
    rows = []
    for suite, table in report.results.items():
        for group, metrics in table.items():
            for metric, score in metrics.items():
                if (suite, metric) not in names or not math.isfinite(score.value):
                    continue
                if groups is not None and group not in groups and suite != "lms":
                    continue
                dataset_type, dataset_name, metric_type, label = names[(suite, metric)]
                group_label = "" if group == "overall" and suite == "lms" else f" {group}"
                rows.append({"task_type": task_type, "dataset_type": dataset_type, "dataset_name": dataset_name,
                             "metric_type": metric_type, "metric_name": f"{label}{group_label} ({suffix})",
                             "metric_value": round(float(score.value), 4)})
    return rows


def _timing_table(steps: Mapping[str, Mapping[str, Any]]) -> list[str]:
    from .demo import STEPS

    lines = ["| step | seconds |", "|---|---|"]
    total = 0.0
    for step in [s for s in STEPS if s in steps]:
        info = steps[step]
        seconds = float(info.get("seconds", 0.0))
        total += seconds
        lines.append(f"| {step} | {seconds:.0f} |")
    lines.append(f"| **total** | **{total:.0f}** ({total / 60:.1f} min) |")
    return lines


def _search_rows(result: Any, chosen: Any, test: Any) -> list[str]:
    positive, negative = result.classes
    header = ("| model | split | balanced index | LM factor | balanced score | "
              f"{positive} index | {negative} index | p({positive} word) | p({negative} word) | perplexity |")
    lines = [header, "|" + "---|" * 10]

    def row(label: str, split: str, point: Any) -> str:
        p = point.mean_p or {}
        p_pos = sum(p.get(c, {}).get(positive, 0.0) for c in (positive, negative)) / 2
        p_neg = sum(p.get(c, {}).get(negative, 0.0) for c in (positive, negative)) / 2
        indices = point.indices or {}
        return (f"| {label} | {split} | {_fmt(indices.get('balanced'))} | {_fmt(point.lm_factor)} | "
                f"{_fmt(point.score('balanced'))} | {_fmt(indices.get(positive))} | {_fmt(indices.get(negative))} | "
                f"{p_pos:.3g} | {p_neg:.3g} | {_fmt(point.lm_perplexity, 4)} |")

    lines.append(row("base", "validation", result.base))
    lines.append(row(f"h = {chosen.h:g}, α = {chosen.alpha:g}", "validation", chosen))
    lines.append(row("base", "test", test.base))
    lines.append(row(f"h = {chosen.h:g}, α = {chosen.alpha:g}", "test", test.points[0]))
    return lines


def _strength_rows(out: Path, reports: Mapping[str, Any], steps: Mapping[str, Mapping[str, Any]],
                   group: str) -> list[str]:
    """The chosen update at scales 0, 1 and the `strength` step's scales: bias against language modelling."""
    from .benchmarks import BenchmarkReport

    scales = steps.get("strength", {}).get("scales") or []
    if not scales:
        return []
    lm_base = BenchmarkReport.load(out / "benchmarks" / "scale-0.json")
    rows = [(0.0, reports["base"], reports["base"]), (1.0, reports["debiased"], reports["base"])]
    rows += [(s, BenchmarkReport.load(out / "benchmarks" / f"scale-{s:g}.json"), lm_base) for s in scales]
    kind = "perplexity" if reports["base"].lm_kind == "causal" else "masked_accuracy"
    has_seat = any(_score(report, "seat", group, "mean_abs_effect_size") is not None for _, report, _ in rows)
    seat_header = f" SEAT mean \\|d\\| ({group}) |" if has_seat else ""
    lines = [f"| scale | StereoSet SS ({group}) |{seat_header} StereoSet LMS ({group}) | {kind} change vs base |",
             "|---|---|---|---|" + ("---|" if has_seat else "")]
    for scale, report, reference in rows:
        lm, lm0 = _score(report, "lms", "overall", kind), _score(reference, "lms", "overall", kind)
        change = "–" if scale == 0 or lm is None or lm0 is None else f"{100 * (lm.value - lm0.value) / lm0.value:+.1f} %"
        seat = f" {_ci(_score(report, 'seat', group, 'mean_abs_effect_size'))} |" if has_seat else ""
        lines.append(f"| {scale:g} | {_ci(_score(report, 'stereoset', group, 'ss'))} |{seat} "
                     f"{_ci(_score(report, 'stereoset', group, 'lms'))} | {change} |")
    return ["### Turning the update up", "",
            "Scale s applies W + s·ΔW (`adapter.applied(base, scale=s)`, `gradiend apply --scale s`). No criterion "
            "chose the larger scales: they show what a stronger edit buys in bias and costs in language modelling "
            f"(the perplexity change at scales above 1 is measured on {steps['strength'].get('lm_texts', 'fewer')} "
            "LM texts against the base on the same texts).", "", *lines, ""]


def write_report(out: Path, args: Any, steps: Mapping[str, Mapping[str, Any]], feature: Any,
                 bias_types: list[str] | None) -> Path:
    """Write `out/report.md` from the saved step outputs, and put the measured results into both model cards."""
    from .adapters import DeltaAdapter
    from .benchmarks import BenchmarkReport, compare_reports, plot_reports
    from .evaluation import DecoderSearchResult, EncoderReport
    from .modeling_gradiend import GradiendModel

    encoder = EncoderReport.load(out / "evaluation")
    search = DecoderSearchResult.from_json(out / "search" / "search.json")
    test = DecoderSearchResult.from_json(out / "search" / "chosen_point_test.json")
    chosen_info = steps["search"]
    chosen = next(p for p in search.points if p.h == chosen_info["h"] and p.alpha == chosen_info["alpha"])
    reports = {"base": BenchmarkReport.load(out / "benchmarks" / "base.json"),
               "debiased": BenchmarkReport.load(out / "benchmarks" / "debiased.json")}
    plot_reports(reports, out / "benchmarks" / "benchmarks.png",
                 title=f"{args.model}: base vs debiased ({feature.name})")
    comparison = compare_reports(reports)
    bias_type = bias_types[0] if bias_types else None
    goals = goal_lines(reports["base"], reports["debiased"], bias_type)
    metrics = encoder.metrics
    positive, negative = encoder.classes

    lines = [
        f"# GRADIEND demo: {feature.name} on {args.model}",
        "",
        f"Command: `gradiend demo --model {args.model} --feature {args.feature} --out {args.out}"
        f"{' --quick' if args.quick else ''}` (seed {args.seed}; {args.train_steps} training steps; benchmark limit "
        f"{args.benchmark_limit or 'none'}). Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}.",
        "",
        "## Time per step",
        "",
        *_timing_table(steps),
        "",
        "## 1. Training",
        "",
        f"{steps['train'].get('parameters')} parameter tensors (n = {steps['train'].get('n', 0):,}); best validation "
        f"|r| = {steps['train'].get('validation_pearson_r')} at step {steps['train'].get('best_step')}.",
        "",
        "![training curve](gradiend/training_curve.png)",
        "",
        f"## 2. Encoder on held-out texts ({encoder.split} split)",
        "",
        "| group | label | texts | mean h | std | median |",
        "|---|---|---|---|---|---|",
        *(f"| {g} | {encoder.labels[g]:+g} | {s.count} | {_fmt(s.mean, signed=True)} | {_fmt(s.std)} | "
          f"{_fmt(s.median, signed=True)} |" for g, s in metrics.groups.items()),
        "",
        f"- Pearson r of h with the label (+1 {positive}, −1 {negative}, 0 neutral and non-feature slots): "
        f"**{_fmt(metrics.pearson_r, 4)}**; over the two classes alone: **{_fmt(metrics.pearson_r_classes, 4)}**; "
        f"sign accuracy on the two classes: **{_fmt(metrics.sign_accuracy, 4)}**.",
        *(f"- {g}: normalised position {_fmt(p.normalised_position)} between {negative} (0) and {positive} (1)."
          for g, p in metrics.positions.items()),
        "",
        "![h per group](evaluation/encoder_h_distribution.png)",
        "",
        "## 3. Decoder search",
        "",
        f"{len(search.points)} grid points on {len(search.examples)} validation texts and "
        f"{len(search.neutral_texts)} neutral sentences: {sum(p.lm_factor is not None for p in search.points)} fully "
        f"scored, {sum(bool(p.indices) and p.lm_factor is None for p in search.points)} without their LM factor "
        f"(their index could not beat the best), {sum(not p.indices for p in search.points)} pruned. "
        f"The chosen debiasing point is the best balanced score on the validation split"
        f"{'' if chosen_info.get('base_beaten', True) else ' among the edits (no edit beat the base model itself)'}, "
        f"then scored once on the test split:",
        "",
        *_search_rows(search, chosen, test),
        "",
        "Balanced index = mean over texts of (1 − |p_pos − p_neg| / (p_pos + p_neg)) · min(1, mass / base mass); "
        "LM factor = min(1, exp(mean log-likelihood − base's)) on neutral text; score = index · LM factor.",
        "",
        "![search heatmap](search/search_heatmap.png)",
        "",
        "## 4. The adapter",
        "",
        f"`adapter/` is a delta adapter (h = {chosen.h:g}, α = {chosen.alpha:g}); `adapter-lora/` its exact PEFT "
        f"LoRA export (relative error {_fmt(steps['export'].get('lora_total_relative_error'))}; logits error "
        f"{_fmt(steps['export'].get('lora_logits_relative_error'))}), loadable with `PeftModel.from_pretrained`.",
        "",
        "## 5. Bias benchmarks: base vs debiased",
        "",
        comparison,
        "![benchmarks](benchmarks/benchmarks.png)",
        "",
        "### Did the debiasing goal hold?",
        "",
        *(goals or ["- No benchmark of this bias type was run."]),
        "",
        *_strength_rows(out, reports, steps, bias_type or "overall"),
    ]
    report_path = out / "report.md"
    report_path.write_text("\n".join(lines), encoding="utf-8")

    # The measured results go into the cards (model-index), so the Hub shows them.
    task = "fill-mask" if reports["base"].lm_kind == "masked" else "text-generation"
    gradiend = GradiendModel.from_pretrained(out / "gradiend")
    gradiend.config.results = {
        "eval_results": [
            {"task_type": "feature-extraction", "dataset_type": f"gradiend-{feature.name}",
             "dataset_name": f"{feature.name} ({encoder.split} split, held out)", "metric_type": "pearsonr",
             "metric_name": "encoder Pearson r (two classes)", "metric_value": _round4(metrics.pearson_r_classes)},
            {"task_type": "feature-extraction", "dataset_type": f"gradiend-{feature.name}",
             "dataset_name": f"{feature.name} ({encoder.split} split, held out)", "metric_type": "accuracy",
             "metric_name": "encoder sign accuracy", "metric_value": _round4(metrics.sign_accuracy)},
        ],
        "markdown": "\n".join(lines[lines.index("| group | label | texts | mean h | std | median |"):
                                   lines.index("![h per group](evaluation/encoder_h_distribution.png)")]),
    }
    gradiend.config.results["eval_results"] = [r for r in gradiend.config.results["eval_results"]
                                               if r["metric_value"] is not None]
    gradiend.save_pretrained(out / "gradiend")
    adapter = DeltaAdapter.from_pretrained(out / "adapter")
    adapter.config.results = {
        "eval_results": eval_results(reports["debiased"], task_type=task, suffix="with this adapter",
                                     groups=bias_types),
        "markdown": comparison + "\n" + "\n".join(goals),
    }
    adapter.save_pretrained(out / "adapter")
    return report_path


def _round4(value: float) -> float | None:
    return round(float(value), 4) if value is not None and math.isfinite(value) else None


__all__ = ["GOAL_LM_DROP", "eval_results", "goal_lines", "write_report"]
