"""Trains a tiny GRADIEND under torchrun (or alone) and saves the final weights; used by test_training_distributed.

Usage: script MODEL_DIR OUT_FILE [--fsdp] [--output-dir DIR] [--resume] [--crash-at STEP] [--measure FILE]
"""

import argparse
import json
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from gradiend_hf import GradiendModel, GradiendTrainer, TrainingArguments

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from tiny_models import tiny_gender_feature  # noqa: E402

PARAMS = ["model.layers.*.mlp.*", "model.layers.*.input_layernorm.weight"]


def gradiend_bytes(model, optimizer) -> int:
    """Bytes of GRADIEND weights and AdamW moments this process holds (its pieces, when sharded)."""
    from gradiend_hf.sharding import local

    total = sum(local(p).numel() * local(p).element_size() for p in model.parameters())
    for state in optimizer.state.values():
        total += sum(local(v).numel() * local(v).element_size() for v in state.values() if v.dim() > 0)
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out_file")
    parser.add_argument("--fsdp", action="store_true")
    parser.add_argument("--output-dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--crash-at", type=int)
    parser.add_argument("--measure")
    parser.add_argument("--seeds", type=int, default=1)
    options = parser.parse_args()
    base = AutoModelForCausalLM.from_pretrained(options.model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(options.model_dir)
    feature = tiny_gender_feature()
    model = GradiendModel.for_base_model(base, params=PARAMS, feature=feature)
    args = TrainingArguments(max_steps=6, eval_steps=3, batch_size=4, learning_rate=1e-3, progress_bar=False,
                             fsdp=options.fsdp, output_dir=options.output_dir,
                             num_seeds=options.seeds)
    trainer = GradiendTrainer(model, base, tokenizer, feature, args)
    if options.measure:  # one step on a separate copy: what this process holds while it trains
        from gradiend_hf.sharding import shard_gradiend, unshard

        probe = GradiendModel.for_base_model(base, params=PARAMS, feature=feature)
        measurer = GradiendTrainer(probe, base, tokenizer, feature, args)
        if measurer.sharded:
            shard_gradiend(probe)
        optimizer = measurer._optimizer()
        measurer.training_step(optimizer, measurer._local_slice(measurer.batch_for_step(0, 1)[1]))
        held = gradiend_bytes(probe, optimizer)
        unshard(probe)
        if trainer.state.is_main_process:
            with open(options.measure, "w") as handle:
                json.dump({"bytes": held, "whole_model_bytes": sum(p.numel() * 4 for p in probe.parameters())},
                          handle)
    if options.crash_at:
        step = trainer.training_step
        done = []

        def crashing_step(*a, **k):
            done.append(1)
            if len(done) == options.crash_at:
                raise RuntimeError("simulated crash")
            return step(*a, **k)

        trainer.training_step = crashing_step
    result = trainer.train(resume_from_checkpoint=options.resume)
    if trainer.state.is_main_process:
        tensors = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
        tensors["__processes__"] = torch.tensor([trainer.state.num_processes])
        tensors["__best_step__"] = torch.tensor([result.best_step])
        tensors["__sharded__"] = torch.tensor([int(trainer.sharded)])
        save_file(tensors, options.out_file)


if __name__ == "__main__":
    main()
