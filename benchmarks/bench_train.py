"""Time and peak memory of one GRADIEND training step: our engine + trainer vs. a reference-style baseline.

One command runs both variants, each in its own subprocess (so peak RSS belongs to one variant), one after
the other (so they never compete for cores), on the same batches and the same selected parameters, and checks
on the first step that both computed the same ∇± before it reports any number.

    python benchmarks/bench_train.py --model tiny
    python benchmarks/bench_train.py --model gemma-3-270m --record benchmarks/results.jsonl

The baseline implements the same math the way the reference code does (see README.md next to this file):
every base parameter requires grad, two full forward passes with `labels` (full-vocabulary logits at every
position of fixed-length padded inputs), two `loss.backward()` calls, the selected `.grad`s flattened into one
n-long vector each time, and a GRADIEND of plain `nn.Linear(n, 1)` / `nn.Linear(1, n)` (MSE loss, AdamW).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
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
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models.py (in-process tiny Llama + BPE tokenizer)
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

DEFAULT_PARAMS = "model.layers.*.mlp.down_proj.weight"
VARIANTS = ("ours", "floor", "baseline", "baseline-dynamic")
TINY_MODELS = ("tiny", "tiny-bert", "llama-10m")
LR, WEIGHT_DECAY = 1e-5, 1e-2  # the paper's AdamW settings, used by both variants


# -- shared by both variants ---------------------------------------------------------------------------------
def load_model(name: str):
    """(model, tokenizer): in-process tiny Llama / BERT for `tiny` / `tiny-bert`, else `load_base_model`."""
    if name == "tiny":
        from tiny_models import bpe_tokenizer, tiny_llama

        tokenizer = bpe_tokenizer()
        return tiny_llama(len(tokenizer)), tokenizer
    if name == "tiny-bert":  # exercises the masked-LM path of both variants
        from tiny_models import tiny_bert, wordpiece_tokenizer

        tokenizer = wordpiece_tokenizer()
        return tiny_bert(len(tokenizer)), tokenizer
    if name == "llama-10m":  # the 10M-parameter Llama: 8 blocks of width 256 (8.4M block weights)
        from tiny_models import bpe_tokenizer
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = bpe_tokenizer()
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=4,
                             num_key_value_heads=4, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2,
                             pad_token_id=0, tie_word_embeddings=False)
        return LlamaForCausalLM(config).eval(), tokenizer
    from gradiend_hf import load_base_model

    return load_base_model(name)


def make_batches(feature, tokenizer, lm_kind: str, *, batch_size: int, count: int, seed: int) -> list[list]:
    """`count` batches of `batch_size` train texts of one class, alternating classes; a function of the seed.

    Both subprocesses call this, so both variants see exactly the same texts in the same order. Examples whose
    target words are not single tokens are dropped first (the trainer drops them too).
    """
    from gradiend_hf.gradients import SlotTokenizer, drop_multi_token_examples

    kept, _ = drop_multi_token_examples(list(feature.train), SlotTokenizer(tokenizer, lm_kind))
    pools = {c: [e for e in kept if e.label == c] for c in feature.classes}
    batches = []
    for step in range(1, count + 1):
        pool = pools[feature.classes[(step - 1) % 2]]
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        indices = torch.randperm(len(pool), generator=generator)[:batch_size].tolist()
        batches.append([pool[i] for i in indices])
    return batches


def batches_digest(batches: Sequence[Sequence]) -> str:
    """A short hash of the batch texts, compared by the parent to prove both variants saw the same data."""
    text = "\n\n".join("\n".join(f"{e.label}\t{e.text}" for e in batch) for batch in batches)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def vm_hwm_mb() -> float:
    """Peak resident set size so far, in MiB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- ours: the real trainer code path ------------------------------------------------------------------------
