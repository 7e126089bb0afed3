"""Encoder evaluation throughput: batched forward-mode encoding (ours) vs. one backward pass per text (reference).

Both variants encode the same held-out texts with the same GRADIEND model and must give the same h (checked
before any number is reported):

    python benchmarks/bench_encoder.py --model tiny --threads 1
    python benchmarks/bench_encoder.py --model gemma-3-270m --texts 64 --record benchmarks/results.jsonl

- **ours**: `GradiendModel.encode_examples(engine, texts, batch_size=B)`, the code path of `evaluate_encoder`:
  the encoder's pre-activation <W_e, ∇_i> + b_e of every text of a batch is one forward-mode (JVP) pass of the
  base model with W_e as the tangent, LM head only at the scored position, no per-text gradient ever formed.
- **reference**: what the reference code does to evaluate an encoder, one text at a time: every base parameter
  requires grad, one HF forward with `labels` (full-vocabulary logits at every position), `loss.backward()`, the
  selected `.grad`s flattened into one n-long vector, then a dense `nn.Linear(n, 1)` (holding our model's W_e and
  b_e) and tanh.

Each variant encodes all texts once per repeat; repeats alternate between the variants (so drift in the machine's
load hits both), after one untimed warm-up pass over the first batch. Reported: median and IQR of seconds per
pass, texts per second and the speed-up; the h check prints ‖h_ref − h_ours‖ / ‖h_ours‖ and refuses to report
or record anything above `--tolerance`. That tolerance is 1e-3, not bench_train's 1e-4: h = tanh(<W_e, ∇> + b_e)
sums n products of random sign, so float32 rounding upstream is amplified by cancellation, and transformers
computes the `labels` loss in float32 (even for a float64 model); on Gemma that alone moves the reference's h by
1.2e-4 relative (README.md next to this file). A wrong position or label changes h by O(1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models.py
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(HERE))  # bench_train's helpers

import torch
from bench_train import (
    DEFAULT_PARAMS,
    append_record,
    git_commit,
    load_model,
    relative_error,
    summary,
    synchronize,
)


def held_out_texts(tokenizer, lm_kind: str, *, count: int, seed: int) -> list:
    """`count` test texts of the built-in gender feature (held-out names and templates), half per class.

    Texts whose targets are not single tokens are dropped first, as `evaluate_encoder` does.
    """
    from gradiend_hf import features
    from gradiend_hf.gradients import SlotTokenizer, drop_multi_token_examples

    feature = features.gender()
    kept, _ = drop_multi_token_examples(list(feature.test), SlotTokenizer(tokenizer, lm_kind))
    rng = random.Random(seed)
    chosen = []
    for position, label in enumerate(feature.classes):
        pool = [e for e in kept if e.label == label]
        chosen += rng.sample(pool, min(len(pool), count // 2 + (position < count % 2)))
    return chosen


class Reference:
    """Encode one text at a time from its full gradient, as the reference implementation does."""

    def __init__(self, base, tokenizer, model, lm_kind: str, device: torch.device, max_length: int):
        from gradiend_hf.gradients import SlotTokenizer

        self.base = base
        self.lm_kind = lm_kind
        self.device = device
        self.slots = SlotTokenizer(tokenizer, lm_kind, max_length=max_length)  # the same token ids as ours
        named = dict(base.named_parameters())
        self.selected = [named[n] for n in model.config.param_names]
        for p in base.parameters():  # the reference differentiates the whole model
            p.requires_grad_(True)
        n = sum(p.numel() for p in self.selected)
        self.encoder = torch.nn.Linear(n, 1, dtype=model.encoder.bias.dtype).to(device)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.cat([w.detach().reshape(1, -1) for w in model.encoder.weights], dim=1))
            self.encoder.bias.copy_(model.encoder.bias.detach()[:1])

    def _inputs(self, example) -> dict[str, torch.Tensor]:
        slots = self.slots([example])
        position, target = int(slots.positions[0]), int(slots.factual_ids[0])
        if self.lm_kind == "causal":  # prefix + target; HF shifts the labels, so the label sits on the target
            ids = [*slots.input_ids[0, : position + 1].tolist(), target]
            label_at = position + 1
        else:  # the masked text, labelled at the mask
            ids = slots.input_ids[0, : int(slots.attention_mask[0].sum())].tolist()
            label_at = position
        labels = torch.full((1, len(ids)), -100, dtype=torch.long)
        labels[0, label_at] = target
        out = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
               "labels": labels}
        return {k: v.to(self.device) for k, v in out.items()}

    def encode(self, examples: Sequence) -> torch.Tensor:
        h = []
        for example in examples:
            self.base.zero_grad(set_to_none=True)
            self.base(**self._inputs(example)).loss.backward()  # −log p(factual): the source ∇+
            flat = torch.cat([p.grad.reshape(-1) for p in self.selected])
            with torch.no_grad():
                h.append(torch.tanh(self.encoder(flat)).cpu())
        self.base.zero_grad(set_to_none=True)
        return torch.stack(h)


def timed(function, device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    tick = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - tick, result


def run(args: argparse.Namespace) -> int:
    import transformers

    from gradiend_hf import GradiendModel, GradientEngine
    from gradiend_hf.modeling_gradiend import infer_lm_kind

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    if load_before > 0.25 * (os.cpu_count() or 1):
        print(f"warning: load average {load_before:.2f} on {os.cpu_count()} CPUs before the run; other processes "
              f"distort the timings (consider --threads 1 on a shared machine).", file=sys.stderr)
    device = torch.device(args.device)
    base, tokenizer = load_model(args.model)
    base.to(device).eval()
    lm_kind = infer_lm_kind(base)
    texts = held_out_texts(tokenizer, lm_kind, count=args.texts, seed=args.seed)
    model = GradiendModel.for_base_model(base, params=args.params, seed=0).to(device)  # fresh: fine for timing
    # Inputs no longer than the model's positions (the tiny BERT has 128; its character-level pieces exceed it).
    max_length = min(args.max_length, getattr(base.config, "max_position_embeddings", args.max_length))
    engine = GradientEngine(base, tokenizer, model.config.param_names, max_length=max_length)
    n = model.config.num_selected
    reference = Reference(base, tokenizer, model, lm_kind, device, max_length)

    def ours(examples):
        return model.encode_examples(engine, examples, batch_size=args.batch_size)[:, 0]

    def ref(examples):
        return reference.encode(examples)[:, 0]

    warm = texts[: args.batch_size]
    ours(warm)
    ref(warm)
    times: dict[str, list[float]] = {"ours": [], "reference": []}
    h: dict[str, torch.Tensor] = {}
    for repeat in range(args.repeats):
        for name, function in (("ours", ours), ("reference", ref)):
            print(f"repeat {repeat + 1}/{args.repeats}: {name} ...", file=sys.stderr, flush=True)
            seconds, values = timed(lambda f=function: f(texts), device)
            times[name].append(seconds)
            h.setdefault(name, values.detach().double().cpu())
    error = relative_error(h["reference"], h["ours"])
    max_abs = float((h["reference"] - h["ours"]).abs().max())
    ok = error <= args.tolerance

    rows: dict[str, dict[str, float]] = {}
    ours_median = summary(times["ours"])[0]
    for name in ("ours", "reference"):
        median, iqr = summary(times[name])
        rows[name] = {"median_s": median, "iqr_s": iqr, "texts_per_s": len(texts) / median,
                      "time_ratio_vs_ours": median / ours_median}
    load_after = os.getloadavg()[0]
    print(f"\n## Encoder evaluation: {args.model}, n = {n:,} ({', '.join(args.params)}), {len(texts)} texts, "
          f"batch {args.batch_size} (ours), {args.repeats} repeats, torch threads {torch.get_num_threads()}, "
          f"{args.device}, load average {load_before:.2f} -> {load_after:.2f}\n")
    print("| variant | median s / pass | IQR s | texts / s | time vs ours |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        label = "ours (batched JVP)" if name == "ours" else "reference (backward per text)"
        print(f"| {label} | {r['median_s']:.3f} | {r['iqr_s']:.3f} | {r['texts_per_s']:.1f} "
              f"| {r['time_ratio_vs_ours']:.2f}× |")
    spread = float(h["ours"].std())
    print(f"\nh check: relative error {error:.2e}, max |Δh| {max_abs:.2e} (std of h {spread:.2e}; "
          f"{'OK' if ok else 'MISMATCH'}, tolerance {args.tolerance:g})")
    if not ok or not math.isfinite(error):
        print("ERROR: the two variants computed different h; the timings compare different computations and are "
              "not recorded.", file=sys.stderr)
        return 1
    if args.record:
        record = {
            "benchmark": "bench_encoder",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "machine": {"cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "device": args.device,
                        "load_average_before": round(load_before, 2), "load_average_after": round(load_after, 2),
                        "torch": torch.__version__, "transformers": transformers.__version__,
                        "python": platform.python_version(), "platform": platform.platform(),
                        **({"cuda_device": torch.cuda.get_device_name()} if args.device == "cuda" else {})},
            "model": args.model, "lm_kind": lm_kind, "params": args.params, "n": n, "texts": len(texts),
            "batch_size": args.batch_size, "repeats": args.repeats, "h_relative_error": error,
            "h_max_abs_error": max_abs, "variants": rows,
            "speedup_reference_vs_ours": rows["reference"]["time_ratio_vs_ours"],
        }
        append_record(args.record, record)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (in-process tiny Llama, default), 'tiny-bert' (masked LM) or any name "
                             "load_base_model accepts, e.g. gemma-3-270m")
    parser.add_argument("--params", action="append", default=None,
                        help=f"glob of selected base parameters, repeatable (default: {DEFAULT_PARAMS})")
    parser.add_argument("--texts", type=int, default=64, help="held-out texts encoded per pass (default: 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="texts per JVP pass, ours (default: 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per variant (default: 3)")
    parser.add_argument("--max-length", type=int, default=256,
                        help="longest input in tokens, capped at the model's positions (default: 256)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="(default: cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: 0, torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the text sample (default: 0)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest relative error ‖h_ref − h_ours‖ / ‖h_ours‖ (default: 1e-3; see README: the "
                             "reference's float32 loss alone is off by ~1e-4 on Gemma)")
    parser.add_argument("--record", default=None, help="append a JSON line with the results to this file")
    args = parser.parse_args(argv)
    args.params = args.params or [DEFAULT_PARAMS]
    if args.texts < 2 or args.repeats < 1 or args.batch_size < 1:
        parser.error("--texts must be at least 2, --repeats and --batch-size at least 1.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device.")
    return args


if __name__ == "__main__":
    sys.exit(run(parse_args()))
