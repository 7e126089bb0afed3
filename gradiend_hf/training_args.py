"""`TrainingArguments`: the settings of a GRADIEND training run, checked when they are made."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from .errors import TrainingError


@dataclass
class TrainingArguments:
    """Settings of a GRADIEND training run (defaults from the paper where it gives them).

    Args:
        output_dir: where the final model, the log, the curve and the checkpoints go (`None`: keep in memory only).
        max_steps: GRADIEND optimisation steps per seed.
        batch_size: texts per step (global, across processes), all of one class.
        learning_rate: AdamW learning rate (paper: 1e-5).
        weight_decay: AdamW weight decay (paper: 1e-2).
        eval_steps: validate (Pearson r of h vs class) every this many steps, and after the last step.
        eval_max_examples: validate on at most this many validation texts (balanced by class; `None`: all).
        eval_batch_size: texts encoded at once during validation.
        save_steps: write `checkpoint-last` every this many steps (default: `eval_steps`).
        seed: first seed; seeds `seed, seed+1, ...` are trained when `num_seeds > 1` and the best is kept.
        num_seeds: number of seeds (the paper selects the best of several).
        early_stopping_patience: stop a seed after this many validations without a better |r| (`None`: never).
        mixed_precision: `"no"`, `"bf16"` or `"fp16"` autocast for the base model's forward pass (GPUs).
        max_length: longest input in tokens.
        use_cpu: train on the CPU even when an accelerator is available (automatic for `torchrun` without GPUs,
            where processes talk over gloo).
        fsdp: with several processes (torchrun), split the GRADIEND's weights and AdamW's moments across them
            with FSDP2 instead of keeping a whole copy in each (results equal to float round-off).
        overwrite_output_dir: allow training into a non-empty `output_dir` (its files are replaced).
        progress_bar: show a tqdm progress bar.
    """

    output_dir: str | None = None
    max_steps: int = 300
    batch_size: int = 8
    learning_rate: float = 1e-5
    weight_decay: float = 1e-2
    eval_steps: int = 25
    eval_max_examples: int | None = 256
    eval_batch_size: int = 16
    save_steps: int | None = None
    seed: int = 0
    num_seeds: int = 1
    early_stopping_patience: int | None = None
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    max_length: int = 256
    use_cpu: bool = False
    fsdp: bool = False
    overwrite_output_dir: bool = False
    progress_bar: bool = True

    def __post_init__(self):
        positive = ["max_steps", "batch_size", "eval_steps", "eval_batch_size", "num_seeds", "max_length"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TrainingError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.save_steps is None:
            self.save_steps = self.eval_steps
        if self.learning_rate <= 0:
            raise TrainingError(f"`learning_rate` must be positive, got {self.learning_rate}.")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise TrainingError(f"`mixed_precision` must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}.")

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_seeds)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


__all__ = ["TrainingArguments"]
