"""The demo's `report.md`, and the measured results it puts into the GRADIEND model's and the adapter's cards."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

GOAL_SS_POINTS = 4.0
"""The debiasing goal: StereoSet SS at least this many points closer to 50."""
GOAL_SEAT_SHARE = 0.30
"""The debiasing goal: SEAT mean |d| at least this share lower."""
GOAL_LM_DROP = 1.0
"""The debiasing goal allows the StereoSet LM score (LMS) to drop by less than this many points."""
GOAL_PERPLEXITY = 5.0
"""The debiasing goal allows perplexity to rise by at most this many per cent."""
NO_EDIT = "no debiasing edit found"


def _fmt(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.{digits}g}" if signed else f"{value:.{digits}g}"


def _interval(d: Any, digits: int = 3) -> str:
    return "–" if d.ci is None else f"[{d.ci[0]:+.{digits}g}, {d.ci[1]:+.{digits}g}]"


def goal_lines(paired: list[Any], bias_type: str | None) -> list[str]:
    """Plain sentences on each part of the debiasing goal, judged on paired intervals (adapter − base).

    SS at least `GOAL_SS_POINTS` closer to 50 and SEAT mean |d| at least `GOAL_SEAT_SHARE` lower, each with an
    interval that excludes 0; StereoSet LMS down by less than `GOAL_LM_DROP`; perplexity up by at most
    `GOAL_PERPLEXITY` %. CrowS-Pairs is reported the same way, without a target.
    """
    group = bias_type or "overall"
    found = {(d.suite, d.group, d.metric): d for d in paired}
    lines = []
    ss = found.get(("stereoset", group, "ss"))
    if ss is not None:
        gain = ss.toward_ideal
        met = gain >= GOAL_SS_POINTS and ss.moved
        lines.append(f"- StereoSet SS ({group}): {ss.base:.3g} → {ss.other:.3g}, {abs(gain):.3g} points "
                     f"{'closer to' if gain > 0 else 'further from'} 50; change {ss.difference:+.3g} "
                     f"{_interval(ss)} (paired 95 %){'' if ss.moved else ', an interval that includes 0'}. "
                     f"Goal: ≥ {GOAL_SS_POINTS:g} points closer, interval excluding 0. **{'met' if met else 'missed'}**")
    seat = found.get(("seat", group, "mean_abs_effect_size"))
    if seat is not None:
        share = seat.toward_ideal / seat.base if seat.base else 0.0
        met = share >= GOAL_SEAT_SHARE and seat.moved
        lines.append(f"- SEAT mean |d| ({group}): {seat.base:.3g} → {seat.other:.3g} ({-100 * share:+.1f} %); "
                     f"change {seat.difference:+.3g} {_interval(seat)}. Goal: ≥ {100 * GOAL_SEAT_SHARE:g} % lower, "
                     f"interval excluding 0. **{'met' if met else 'missed'}**")
    crows = found.get(("crows", group, "metric"))
    if crows is not None:
        gain = crows.toward_ideal
        lines.append(f"- CrowS-Pairs ({group}): {crows.base:.3g} → {crows.other:.3g}, {abs(gain):.3g} points "
                     f"{'closer to' if gain > 0 else 'further from'} 50; change {crows.difference:+.3g} "
                     f"{_interval(crows)}{' (moved)' if crows.moved else ' (not moved: the interval includes 0)'}.")
    lms = found.get(("stereoset", group, "lms"))
    if lms is not None:
        drop = -lms.difference
        change = ("unchanged" if abs(drop) < 5e-4 else
                  f"a drop of {drop:.3g} points" if drop > 0 else f"a rise of {-drop:.3g} points")
        lines.append(f"- StereoSet LMS ({group}): {lms.base:.3g} → {lms.other:.3g}, {change} {_interval(lms)} "
                     f"(goal: a drop of less than {GOAL_LM_DROP:g}). **{'met' if drop < GOAL_LM_DROP else 'missed'}**")
    for metric, label in (("perplexity", "Perplexity"), ("masked_accuracy", "Masked-token accuracy")):
        d = found.get(("lm_score", "overall", metric))
        if d is None:
            continue
        change = 100 * d.difference / d.base
        goal = ""
        if metric == "perplexity":
            goal = f" (goal: at most +{GOAL_PERPLEXITY:g} %). **{'met' if change <= GOAL_PERPLEXITY else 'missed'}**"
        lines.append(f"- {label} on held-out WikiText: {d.base:.4g} → {d.other:.4g} ({change:+.2f} %, "
                     f"{_interval(d, 4)}){goal}")
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
             ("lm_score", "perplexity"): ("wikitext", "WikiText-2 test (held-out lines)", "perplexity", "perplexity"),
             ("lm_score", "masked_accuracy"): ("wikitext", "WikiText-2 test (held-out lines)", "accuracy",
                                               "masked accuracy")}
    rows = []
    for suite, table in report.results.items():
        for group, metrics in table.items():
            for metric, score in metrics.items():
                if (suite, metric) not in names or not math.isfinite(score.value):
                    continue
                if groups is not None and group not in groups and suite != "lm_score":
                    continue
                dataset_type, dataset_name, metric_type, label = names[(suite, metric)]
                group_label = "" if group == "overall" and suite == "lm_score" else f" {group}"
                rows.append({"task_type": task_type, "dataset_type": dataset_type, "dataset_name": dataset_name,
                             "metric_type": metric_type, "metric_name": f"{label}{group_label} ({suffix})",
                             "metric_value": round(float(score.value), 4)})
    return rows


def _timing_table(steps: Mapping[str, Mapping[str, Any]], order: list[str]) -> list[str]:
    lines = ["| step | seconds |", "|---|---|"]
    total = 0.0
    for step in [s for s in order if s in steps]:
        seconds = float(steps[step].get("seconds", 0.0))
        total += seconds
        lines.append(f"| {step} | {seconds:.0f} |")
    lines.append(f"| **total** | **{total:.0f}** ({total / 60:.1f} min) |")
    return lines


def _search_section(search: Any, chosen: Any, test: Any, info: Mapping[str, Any]) -> list[str]:
    positive, negative = search.classes
    transfer = search.on == "transfer"
    what = ("the transfer task: descriptions of people followed by a "
            f"{'first-name' if search.feature == 'gender' else 'group-word'} slot; the index is the paper's "
            f"{'BPI' if search.settings.get('formula') == 'bpi' else 'balance index'} over the classes' masses P_c"
            if transfer else f"the feature's own slot texts ({info.get('why_feature') or 'as asked'})")
    lines = [
        f"Points scored on {what}; LM policy **{search.lm_policy}** ({search.formulas.get('lm_policy', '')}). "
        f"{len(search.points)} grid points on {len(search.examples)} validation texts and "
        f"{len(search.neutral_texts)} neutral sentences: {sum(p.lm_score is not None for p in search.points)} with an "
        f"LM score, {sum(bool(p.indices) and p.lm_score is None for p in search.points)} without (their index could "
        f"not beat the best), {sum(not p.indices for p in search.points)} pruned.", ""]
    if not info["edit_found"]:
        lines += [f"**{NO_EDIT.capitalize()}**: no grid point beats the base model under this criterion "
                  f"(base score {_fmt(info.get('validation_base_score'), 4)})."
                  + (" The fallback below is the edit with the best index among those that keep the LM score at "
                     "least 0.99 × the base's; it is reported as a fallback edit, not as a debiased model."
                     if chosen is not None else " No edit keeps the LM score, so no adapter was exported."), ""]
    if chosen is None:
        return lines
    header = ("| model | split | balanced index | LM score | perplexity (neutral) | "
              f"P({positive}) | P({negative}) |" + (" association |" if transfer else ""))
    lines += [header, "|" + "---|" * (8 if transfer else 7)]
    label = f"h* = {chosen.h:g}, α = {chosen.alpha:g}"
    for name, split, point in (("base", "validation", search.base), (label, "validation", chosen),
                               ("base", "test", test.base), (label, "test", test.points[0])):
        p = point.mean_p or {}
        p_pos = sum(v.get(positive, 0.0) for v in p.values()) / max(1, len(p))
        p_neg = sum(v.get(negative, 0.0) for v in p.values()) / max(1, len(p))
        row = (f"| {name} | {split} | {_fmt((point.indices or {}).get('balanced'), 4)} | {_fmt(point.lm_score, 4)} | "
               f"{_fmt(point.lm_perplexity, 4)} | {p_pos:.3g} | {p_neg:.3g} |")
        lines.append(row + (f" {_fmt(point.association)} |" if transfer else ""))
    lines.append("")
    if transfer:
        lines += [f"P_c = probability mass of class c's words at the slot (per group of descriptions, averaged); "
                  f"association = mean log(P({positive})/P({negative})) on descriptions stereotyped {positive} "
                  f"minus that on descriptions stereotyped {negative} (0: the description makes no difference).", ""]
    return lines


def _paired_table(paired: list[Any]) -> list[str]:
    lines = ["| benchmark | bias type | metric | base | with the adapter | change [paired 95 %] | moved |",
             "|---|---|---|---|---|---|---|"]
    for d in paired:
        lines.append(f"| {d.suite} | {d.group} | {d.metric} | {d.base:.4g} | {d.other:.4g} | {d.difference:+.3g} "
                     f"{_interval(d)} | {'yes' if d.moved else 'no'} |")
    return lines


def _strength_rows(out: Path, steps: Mapping[str, Mapping[str, Any]], group: str) -> list[str]:
    """The chosen update at the `strength` step's scales, paired with the base."""
    scales = steps.get("strength", {}).get("scales") or []
    if not scales:
        return []
    lines = ["| scale | StereoSet SS | SEAT mean \\|d\\| | StereoSet LMS | perplexity change |", "|---|---|---|---|---|"]
    for scale in scales:
        rows = json.loads((out / "benchmarks" / f"scale-{scale:g}-paired.json").read_text())
        found = {(r["suite"], r["group"], r["metric"]): r for r in rows}

        def cell(key):
            r = found.get(key)
            return "–" if r is None else f"{r['other']:.3g} ({r['difference']:+.3g})"

        ppl = found.get(("lm_score", "overall", "perplexity"))
        change = "–" if ppl is None else f"{100 * ppl['difference'] / ppl['base']:+.1f} %"
        lines.append(f"| {scale:g} | {cell(('stereoset', group, 'ss'))} | "
                     f"{cell(('seat', group, 'mean_abs_effect_size'))} | {cell(('stereoset', group, 'lms'))} | "
                     f"{change} |")
    return ["### Turning the update up", "",
            "Scale s applies W + s·ΔW (`adapter.applied(base, scale=s)`). No criterion chose these scales: they show "
            "what a stronger edit buys in bias and costs in language modelling (changes against the base, paired).",
            "", *lines, ""]


