"""Time and peak memory of decoder-search grid points: in-place `ParameterPatch` vs. a deep copy per point.

One command runs both variants, each in its own subprocess (so peak RSS belongs to one variant), one after the
other (so they never compete for cores), on the same grid points, feature texts and neutral texts, and checks that
both computed the same scores before it reports any number.

    python benchmarks/bench_search.py --model tiny
    python benchmarks/bench_search.py --model gemma-3-270m --max-texts 16 --max-neutral 8 --record benchmarks/results.jsonl
    python benchmarks/bench_search.py --model gemma-3-270m --sizing       # s/point with the search's defaults

- **ours**: `search_decoder(..., prune=False)`: one `ParameterPatch` saves the selected parameters once and writes
  W0 + α·dec(h*) in place per point; feature texts go through the base model with the LM head run only at the
  slot (`GradientEngine.target_logprobs`); LM factor from `lm_score`.
- **reference**: what the reference code does per grid point: `copy.deepcopy(base)`, add α·dec(h*) to the copy's
  selected parameters, score the feature texts with full-vocabulary logits at every position (the slot's row is
  then taken), and the same `lm_score` on the same neutral texts; the copy is dropped after the point.

`--sizing` runs only ours, with the search's default `max_texts` / `max_neutral`, and splits each point's time into
feature texts and LM factor, so that a full default-grid search can be sized (see README.md next to this file).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models.py (in-process tiny Llama / BERT)
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(HERE))  # bench_train's helpers

import torch
from bench_train import append_record, git_commit, load_model, save_tiny_model, summary, vm_hwm_mb, warn_load

DEFAULT_PARAMS = {"tiny-bert": "bert.encoder.layer.*.output.dense.weight"}
FALLBACK_PARAMS = "model.layers.*.mlp.down_proj.weight"
TINY_MODELS = ("tiny", "tiny-bert")
VARIANTS = ("ours", "reference")


# -- shared by both variants ---------------------------------------------------------------------------------
def load_feature(name: str):
    """The tiny models get the tiny gender feature (single-token she/he for their vocabularies)."""
    if name in TINY_MODELS:
        from tiny_models import tiny_gender_feature

        return tiny_gender_feature()
    from gradiend_hf import features

    return features.gender()


def make_gradiend(base, feature, args: argparse.Namespace):
    """A freshly initialised GRADIEND (seed 0) whose decoder is rescaled so that ‖dec(1)_i‖ ≈ ‖W_i‖ per tensor.

    A fresh decoder is uniform in ±1/sqrt(n), far too small for α ≤ 0.5 to change anything; rescaled, α = 0.01
    moves the model about 1 % (visible in the scores, so the correctness check compares edited models, not the
    base twice), and the timing does not depend on the scale. `--gradiend PATH` loads a trained model instead.
    """
    from gradiend_hf import GradiendModel

    if args.gradiend:
        return GradiendModel.from_pretrained(args.gradiend)
    model = GradiendModel.for_base_model(base, params=args.params, feature=feature, seed=0)
    params = dict(base.named_parameters())
    with torch.no_grad():
        for name, weight, bias in zip(model.config.param_names, model.decoder.weights, model.decoder.biases):
            target = float(params[name].detach().float().norm())
            for tensor in (weight, bias):
                tensor.mul_(target / float(tensor.norm()) / math.sqrt(2))
    return model


def grid(args: argparse.Namespace) -> list[tuple[float, float]]:
    return [(h, a) for h in args.h for a in args.alpha]


def texts_digest(examples: Sequence[dict], neutral: Sequence[str]) -> str:
    """A short hash of the texts scored, compared by the parent to prove both variants saw the same data."""
    text = "\n".join(f"{e['label']}\t{e['text']}" for e in examples) + "\n\n" + "\n".join(neutral)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def scores_of(point) -> dict[str, Any]:
    return {"h": point.h, "alpha": point.alpha, "indices": point.indices, "lm_factor": point.lm_factor,
            "bias": point.bias}


# -- ours: the real search code path -------------------------------------------------------------------------
def run_ours(args, base, tokenizer, feature, model, neutral) -> dict[str, Any]:
    from gradiend_hf.evaluation import search_decoder

    cpu = time.process_time()
    result = search_decoder(model, base, tokenizer, feature, h_values=args.h, alphas=args.alpha,
                            max_texts=args.max_texts, neutral_texts=neutral, max_neutral=args.max_neutral,
                            batch_size=args.batch_size, prune=False, progress=False, seed=args.seed)
    cpu = time.process_time() - cpu
    order = {key: i for i, key in enumerate(grid(args))}
    points = sorted(result.points, key=lambda p: order[(p.h, p.alpha)])  # grid order, as the reference runs
    return {
        "times_s": [p.seconds for p in points], "lm_times_s": [p.lm_seconds for p in points],
        "base": scores_of(result.base), "points": [scores_of(p) for p in points],
        "texts": texts_digest(result.examples, result.neutral_texts), "num_texts": len(result.examples),
        "num_neutral": len(result.neutral_texts), "base_seconds": result.base.seconds,
        # CPU seconds of the whole search over the points plus the base (which costs as much as a full point)
        "cpu_s_per_point": cpu / (len(points) + 1),
    }


# -- reference: a deep copy per point, full logits ------------------------------------------------------------
def run_reference(args, base, tokenizer, feature, model, neutral) -> dict[str, Any]:
    import numpy as np

    from gradiend_hf.benchmarks.lm_score import evenly_spaced, lm_score
    from gradiend_hf.evaluation import search as search_module
    from gradiend_hf.gradients import GradientEngine

    config = model.config
    classes = (config.positive_class, config.negative_class)
    engine = GradientEngine(base, tokenizer, config.param_names)
    # The same sample as ours (the same seeded function); the token ids come from the same SlotTokenizer, so any
    # difference in the scores comes from the computation, not from the texts or their tokenisation.
    examples = search_module._sample_examples(feature, "validation", classes, engine, args.max_texts, args.seed)
    texts = evenly_spaced(neutral, args.max_neutral)
    is_positive = np.array([e.label == classes[0] for e in examples])

    @torch.no_grad()
    def score(lm) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        lm.eval()
        p_f, p_c = [], []
        for start in range(0, len(examples), args.batch_size):
            batch = engine.slots(examples[start: start + args.batch_size])
            logits = lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # every position
            rows = torch.arange(logits.shape[0])
            probs = logits[rows, batch.positions].float().log_softmax(-1).double().exp()
            p_f.append(probs[rows, batch.factual_ids])
            p_c.append(probs[rows, batch.counterfactual_ids])
        p_f, p_c = torch.cat(p_f).numpy(), torch.cat(p_c).numpy()
        tick = time.perf_counter()
        ll = lm_score(lm, tokenizer, texts, batch_size=args.batch_size, bootstrap=0).mean_log_likelihood
        lm_times.append(time.perf_counter() - tick)
        return np.where(is_positive, p_f, p_c), np.where(is_positive, p_c, p_f), p_f - p_c, ll

    lm_times: list[float] = []

    base_pos, base_neg, base_diff, base_ll = score(base)
    base_mass = base_pos + base_neg
    base_indices, _ = search_module._indices(base_pos, base_neg, base_mass, *classes)
    times, copy_times, points = [], [], []
    lm_times.clear()
    cpu = time.process_time()
    for h, alpha in grid(args):
        tick = time.perf_counter()
        edited = copy.deepcopy(base)
        with torch.no_grad():
            update = model.decode(h)
            params = dict(edited.named_parameters())
            for name in config.param_names:
                params[name].add_(alpha * update[name].to(params[name].dtype))
        copy_times.append(time.perf_counter() - tick)
        p_pos, p_neg, diff, ll = score(edited)
        indices, _ = search_module._indices(p_pos, p_neg, base_mass, *classes)
        del edited
        times.append(time.perf_counter() - tick)
        points.append({"h": h, "alpha": alpha, "indices": indices,
                       "lm_factor": min(1.0, math.exp(ll - base_ll)), "bias": float(diff.mean())})
    cpu = time.process_time() - cpu
    records = [{"text": e.text, "label": e.label} for e in examples]
    return {
        "cpu_s_per_point": cpu / len(points), "times_s": times, "lm_times_s": lm_times, "copy_times_s": copy_times,
        "base": {"h": 0.0, "alpha": 0.0, "indices": base_indices, "lm_factor": 1.0, "bias": float(base_diff.mean())},
        "points": points, "texts": texts_digest(records, texts), "num_texts": len(examples),
        "num_neutral": len(texts),
    }


def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    from gradiend_hf import features

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    base, tokenizer = load_model(args.model_path or args.model)
    feature = load_feature(args.model)
    model = make_gradiend(base, feature, args)
    neutral = features.neutral_texts()
    setup_seconds, setup_peak = time.perf_counter() - started, vm_hwm_mb()
    runner = run_ours if args.variant == "ours" else run_reference
    result = runner(args, base, tokenizer, feature, model, neutral)
    result.update(variant=args.variant, setup_s=setup_seconds, peak_rss_setup_mb=setup_peak,
                  peak_rss_mb=vm_hwm_mb(), threads=torch.get_num_threads(), n=int(model.config.num_selected),
                  lm_kind=model.config.lm_kind)
    return result


# -- the parent: run children one after the other, check, report ---------------------------------------------
def child_command(args: argparse.Namespace, variant: str, result_file: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--result-file", result_file,
               "--model", args.model, "--max-texts", str(args.max_texts), "--max-neutral", str(args.max_neutral),
               "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--seed", str(args.seed),
               "--h", *map(str, args.h), "--alpha", *map(str, args.alpha)]
    for pattern in args.params:
        command += ["--params", pattern]
    if args.gradiend:
        command += ["--gradiend", args.gradiend]
    return command


def max_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest absolute difference of any index, LM factor or bias between two runs (inf if misaligned)."""
    worst = 0.0
    for x, y in zip([a["base"], *a["points"]], [b["base"], *b["points"]], strict=True):
        if (x["h"], x["alpha"]) != (y["h"], y["alpha"]):
            return math.inf
        values = [(x["lm_factor"], y["lm_factor"]), (x["bias"], y["bias"])]
        values += [(x["indices"][c], y["indices"][c]) for c in x["indices"]]
        worst = max(worst, *(abs(u - v) for u, v in values))
    return worst