class Ours:
    """`GradiendTrainer.training_step` as `train()` calls it; step 1's ∇± is read off the engine."""

    def __init__(self, args: argparse.Namespace, base, tokenizer, feature, device: torch.device):
        from gradiend_hf import GradiendModel, GradiendTrainer, TrainingArguments

        model = GradiendModel.for_base_model(base, params=args.params, feature=feature, seed=0,
                                             dtype=getattr(torch, args.gradiend_dtype))
        training_args = TrainingArguments(progress_bar=False, batch_size=args.batch_size, learning_rate=LR,
                                          weight_decay=WEIGHT_DECAY, use_cpu=device.type == "cpu")
        self.trainer = GradiendTrainer(model, base, tokenizer, feature, training_args)
        self.optimizer = self.trainer._optimizer()  # the optimizer `trainer.train()` builds (fused AdamW)
        self.n = sum(p.numel() for p in self.trainer.engine.params.values())
        self.names = list(model.config.param_names)
        self.first_diff: torch.Tensor | None = None
        self._captured = False
        self._engine_gradients = self.trainer.engine.gradients
        self.trainer.engine.gradients = self._capturing  # instance attribute: only this engine is wrapped
        # The step's profile: base passes (the engine), the closed-form GRADIEND forward/backward and AdamW (which
        # the trainer interleaves, one parameter at a time), and the rest (Python, tokenising, bookkeeping).
        self.parts: dict[str, list[float]] = {"base_passes_s": [], "gradiend_fwd_bwd_s": [], "optimizer_s": []}
        self._current = {k: 0.0 for k in self.parts}
        import gradiend_hf.training as training

        training.reconstruction_gradients = self._timed(training.reconstruction_gradients, "gradiend_fwd_bwd_s")
        self.optimizer.step = self._timed(self.optimizer.step, "optimizer_s")

    def _timed(self, function, part: str):
        def timed(*args, **kwargs):
            tick = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._current[part] += time.perf_counter() - tick

        return timed

    def _capturing(self, *args, **kwargs):
        tick = time.perf_counter()
        pair = self._engine_gradients(*args, **kwargs)
        self._current["base_passes_s"] += time.perf_counter() - tick
        if not self._captured:  # step 1 only; flat in config order, the order of the baseline's vector
            self._captured = True
            flat = [pair.target[n].detach().reshape(-1).float().cpu() for n in self.names]
            self.first_diff = torch.cat(flat)
        return pair

    def step(self, batch: list) -> float:
        self._current = {k: 0.0 for k in self.parts}
        loss = self.trainer.training_step(self.optimizer, batch)
        # AdamW runs inside the reconstruction's callback: report the GRADIEND side without it
        self._current["gradiend_fwd_bwd_s"] -= self._current["optimizer_s"]
        for key, value in self._current.items():
            self.parts[key].append(value)
        return loss

    def take_first_diff(self) -> torch.Tensor | None:
        """Step 1's flat ∇±, released here so that it does not add to the peak memory of later steps."""
        diff, self.first_diff = self.first_diff, None
        return diff


# -- floor: the base model's own passes for the same batch and selection --------------------------------------
class Floor(Ours):
    """Only what any GRADIEND step must do: one forward and two backward passes of the base model (∇+, ∇−) for the
    batch, w.r.t. the selected parameters, through the same engine; no GRADIEND, no optimiser."""

    def step(self, batch: list) -> float:
        pair = self.trainer.engine.gradients(batch, source=self.trainer.model.config.source)
        del pair
        return 0.0