def write_report(out: Path, args: Any, steps: Mapping[str, Mapping[str, Any]], feature: Any,
                 bias_types: list[str] | None, order: list[str]) -> Path:
    """Write `out/report.md` from the saved step outputs (`order`: the steps in the order they run), and put the
    measured results into both model cards."""
    from .adapters import DeltaAdapter
    from .benchmarks import BenchmarkReport, compare_reports, paired_differences, plot_reports
    from .evaluation import DecoderSearchResult, EncoderReport, SearchPoint
    from .modeling_gradiend import GradiendModel

    encoder = EncoderReport.load(out / "evaluation")
    search = DecoderSearchResult.from_json(out / "search" / "search.json")
    info = steps["search"]
    chosen = test = None
    if info["h"] is not None:
        chosen = SearchPoint.from_dict(info["point"])
        test = DecoderSearchResult.from_json(out / "search" / "chosen_point_test.json")
    label = "debiased" if info["edit_found"] else "fallback edit"
    reports = {"base": BenchmarkReport.load(out / "benchmarks" / "base.json")}
    paired = []
    if steps["export"].get("exported"):
        reports[label] = BenchmarkReport.load(out / "benchmarks" / "adapter.json")
        paired = paired_differences(reports["base"], reports[label], seed=args.seed)
    plot_reports(reports, out / "benchmarks" / "benchmarks.png", title=f"{args.model}: {' vs '.join(reports)} "
                                                                       f"({feature.name})")
    comparison = compare_reports(reports)
    bias_type = bias_types[0] if bias_types else None
    goals = goal_lines(paired, bias_type) if paired else [f"- {NO_EDIT.capitalize()}: only the base was benchmarked."]
    metrics = encoder.metrics
    positive, negative = encoder.classes
    if chosen is None:
        adapter_text = f"{NO_EDIT.capitalize()} that keeps the LM score: no adapter was exported."
    else:
        adapter_text = (f"`adapter/` is a delta adapter (h = {chosen.h:g}, α = {chosen.alpha:g})"
                        f"{'' if info['edit_found'] else f', a fallback edit ({NO_EDIT})'}; `adapter-lora/` its exact "
                        f"PEFT LoRA export (relative error {_fmt(steps['export'].get('lora_total_relative_error'))}; "
                        f"logits error {_fmt(steps['export'].get('lora_logits_relative_error'))}), loadable with "
                        "`PeftModel.from_pretrained`.")

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
        *_timing_table(steps, order),
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
        *_search_section(search, chosen, test, info),
        "![search heatmap](search/search_heatmap.png)",
        "",
        "## 4. The adapter",
        "",
        adapter_text,
        "",
        f"## 5. Bias benchmarks: {' vs '.join(reports)}",
        "",
        comparison,
        *(["Paired comparison (the same examples resampled for both models; \"moved\": the interval of the change "
           "excludes 0):", "", *_paired_table(paired), ""] if paired else []),
        "![benchmarks](benchmarks/benchmarks.png)",
        "",
        "### Did the debiasing goal hold?",
        "",
        *(goals or ["- No benchmark of this bias type was run."]),
        "",
        *_strength_rows(out, steps, bias_type or "overall"),
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
    if len(reports) > 1:
        adapter = DeltaAdapter.from_pretrained(out / "adapter")
        prefix = "" if info["edit_found"] else f"**{NO_EDIT.capitalize()}**: these are the numbers of a fallback edit.\n\n"
        adapter.config.results = {
            "eval_results": eval_results(reports[label], task_type=task, suffix=f"with this adapter ({label})",
                                         groups=bias_types),
            "markdown": prefix + comparison + "\n" + "\n".join(_paired_table(paired)) + "\n\n" + "\n".join(goals),
        }
        adapter.save_pretrained(out / "adapter")
    return report_path


def _round4(value: float) -> float | None:
    return round(float(value), 4) if value is not None and math.isfinite(value) else None


__all__ = ["GOAL_LM_DROP", "GOAL_PERPLEXITY", "GOAL_SEAT_SHARE", "GOAL_SS_POINTS", "NO_EDIT", "eval_results",
           "goal_lines", "write_report"]