def machine(args: argparse.Namespace, threads: int, load_before: float) -> dict[str, Any]:
    import transformers

    return {"cpu_count": os.cpu_count(), "threads": threads, "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def run_children(args: argparse.Namespace, variants: Sequence[str]) -> dict[str, dict[str, Any]]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_search_") as tmp:
        model_path = save_tiny_model(args.model, tmp)
        for variant in variants:  # sequentially: timings must not compete for the same cores
            result_file = f"{tmp}/{variant}.json"
            print(f"running {variant} ...", file=sys.stderr, flush=True)
            command = child_command(args, variant, result_file)
            subprocess.run(command + (["--model-path", model_path] if model_path else []), check=True)
            results[variant] = json.loads(Path(result_file).read_text())
    return results


def run_compare(args: argparse.Namespace) -> int:
    load_before = warn_load()
    results = run_children(args, VARIANTS)
    ours, reference = results["ours"], results["reference"]
    if ours["texts"] != reference["texts"]:
        print(f"ERROR: the variants scored different texts ({ours['texts']} vs {reference['texts']}).",
              file=sys.stderr)
        return 2
    difference = max_difference(ours, reference)
    ok = difference <= args.tolerance
    # How far the points move from the base: the check only means something if the edits change the scores.
    moved = max(max_difference({"base": p, "points": []}, {"base": {**ours["base"], "h": p["h"],
                                                                      "alpha": p["alpha"]}, "points": []})
                for p in ours["points"])

    print(f"\n## Decoder search, {args.model}: n = {ours['n']:,} ({', '.join(args.params)}), {len(grid(args))} grid "
          f"points (h* {args.h} × α {args.alpha}), {ours['num_texts']} feature texts, {ours['num_neutral']} "
          f"neutral texts, torch threads {ours['threads']}, load average {load_before:.2f}\n")
    print("| variant | median s/point | IQR s | time vs ours | CPU s/point | CPU vs ours | peak RSS MiB "
          "| RSS after setup MiB | RSS vs ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    ours_median, _ = summary(ours["times_s"])
    rows = {}
    for variant in VARIANTS:
        r = results[variant]
        median, iqr = summary(r["times_s"])
        rss_ratio = r["peak_rss_mb"] / ours["peak_rss_mb"]
        rows[variant] = {"median_s": median, "iqr_s": iqr, "time_ratio_vs_ours": median / ours_median,
                         "peak_rss_mb": r["peak_rss_mb"], "peak_rss_setup_mb": r["peak_rss_setup_mb"],
                         "rss_ratio_vs_ours": rss_ratio, "times_s": r["times_s"],
                         "cpu_s_per_point": r["cpu_s_per_point"],
                         "cpu_ratio_vs_ours": r["cpu_s_per_point"] / ours["cpu_s_per_point"]}
        print(f"| {variant} | {median:.4f} | {iqr:.4f} | {median / ours_median:.2f}× | {r['cpu_s_per_point']:.4f} | "
              f"{rows[variant]['cpu_ratio_vs_ours']:.2f}× | {r['peak_rss_mb']:.0f} | {r['peak_rss_setup_mb']:.0f} "
              f"| {rss_ratio:.2f}× |")
    lm_median, _ = summary(ours["lm_times_s"])
    parts = {v: {"lm_s": statistics.median(results[v]["lm_times_s"]),
                 "rest_s": statistics.median(t - u for t, u in zip(results[v]["times_s"], results[v]["lm_times_s"]))}
             for v in VARIANTS}
    parts["reference"]["copy_s"] = statistics.median(reference["copy_times_s"])
    print("\nCPU s/point = process CPU time per point (ours: the whole search over points + base), which the load "
          "of other processes distorts less than wall time.")
    print("\n| variant | median s: LM factor (same lm_score call in both) | median s: everything else | of which "
          "deep copy + edit |\n|---|---|---|---|")
    for v in VARIANTS:
        copy_s = f"{parts[v]['copy_s']:.4f}" if "copy_s" in parts[v] else "—"
        print(f"| {v} | {parts[v]['lm_s']:.4f} | {parts[v]['rest_s']:.4f} | {copy_s} |")
    print(f"Score check, reference vs ours: largest difference of any index / LM factor / bias {difference:.2e} "
          f"({'OK' if ok else 'MISMATCH'}, tolerance {args.tolerance:g}); the points move these scores by up to "
          f"{moved:.2e} from the base's.")
    if moved < 10 * args.tolerance:
        print("warning: the edits hardly change the scores, so the check above is weak; use larger --alpha.",
              file=sys.stderr)
    if not ok:
        print("ERROR: the variants computed different scores; the timings above compare different computations "
              "and are not recorded.", file=sys.stderr)
        return 1
    if args.record:
        append_record(args.record, {
            "benchmark": "bench_search", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(), "machine": machine(args, ours["threads"], load_before), "model": args.model,
            "lm_kind": ours["lm_kind"], "params": args.params, "n": ours["n"], "grid": grid(args),
            "num_texts": ours["num_texts"], "num_neutral": ours["num_neutral"], "batch_size": args.batch_size,
            "max_score_difference": difference, "max_score_change_vs_base": moved, "variants": rows,
            "parts": parts, "ours_lm_median_s": lm_median,
            "time_ratio_reference_vs_ours": rows["reference"]["time_ratio_vs_ours"],
            "cpu_ratio_reference_vs_ours": rows["reference"]["cpu_ratio_vs_ours"],
            "rss_ratio_reference_vs_ours": rows["reference"]["rss_ratio_vs_ours"],
        })
    return 0


def run_sizing(args: argparse.Namespace) -> int:
    """Ours only, with the search's default numbers of texts: seconds per point, split into its parts."""
    from gradiend_hf.evaluation.search import (
        DEFAULT_ALPHAS,
        DEFAULT_H,
        DEFAULT_MAX_NEUTRAL,
        DEFAULT_MAX_TEXTS,
    )

    args.max_texts, args.max_neutral = DEFAULT_MAX_TEXTS, DEFAULT_MAX_NEUTRAL
    load_before = warn_load()
    ours = run_children(args, ["ours"])["ours"]
    full, _ = summary(ours["times_s"])
    lm, _ = summary(ours["lm_times_s"])
    feature = statistics.median(t - u for t, u in zip(ours["times_s"], ours["lm_times_s"]))
    points = len(DEFAULT_H) * len(DEFAULT_ALPHAS)
    print(f"\n## Decoder search sizing, {args.model}: default max_texts {args.max_texts} ({ours['num_texts']} "
          f"used), max_neutral {args.max_neutral}; {len(ours['times_s'])} points, torch threads {ours['threads']}, "
          f"load average {load_before:.2f}\n")
    cpu = ours["cpu_s_per_point"]
    print("| part | median wall s/point | CPU s/point (wall share) |\n|---|---|---|")
    print(f"| whole point (edit + feature texts + LM factor) | {full:.3f} | {cpu:.3f} |")
    print(f"| edit + feature texts (a point whose LM factor is skipped) | {feature:.3f} | {cpu * feature / full:.3f} |")
    print(f"| LM factor | {lm:.3f} | {cpu * lm / full:.3f} |")
    print(f"\nDefault grid ({points} points): {points * full / 60:.1f} min if every point is fully scored; "
          f"{points * feature / 60:.1f} min + {lm:.2f} s per LM factor if every point's feature texts are "
          "scored (pruned walks cut both).")
    if args.record:
        append_record(args.record, {
            "benchmark": "bench_search --sizing",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
            "machine": machine(args, ours["threads"], load_before), "model": args.model, "params": args.params,
            "n": ours["n"], "grid": grid(args), "num_texts": ours["num_texts"], "num_neutral": ours["num_neutral"],
            "median_point_s": full, "median_feature_s": feature, "median_lm_s": lm, "cpu_s_per_point": cpu,
            "times_s": ours["times_s"],
            "lm_times_s": ours["lm_times_s"], "peak_rss_mb": ours["peak_rss_mb"],
        })
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (in-process tiny Llama, default), 'tiny-bert' (masked LM) or any name "
                             "load_base_model accepts, e.g. gemma-3-270m")
    parser.add_argument("--params", action="append", default=None,
                        help=f"glob of selected base parameters, repeatable (default: {FALLBACK_PARAMS}; "
                             f"tiny-bert: {DEFAULT_PARAMS['tiny-bert']})")
    parser.add_argument("--gradiend", default=None, help="a trained GRADIEND folder instead of a fresh one")
    parser.add_argument("--h", type=float, nargs="+", default=[-1.0, 1.0], help="h* values (default: -1 1)")
    parser.add_argument("--alpha", type=float, nargs="+", default=None,
                        help="α values (default: 0.01 0.05 0.1; tiny models, which hardly react: 0.1 0.5 1); the "
                             "grid is every h* with every α")
    parser.add_argument("--max-texts", type=int, default=16, help="feature texts per point (default: 16)")
    parser.add_argument("--max-neutral", type=int, default=8, help="neutral texts per point (default: 8)")
    parser.add_argument("--batch-size", type=int, default=16, help="texts per forward pass (default: 16)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: 0, torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the feature-text sample (default: 0)")
    parser.add_argument("--tolerance", type=float, default=1e-5,
                        help="largest difference of any score, reference vs ours (default: 1e-5)")
    parser.add_argument("--sizing", action="store_true",
                        help="ours only, with the search's default max_texts / max_neutral: s/point and its parts")
    parser.add_argument("--record", default=None, help="append a JSON line with the results to this file")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # set by the parent
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.params = args.params or [DEFAULT_PARAMS.get(args.model, FALLBACK_PARAMS)]
    args.alpha = args.alpha or ([0.1, 0.5, 1.0] if args.model in TINY_MODELS else [0.01, 0.05, 0.1])
    if len(grid(args)) < 5 and not args.variant:
        parser.error(f"the grid has {len(grid(args))} points; give at least 5 (medians over fewer say little).")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.variant:
        Path(args.result_file).write_text(json.dumps(run_variant(args)))
        return 0
    return run_sizing(args) if args.sizing else run_compare(args)


if __name__ == "__main__":
    sys.exit(main())