# -- baseline: the same math, the way the reference code computes it -----------------------------------------
class Baseline:
    """Reference-style step: all parameters trainable, 2 full forwards with labels, 2 backwards, flat grads.

    Token ids come from the same `SlotTokenizer` as ours (so both score the very same tokens); what differs is
    the computation: inputs padded to `pad_length` (0 = to the longest row), the HF loss over full-vocabulary
    logits at every position (labels −100 everywhere but the target), `.grad` of all base parameters, and flat
    n-vectors.
    """

    def __init__(self, base, tokenizer, params: Sequence[str], lm_kind: str, pad_length: int,
                 device: torch.device):
        from gradiend_hf.gradients import SlotTokenizer, select_parameters

        self.base = base
        self.lm_kind = lm_kind
        self.pad_length = pad_length
        self.device = device
        self.slots = SlotTokenizer(tokenizer, lm_kind)
        for p in base.parameters():  # the reference never freezes anything
            p.requires_grad_(True)
        base.eval()  # no dropout, as in our engine, so that both compute the same gradient
        self.selected = list(select_parameters(base, list(params)).values())
        self.n = sum(p.numel() for p in self.selected)
        self.encoder = torch.nn.Linear(self.n, 1).to(device)
        self.decoder = torch.nn.Linear(1, self.n).to(device)
        self.optimizer = torch.optim.AdamW([*self.encoder.parameters(), *self.decoder.parameters()], lr=LR,
                                           weight_decay=WEIGHT_DECAY)
        self.first_diff: torch.Tensor | None = None
        self._captured = False

    def take_first_diff(self) -> torch.Tensor | None:
        """Step 1's flat ∇±, released here so that it does not add to the peak memory of later steps."""
        diff, self.first_diff = self.first_diff, None
        return diff

    def _inputs(self, batch: list, factual: bool) -> dict[str, torch.Tensor]:
        slots = self.slots(batch)
        targets = slots.factual_ids if factual else slots.counterfactual_ids
        rows = []
        for i in range(len(batch)):
            position = int(slots.positions[i])
            if self.lm_kind == "causal":  # prefix + target token; HF shifts, so the label is on the target
                ids = [*slots.input_ids[i, : position + 1].tolist(), int(targets[i])]
                label_at = position + 1
            else:  # the masked text; the label sits on the mask
                ids = slots.input_ids[i, : int(slots.attention_mask[i].sum())].tolist()
                label_at = position
            rows.append((ids, label_at, int(targets[i])))
        width = max(self.pad_length, max(len(ids) for ids, _, _ in rows))
        input_ids = torch.full((len(rows), width), self.slots.pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, -100)
        for i, (ids, label_at, target) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention_mask[i, : len(ids)] = 1
            labels[i, label_at] = target
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        return {k: v.to(self.device) for k, v in out.items()}

    def _flat_grad(self, batch: list, factual: bool) -> torch.Tensor:
        self.base.zero_grad(set_to_none=True)
        loss = self.base(**self._inputs(batch, factual)).loss
        loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in self.selected])

    def step(self, batch: list) -> float:
        grad_plus = self._flat_grad(batch, factual=True)
        grad_minus = self._flat_grad(batch, factual=False)
        grad_diff = grad_plus - grad_minus  # a new tensor (the reference's in-place one aliased the source)
        if not self._captured:
            self._captured = True
            self.first_diff = grad_diff.detach().float().cpu().clone()
        decoded = self.decoder(torch.tanh(self.encoder(grad_plus)))
        loss = torch.nn.functional.mse_loss(decoded, grad_diff)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


# -- one variant in this process -----------------------------------------------------------------------------
def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    """Set up one variant, run warm-up + timed steps, and return its timings, peak RSS and step-1 ∇± file."""
    from gradiend_hf import features
    from gradiend_hf.modeling_gradiend import infer_lm_kind

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    started = time.perf_counter()
    base, tokenizer = load_model(args.model_path or args.model)
    base.to(device)
    lm_kind = infer_lm_kind(base)
    feature = features.gender()
    batches = make_batches(feature, tokenizer, lm_kind, batch_size=args.batch_size,
                           count=args.warmup + args.steps, seed=args.seed)

    runner: Ours | Baseline
    if args.variant in ("ours", "floor"):
        runner = (Ours if args.variant == "ours" else Floor)(args, base, tokenizer, feature, device)
    else:
        pad = args.baseline_pad_length if args.variant == "baseline" else 0
        runner = Baseline(base, tokenizer, args.params, lm_kind, pad, device)
    setup_seconds = time.perf_counter() - started
    setup_peak = vm_hwm_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    times, losses = [], []
    for index, batch in enumerate(batches):
        synchronize(device)
        tick = time.perf_counter()
        losses.append(runner.step(batch))
        synchronize(device)
        if index >= args.warmup:
            times.append(time.perf_counter() - tick)
        if index == 0:  # write step 1's ∇± out and drop it, so the check does not hold memory during timing
            save_file({"grad": runner.take_first_diff().contiguous()}, args.grad_file)

    result = {
        "variant": args.variant, "n": runner.n, "lm_kind": lm_kind, "times_s": times, "losses": losses,
        "setup_s": setup_seconds, "peak_rss_setup_mb": setup_peak, "peak_rss_mb": vm_hwm_mb(),
        "batches": batches_digest(batches), "threads": torch.get_num_threads(),
        "pad_length": (args.baseline_pad_length if args.variant == "baseline" else "dynamic"
                       if args.variant == "baseline-dynamic" else None),
    }
    if args.variant == "ours":  # the profile of the timed steps
        result["parts"] = {k: v[args.warmup:] for k, v in runner.parts.items()}
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


# -- the parent: run children one after the other, check, report ---------------------------------------------
def summary(times: Sequence[float]) -> tuple[float, float]:
    """Median and interquartile range (q3 − q1) of the step times."""
    if len(times) < 2:
        return times[0], 0.0
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return statistics.median(times), q3 - q1


