"""The evidence behind the default debiasing configuration: parameter sets × selection criteria, on the benchmarks.

For one feature and base model, each step writes into `--out/<feature>/` and is skipped when its result exists:

    python benchmarks/debias_evidence.py train  --params down_proj            # GRADIEND on 18 mlp.down_proj
    python benchmarks/debias_evidence.py train  --params blocks               # every transformer-block parameter
    python benchmarks/debias_evidence.py train  --params paper                # every parameter but the LM head
    python benchmarks/debias_evidence.py search --params down_proj --criterion transfer   # or: feature
    python benchmarks/debias_evidence.py bench  --params down_proj --criterion transfer   # base is run once
    python benchmarks/debias_evidence.py frontier --params down_proj --criterion transfer --alphas 0.05 0.1 0.5 1
    python benchmarks/debias_evidence.py table                                # Markdown table + frontier plot
    python benchmarks/debias_evidence.py collect                              # results -> benchmarks/evidence/

Criteria: `transfer` = `search_decoder(on="transfer")` with its defaults (the paper's BPI on transfer validation
texts, LM score >= 0.99 x base); `feature` = `search_decoder(on="feature", lm_policy="relative")` (the balanced
index on the feature's own validation texts, gradiend-hf's criterion before transfer selection). The configuration
is chosen by a rule fixed before any benchmark was run: the highest transfer BPI on the transfer *test* split among
points whose LM score on neutral text stays >= 0.99 x the base's. Benchmark data never enter a choice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

PARAMS = {
    "down_proj": ["model.layers.*.mlp.down_proj.weight"],
    "blocks": "blocks",
    "paper": "paper",
}
LABELS = {"down_proj": "18 mlp.down_proj", "blocks": "every block parameter", "paper": "all but the LM head"}
CRITERIA = ("feature", "transfer")
TRAIN_STEPS = 100


def _feature(spec: str):
    from gradiend_hf.features import load_feature

    return load_feature(spec, seed=0)


def _bias_type(spec: str) -> str:
    return spec.split(":")[0]


def _folder(args, *parts: str) -> Path:
    return Path(args.out) / args.feature.replace(":", "-").replace(",", "-") / Path(*parts)


def _base(args):
    import gradiend_hf as gh

    return gh.load_base_model(args.model)


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")


def train(args) -> None:
    import gradiend_hf as gh

    folder = _folder(args, args.params, "gradiend")
    if (folder / "config.json").is_file():
        print(f"{folder}: trained already")
        return
    feature = _feature(args.feature)
    base, tokenizer = _base(args)
    model = gh.GradiendModel.for_base_model(base, params=PARAMS[args.params], feature=feature)
    print(f"{args.params}: {len(model.param_names)} tensors, n = {model.config.num_selected:,}")
    training = gh.TrainingArguments(output_dir=str(folder), max_steps=args.steps, eval_steps=25,
                                    eval_max_examples=64, seed=0, overwrite_output_dir=True)
    started = time.time()
    result = gh.GradiendTrainer(model, base, tokenizer, feature, training).train()
    _write(_folder(args, args.params, "train.json"), {
        "params": args.params, "n": model.config.num_selected, "tensors": len(model.param_names),
        "validation_r": result.best_correlation, "best_step": result.best_step, "seconds": time.time() - started,
        "peak_rss_gb": _peak_rss_gb()})


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def search(args) -> None:
    import gradiend_hf as gh
    from gradiend_hf.evaluation import evaluate_point, search_decoder

    out = _folder(args, args.params, args.criterion)
    if (out / "chosen.json").is_file():
        print(f"{out}: searched already")
        return
    feature = _feature(args.feature)
    base, tokenizer = _base(args)
    model = gh.GradiendModel.from_pretrained(_folder(args, args.params, "gradiend"))
    options = {"on": "feature", "lm_policy": "relative"} if args.criterion == "feature" else {"on": "transfer"}
    started = time.time()
    result = search_decoder(model, base, tokenizer, feature, **options)
    seconds = time.time() - started
    result.save(out / "search")
    best = result.best("balanced")
    if best.is_base:
        fallback = result.fallback("balanced")
        print(f"no edit beats the base; fallback {fallback and (fallback.h, fallback.alpha)}")
    chosen = {"h": best.h, "alpha": best.alpha, "is_base": best.is_base, "search_seconds": seconds,
              "points_scored": result.settings["points_scored"], "points_with_lm": result.settings["points_with_lm"]}
    # the chosen point on held-out texts of both kinds: the transfer test split and the feature's test split
    for on in ("transfer", "feature"):
        test = evaluate_point(model, base, tokenizer, feature, best.h, best.alpha, on=on, split="test",
                              max_texts=1000 if on == "transfer" else 64,
                              **({"lm_policy": "threshold"} if on == "transfer" else {}))
        test.to_json(out / f"test_{on}.json")
        point, reference = test.points[0], test.base
        chosen[f"test_{on}"] = {
            "index": point.indices["balanced"], "base_index": reference.indices["balanced"],
            "lm_score": point.lm_score, "base_lm_score": reference.lm_score,
            "lm_ok": point.lm_score >= 0.99 * reference.lm_score, "perplexity": point.lm_perplexity,
            "base_perplexity": reference.lm_perplexity, "association": point.association,
            "base_association": reference.association, "mean_p": point.mean_p, "base_mean_p": reference.mean_p,
            "num_texts": test.settings["num_texts"]}
    _write(out / "chosen.json", chosen)
    print(json.dumps(chosen, indent=2))


def _bench_options(args) -> dict[str, Any]:
    return {"bias_types": [_bias_type(args.feature)], "limit": args.bench_limit, "seed": 0}


def _base_report(args, base, tokenizer):
    from gradiend_hf.benchmarks import BenchmarkReport, run_benchmarks

    path = _folder(args, "base_benchmarks.json")
    if path.is_file():
        return BenchmarkReport.load(path)
    report = run_benchmarks(base, tokenizer, **_bench_options(args))
    report.save(path)
    return report


def bench(args) -> None:
    import gradiend_hf as gh
    from gradiend_hf.benchmarks import paired_differences, run_benchmarks

    out = _folder(args, args.params, args.criterion)
    if (out / "paired.json").is_file():
        print(f"{out}: benchmarked already")
        return
    chosen = json.loads((out / "chosen.json").read_text())
    base, tokenizer = _base(args)
    base_report = _base_report(args, base, tokenizer)
    model = gh.GradiendModel.from_pretrained(_folder(args, args.params, "gradiend"))
    adapter = model.to_adapter(h=chosen["h"], alpha=chosen["alpha"], base_model=base)
    with adapter.applied(base):
        report = run_benchmarks(base, tokenizer, **_bench_options(args))
    report.save(out / "benchmarks.json")
    differences = paired_differences(base_report, report)
    _write(out / "paired.json", [d.to_dict() for d in differences])
    for d in differences:
        print(f"{d.suite:<9} {d.group:<8} {d.metric:<22} {d.base:8.4g} -> {d.other:8.4g}  diff {d.difference:+.4g} "
              f"[{d.ci[0]:+.3g}, {d.ci[1]:+.3g}] {'MOVED' if d.moved else ''}")


def frontier(args) -> None:
    """StereoSet SS, SEAT and perplexity along α for the chosen h* (no criterion chooses these points)."""
    import gradiend_hf as gh
    from gradiend_hf.benchmarks import paired_differences, run_benchmarks

    out = _folder(args, args.params, args.criterion, "frontier")
    chosen = json.loads(_folder(args, args.params, args.criterion, "chosen.json").read_text())
    base, tokenizer = _base(args)
    base_report = _base_report(args, base, tokenizer)
    model = gh.GradiendModel.from_pretrained(_folder(args, args.params, "gradiend"))
    h = chosen["h"] if args.h is None else args.h
    for alpha in args.alphas:
        path = out / f"h{h:g}_alpha{alpha:g}.json"
        if path.is_file():
            continue
        adapter = model.to_adapter(h=h, alpha=alpha, base_model=base)
        with adapter.applied(base):
            report = run_benchmarks(base, tokenizer, suites=("stereoset", "seat", "lm_score"),
                                    **_bench_options(args))
        report.save(path.with_name(path.stem + "_report.json"))
        rows = [d.to_dict() for d in paired_differences(base_report, report)]
        _write(path, {"h": h, "alpha": alpha, "paired": rows})
        print(f"alpha {alpha:g}: " + "; ".join(f"{r['suite']}/{r['metric']} {r['other']:.4g}" for r in rows
                                                 if r["group"] == "overall"))


def table(args) -> None:
    """README rows: one per (parameter set, criterion), and the frontier plot."""
    root = _folder(args)
    bias = _bias_type(args.feature)
    lines = ["| parameters | criterion | (h*, α) | transfer BPI test (base → edit) | association test | "
             "StereoSet SS | Δ SS [paired 95 %] | StereoSet LMS | Δ LMS | SEAT mean \\|d\\| | Δ SEAT | CrowS-Pairs | "
             "Δ CrowS | perplexity | Δ perplexity |", "|" + "---|" * 15]
    for params in PARAMS:
        for criterion in CRITERIA:
            folder = root / params / criterion
            if not (folder / "paired.json").is_file():
                continue
            chosen = json.loads((folder / "chosen.json").read_text())
            paired = {(d["suite"], d["group"], d["metric"]): d for d in _paired(root, folder / "benchmarks.json")}
            _write(folder / "paired.json", list(paired.values()))
            transfer = chosen["test_transfer"]

            def cell(suite, group, metric, digits=3):
                d = paired.get((suite, group, metric))
                if d is None:
                    return "–", "–"
                mark = "**" if d["moved"] else ""
                return (f"{d['base']:.{digits}g} → {d['other']:.{digits}g}",
                        f"{mark}{d['difference']:+.{digits}g} [{d['ci'][0]:+.{digits}g}, {d['ci'][1]:+.{digits}g}]{mark}")

            assoc = transfer.get("association")
            base_assoc = transfer.get("base_association")
            association = "–" if assoc is None else f"{base_assoc:.2f} → {assoc:.2f}"
            where = "base (no edit)" if chosen["is_base"] else f"({chosen['h']:g}, {chosen['alpha']:g})"
            cells = [cell("stereoset", bias, "ss"), cell("stereoset", bias, "lms"),
                     cell("seat", bias, "mean_abs_effect_size"), cell("crows", bias, "metric"),
                     cell("lm_score", "overall", "perplexity", 4)]
            lines.append(f"| {LABELS[params]} | {criterion} | {where} | {transfer['base_index']:.4f} → "
                         f"{transfer['index']:.4f} | {association} | " + " | ".join(f"{a} | {b}" for a, b in cells) + " |")
    text = "\n".join(lines) + "\n"
    (root / "table.md").write_text(text)
    print(text)
    _plot_frontier(root, bias)


def _paired(root: Path, report_path: Path) -> list[dict[str, Any]]:
    """Paired differences recomputed from the saved reports (so the table always uses the code as it stands)."""
    from gradiend_hf.benchmarks import BenchmarkReport, paired_differences

    base = BenchmarkReport.load(root / "base_benchmarks.json")
    return [d.to_dict() for d in paired_differences(base, BenchmarkReport.load(report_path))]


def _plot_frontier(root: Path, bias: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for folder in sorted(root.glob("*/*/frontier")):
        points = []
        for path in sorted(folder.glob("h*_alpha*.json")):
            if path.stem.endswith("_report"):
                continue
            data = json.loads(path.read_text())
            paired = {(d["suite"], d["group"], d["metric"]): d
                      for d in _paired(root, path.with_name(path.stem + "_report.json"))}
            ppl = paired[("lm_score", "overall", "perplexity")]
            points.append((data["alpha"], 100 * (ppl["other"] / ppl["base"] - 1),
                           paired[("stereoset", bias, "ss")]["other"],
                           paired.get(("seat", bias, "mean_abs_effect_size"), {}).get("other"), data["h"],
                           paired[("stereoset", bias, "ss")]["base"],
                           paired.get(("seat", bias, "mean_abs_effect_size"), {}).get("base")))
        if not points:
            continue
        points.sort(key=lambda p: abs(p[0]))  # along the sweep, from the base outward
        figure, axes = plt.subplots(1, 2, figsize=(10, 4))
        for axis, k, label, ideal, base_k in ((axes[0], 2, "StereoSet SS (→ 50)", 50, 5),
                                              (axes[1], 3, "SEAT mean |d| (→ 0)", 0, 6)):
            xs = [0.0] + [p[1] for p in points if p[k] is not None]
            ys = [points[0][base_k]] + [p[k] for p in points if p[k] is not None]
            axis.plot(xs, ys, "o-")
            for x, y, alpha in zip(xs, ys, [0.0] + [p[0] for p in points if p[k] is not None]):
                axis.annotate(f"α={alpha:g}", (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
            axis.axhline(ideal, color="black", linestyle="--", linewidth=0.8)
            axis.axvline(5, color="red", linestyle=":", linewidth=0.8)
            axis.set(xlabel="perplexity change vs base (%)", ylabel=label)
        figure.suptitle(f"{folder.parent.parent.name}, {folder.parent.name} criterion: h* = {points[0][4]:g}, "
                        f"α swept (red: +5 % perplexity)")
        figure.tight_layout()
        figure.savefig(folder / "frontier.png", dpi=110)
        plt.close(figure)
        print(f"wrote {folder / 'frontier.png'}")


def collect(args) -> None:
    """Copy the results (JSON, Markdown, CSV, plots) into `benchmarks/evidence/`, for the record: no model weights,
    no per-example score files, one search heatmap (the chosen configuration's is the one README shows)."""
    import shutil

    root = _folder(args)
    target = HERE / "evidence" / root.name
    suffixes = {".json", ".jsonl", ".md", ".csv", ".png"}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if (not path.is_file() or path.suffix not in suffixes or "seed-" in str(relative)
                or relative.name == "search.json" or (relative.name == "search_heatmap.png"
                                                      and "paper/transfer" not in relative.as_posix())):
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / relative)
    print(f"copied the results of {root} to {target}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["train", "search", "bench", "frontier", "table", "collect"])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--feature", default="gender")
    parser.add_argument("--params", choices=list(PARAMS), default="down_proj")
    parser.add_argument("--criterion", choices=CRITERIA, default="transfer")
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--bench-limit", type=int, default=None)
    parser.add_argument("--h", type=float, default=None)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5, 1.0])
    parser.add_argument("--out", default=str(HERE.parent / "runs" / "evidence"))
    args = parser.parse_args(argv)
    {"train": train, "search": search, "bench": bench, "frontier": frontier, "table": table,
     "collect": collect}[args.step](args)


if __name__ == "__main__":
    main()
