"""Peak memory per process of GRADIEND training: one process, two with a replicated GRADIEND, two with FSDP.

Each configuration trains the same GRADIEND (a 33M-parameter Llama built in-process, every parameter but the LM head
selected) for a few steps through `GradiendTrainer.train()` in its own processes, started one after the other; every
process reports its peak RSS (`ru_maxrss`) and its RSS after set-up. The parent prints a Markdown table beside what
`gradiend_hf.training_memory` predicts for the GRADIEND side, and with `--record FILE` appends a JSON line.

    python benchmarks/bench_fsdp.py --record benchmarks/results.jsonl
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from bench_train import vm_hwm_mb  # noqa: E402  (peak RSS in MiB, as bench_train reports it)


def build_model(folder: str) -> None:
    from tiny_models import bpe_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bpe_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
                         num_key_value_heads=8, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def child(model_dir: str, out_dir: str, fsdp: bool, steps: int, result: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gradiend_hf import GradiendModel, GradiendTrainer, TrainingArguments, features

    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    feature = features.gender()
    model = GradiendModel.for_base_model(base, params=["paper"], feature=feature)
    args = TrainingArguments(max_steps=steps, eval_steps=steps, eval_max_examples=16, batch_size=8, fsdp=fsdp,
                             progress_bar=False, output_dir=out_dir)
    trainer = GradiendTrainer(model, base, tokenizer, feature, args)
    setup = vm_hwm_mb()
    trainer.train()
    record = {"rank": trainer.state.process_index, "processes": trainer.state.num_processes, "fsdp": trainer.sharded,
              "n": model.config.num_selected, "base_parameters": sum(p.numel() for p in base.parameters()),
              "rss_setup_mib": setup, "peak_rss_mib": vm_hwm_mb()}
    Path(f"{result}.{record['rank']}").write_text(json.dumps(record))


def run(configs, model_dir: str, tmp: str, steps: int) -> list[dict]:
    rows = []
    for processes, fsdp in configs:
        result = f"{tmp}/result-{processes}-{fsdp}"
        command = [sys.executable, __file__, "--child", model_dir, f"{tmp}/out-{processes}-{fsdp}", result,
                   "--steps", str(steps)] + (["--fsdp"] if fsdp else [])
        if processes > 1:
            torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
            command = [torchrun, "--standalone", "--nproc_per_node", str(processes), *command[1:]]
        print(f"running {processes} process(es), fsdp={fsdp} ...", file=sys.stderr, flush=True)
        subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       stdout=subprocess.DEVNULL)
        for rank in range(processes):
            rows.append(json.loads(Path(f"{result}.{rank}").read_text()))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "OUT", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--fsdp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--record", help="append one JSON line to this file")
    args = parser.parse_args()
    if args.child:
        child(*args.child[:2], args.fsdp, args.steps, args.child[2])
        return 0
    from gradiend_hf import training_memory

    with tempfile.TemporaryDirectory(prefix="bench_fsdp_") as tmp:
        model_dir = f"{tmp}/base"
        build_model(model_dir)
        rows = run([(1, False), (2, False), (2, True)], model_dir, tmp, args.steps)
    n, base_parameters = rows[0]["n"], rows[0]["base_parameters"]
    print(f"\n## Peak RSS per process, Llama 33M (n = {n:,}, all but the LM head), {args.steps} steps, batch 8\n")
    print("| processes | GRADIEND | process | RSS after set-up MiB | peak RSS MiB | peak − set-up MiB "
          "| model: GRADIEND weights + moments MiB |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        estimate = training_memory(n, base_parameters=base_parameters, processes=row["processes"], fsdp=row["fsdp"])
        row["model_gradiend_mib"] = (estimate.gradiend_weights + estimate.optimizer_state) / 2**20
        split = "FSDP" if row["fsdp"] else "replicated" if row["processes"] > 1 else "whole"
        print(f"| {row['processes']} | {split} | {row['rank']} | {row['rss_setup_mib']:.0f} | "
              f"{row['peak_rss_mib']:.0f} | {row['peak_rss_mib'] - row['rss_setup_mib']:.0f} | "
              f"{row['model_gradiend_mib']:.0f} |")
    if args.record:
        with open(args.record, "a") as handle:
            handle.write(json.dumps({"benchmark": "bench_fsdp", "date": dt.datetime.now(dt.timezone.utc).isoformat(
                timespec="seconds"), "n": n, "steps": args.steps, "torch": torch.__version__, "rows": rows}) + "\n")
        print(f"\nAppended to {args.record}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