def child_command(args: argparse.Namespace, variant: str, result_file: str, grad_file: str) -> list[str]:
    """This script with the parent's settings, as one variant writing its results to the given files."""
    command = [sys.executable, str(Path(__file__).resolve()), "--variant", variant,
               "--result-file", result_file, "--grad-file", grad_file, "--model", args.model,
               "--batch-size", str(args.batch_size),
               "--warmup", str(args.warmup), "--steps", str(args.steps), "--seed", str(args.seed),
               "--baseline-pad-length", str(args.baseline_pad_length), "--device", args.device,
               "--threads", str(args.threads), "--gradiend-dtype", args.gradiend_dtype]
    for pattern in args.params:
        command += ["--params", pattern]
    return command


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ over the flat vectors (inf when the shapes differ)."""
    if a is None or b is None or a.shape != b.shape:
        return float("inf")
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def git_commit() -> str | None:
    try:
        def git(*command: str) -> str:
            return subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()

        commit, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain")
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def warn_load() -> float:
    """The load average before a timed run, with a warning when other processes would distort the timings."""
    load = os.getloadavg()[0]
    if load > 0.25 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.2f} on {os.cpu_count()} CPUs before the run; other processes distort "
              f"the timings (with several torch threads, a busy core can slow a step tenfold; consider --threads 1).",
              file=sys.stderr)
    return load


def save_tiny_model(name: str, folder: str) -> str | None:
    """For the tiny models, build once and save into `folder` the model every child loads (else None).

    In-process builds may differ across processes (the tiny WordPiece vocabulary depends on the hash seed), and
    the checks between variants need identical weights.
    """
    if name not in TINY_MODELS:
        return None
    path = f"{folder}/base"
    base, tokenizer = load_model(name)
    base.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def append_record(path: str, record: dict[str, Any]) -> None:
    """Append one JSON line to the results file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(f"\nAppended to {target}.")


