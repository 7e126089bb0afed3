"""Bytes the base model saves for backward in one engine pass: the most gradient checkpointing could save.

Counts the storages that autograd saves during `GradientEngine.gradients` for one training batch (8 texts of one
class), parameters excluded (they are held anyway), for the demo's selection and the paper's.

    python benchmarks/activation_memory.py            # Gemma 3 270M, about a minute
"""

from __future__ import annotations

import argparse

import torch

import gradiend_hf as gh
from gradiend_hf.training import GradiendTrainer


def saved_for_backward(trainer: GradiendTrainer, batch: list, parameters: set[int]) -> tuple[int, list]:
    seen: set[tuple[int, torch.dtype]] = set()
    sizes: list[tuple[int, tuple[int, ...]]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = (tensor.untyped_storage().data_ptr(), tensor.dtype)
        if key not in seen and key[0] not in parameters:
            seen.add(key)
            sizes.append((tensor.untyped_storage().nbytes(), tuple(tensor.shape)))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        trainer.engine.gradients(batch)
    return sum(size for size, _ in sizes), sorted(sizes)[-3:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma-3-270m")
    args = parser.parse_args()
    base, tokenizer = gh.load_base_model(args.model)
    feature = gh.features.gender()
    parameters = {p.untyped_storage().data_ptr() for p in base.parameters()}
    for params in (["model.layers.*.mlp.down_proj.weight"], "paper"):
        model = gh.GradiendModel.for_base_model(base, params=params, feature=feature)
        trainer = GradiendTrainer(model, base, tokenizer, feature, gh.TrainingArguments(progress_bar=False))
        batch = trainer.batch_for_step(0, 1)[1]
        total, largest = saved_for_backward(trainer, batch, parameters)
        print(f"{params}: n = {model.config.num_selected:,}; saved for backward {total / 2**20:.1f} MiB "
              f"(largest: {largest})")


if __name__ == "__main__":
    main()