def run_parent(args: argparse.Namespace) -> int:
    import transformers

    variants = ["ours", "floor"] + ([] if args.no_baseline else ["baseline"]) + \
        (["baseline-dynamic"] if args.also_dynamic else [])
    load_before = warn_load()
    results: dict[str, dict[str, Any]] = {}
    grads: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        model_path = save_tiny_model(args.model, tmp)
        for variant in variants:  # sequentially: timings must not compete for the same cores
            result_file, grad_file = f"{tmp}/{variant}.json", f"{tmp}/{variant}.safetensors"
            print(f"running {variant} ...", file=sys.stderr, flush=True)
            command = child_command(args, variant, result_file, grad_file)
            subprocess.run(command + (["--model-path", model_path] if model_path else []), check=True)
            results[variant] = json.loads(Path(result_file).read_text())
            grads[variant] = load_file(grad_file)["grad"]

    digests = {r["batches"] for r in results.values()}
    if len(digests) != 1:
        print(f"ERROR: the variants saw different batches ({digests}).", file=sys.stderr)
        return 2
    errors = {v: relative_error(grads[v], grads["ours"]) for v in variants if v != "ours"}
    ok = all(e <= args.tolerance for e in errors.values())

    ours = results["ours"]
    ours_median, _ = summary(ours["times_s"])
    n = ours["n"]
    print(f"\n## GRADIEND training step: {args.model}, n = {n:,} ({', '.join(args.params)}), "
          f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"torch threads {ours['threads']}, {args.device}\n")
    header = ("| variant | median s/step | IQR s | time vs ours | peak RSS MiB | RSS after setup MiB "
              "| RSS vs ours |")
    if args.device == "cuda":
        header += " peak CUDA MiB |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = {}
    for variant in variants:
        r = results[variant]
        median, iqr = summary(r["times_s"])
        name = variant if variant != "baseline" else f"baseline (pad {args.baseline_pad_length})"
        rss_ratio = r["peak_rss_mb"] / ours["peak_rss_mb"]
        rows[variant] = {"median_s": median, "iqr_s": iqr, "time_ratio_vs_ours": median / ours_median,
                         "peak_rss_mb": r["peak_rss_mb"], "peak_rss_setup_mb": r["peak_rss_setup_mb"],
                         "rss_ratio_vs_ours": rss_ratio, "pad_length": r["pad_length"]}
        line = (f"| {name} | {median:.4f} | {iqr:.4f} | {median / ours_median:.2f}× | {r['peak_rss_mb']:.0f} "
                f"| {r['peak_rss_setup_mb']:.0f} | {rss_ratio:.2f}× |")
        if "peak_cuda_mb" in r:
            rows[variant]["peak_cuda_mb"] = r["peak_cuda_mb"]
            line += f" {r['peak_cuda_mb']:.0f} |"
        print(line)
    print("\nPeak RSS = ru_maxrss of the variant's own process (whole run: imports, model load, steps).")
    floor_median, _ = summary(results["floor"]["times_s"])
    parts = {k: summary(v)[0] for k, v in ours["parts"].items()}
    parts["other_s"] = max(ours_median - sum(parts.values()), 0.0)
    print(f"\nOurs vs the floor (the base model's 1 forward + 2 backward passes, its own process): "
          f"{ours_median / floor_median:.3f}×; vs the base passes inside our step: "
          f"{ours_median / parts['base_passes_s']:.3f}×")
    print("Profile of our step (medians): " + ", ".join(
        f"{k.removesuffix('_s').replace('_', ' ')} {v:.4f} s ({v / ours_median:.0%})" for k, v in parts.items()))
    print(f"load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs)")
    for variant, error in errors.items():
        print(f"Step-1 ∇± check, {variant} vs ours: relative error {error:.2e} "
              f"({'OK' if error <= args.tolerance else 'MISMATCH'}, tolerance {args.tolerance:g})")
    if not ok:
        print("ERROR: the variants computed different ∇±; the timings above compare different computations "
              "and are not recorded.", file=sys.stderr)
        return 1

    if args.record:
        record = {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "machine": {"cpu_count": os.cpu_count(), "threads": ours["threads"], "device": args.device,
                        "load_average_before": round(load_before, 2),
                        "load_average_after": round(os.getloadavg()[0], 2),
                        "torch": torch.__version__, "transformers": transformers.__version__,
                        "python": platform.python_version(), "platform": platform.platform(),
                        **({"cuda_device": torch.cuda.get_device_name()} if args.device == "cuda" else {})},
            "model": args.model, "lm_kind": ours["lm_kind"], "params": args.params, "n": n,
            "gradiend_dtype": args.gradiend_dtype,
            "batch_size": args.batch_size, "warmup": args.warmup, "steps": args.steps,
            "baseline_pad_length": args.baseline_pad_length, "grad_relative_error": errors, "variants": rows,
            "time_ratio_floor_vs_ours": rows["floor"]["time_ratio_vs_ours"],
            "ours_vs_floor": ours_median / floor_median,
            "ours_vs_base_passes_in_step": ours_median / parts["base_passes_s"], "profile_s": parts,
        }
        if "baseline" in rows:
            record["time_ratio_baseline_vs_ours"] = rows["baseline"]["time_ratio_vs_ours"]
            record["rss_ratio_baseline_vs_ours"] = rows["baseline"]["rss_ratio_vs_ours"]
        append_record(args.record, record)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (in-process tiny Llama, default), 'tiny-bert' (masked LM) or any name "
                             "load_base_model accepts, e.g. gemma-3-270m")
    parser.add_argument("--params", action="append", default=None,
                        help=f"glob of selected base parameters, repeatable (default: {DEFAULT_PARAMS})")
    parser.add_argument("--batch-size", type=int, default=8, help="texts per step, one class (default: 8)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps first; step 1 is also the ∇± check (default: 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: 10)")
    parser.add_argument("--baseline-pad-length", type=int, default=64,
                        help="the baseline pads every input to this many tokens; the reference pads to 256 "
                             "(default: 64)")
    parser.add_argument("--gradiend-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="dtype of the GRADIEND weights and AdamW moments (default: float32)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="only ours and the floor (the reference-style baseline takes minutes on Gemma)")
    parser.add_argument("--also-dynamic", action="store_true",
                        help="also run the baseline padded only to the longest row of each batch")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="(default: cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: 0, torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch sampling (default: 0)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest relative error of step 1's ∇±, baseline vs ours (default: 1e-4)")
    parser.add_argument("--record", default=None, help="append a JSON line with the results to this file")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # set by the parent
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    parser.add_argument("--grad-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.params = args.params or [DEFAULT_PARAMS]
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1 (step 1 is the ∇± check and is never timed).")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device.")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.variant:
        result = run_variant(args)
        Path(args.result_file).write_text(json.dumps(result))
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
