"""How much memory one training process needs: a model of the step, to size a run before starting it.

A training step holds, per process: the base model; the gradients of the selected parameters for the process's share
of the batch (∇+, ∇− and ∇± in fp32 at the peak, whole on every process: each process differentiates its own texts);
the GRADIEND's 3n weights and AdamW's 6n moments, split across the processes with FSDP (else whole in each); and,
one selected tensor at a time, its GRADIEND gradient and residual. The base model's activations and the allocator's
working memory are not modelled (`activations_gib`: on Gemma 3 270M at batch 8 on a CPU the base passes alone add
≈ 1.4 GiB of RSS, 0.17 GiB of it activations saved for backward); `overhead_gib` covers the framework (CUDA context,
or Python with torch and transformers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_GIB = 1024 ** 3


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-process bytes of a GRADIEND training step, by part (`total` is their sum)."""

    base_model: int
    base_gradients: int
    gradiend_weights: int
    optimizer_state: int
    step_buffers: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return (self.base_model + self.base_gradients + self.gradiend_weights + self.optimizer_state
                + self.step_buffers + self.activations + self.overhead)

    def gib(self) -> dict[str, float]:
        parts = {k: v / _GIB for k, v in self.__dict__.items()}
        return {**parts, "total": self.total / _GIB}


def training_memory(n: int, *, base_parameters: int, processes: int = 1, fsdp: bool = True,
                    weight_dtype: str = "float32", base_dtype: str = "bfloat16", largest_tensor: int | None = None,
                    source: str = "factual", activations_gib: float = 0.0,
                    overhead_gib: float = 0.5) -> MemoryEstimate:
    """Estimated peak memory of one training process.

    Args:
        n: number of selected base weights (the GRADIEND has 3n weights; AdamW keeps 6n moments in their dtype).
        base_parameters: parameters of the base model (it is held whole by every process).
        processes: number of processes (devices).
        fsdp: split the GRADIEND and its optimiser state across the processes (`TrainingArguments(fsdp=True)`).
        weight_dtype: dtype of the GRADIEND weights (`for_base_model(..., dtype=...)`); the moments follow it.
        base_dtype: dtype of the base model's weights.
        largest_tensor: size of the largest selected tensor (default: n, the worst case).
        source: the encoder's input; with `"diff"` only ∇± is formed (one n-long fp32 tensor instead of three).
        activations_gib: the base passes' activations and working memory, if measured (not modelled).
        overhead_gib: framework memory (CUDA context, Python and its libraries).
    """
    if n < 1 or base_parameters < 0 or processes < 1:
        raise ValueError(f"n >= 1, base_parameters >= 0 and processes >= 1 are needed; got n={n}, "
                         f"base_parameters={base_parameters}, processes={processes}.")
    for name, dtype in (("weight_dtype", weight_dtype), ("base_dtype", base_dtype)):
        if dtype not in _BYTES:
            raise ValueError(f"`{name}` must be one of {sorted(_BYTES)}, got {dtype!r}.")
    split = processes if fsdp else 1
    w = _BYTES[weight_dtype]
    largest = math.ceil((largest_tensor or n) / split)
    return MemoryEstimate(
        base_model=base_parameters * _BYTES[base_dtype],
        base_gradients=(1 if source == "diff" else 3) * 4 * n,
        gradiend_weights=math.ceil(3 * n / split) * w,
        optimizer_state=math.ceil(6 * n / split) * w,
        step_buffers=2 * 4 * largest,  # one tensor's gradient and its fp32 residual at a time
        activations=int(activations_gib * _GIB),
        overhead=int(overhead_gib * _GIB),
    )


def devices_needed(n: int, *, base_parameters: int, device_gib: float = 80.0, max_devices: int = 1024,
                   **options) -> int | None:
    """The fewest processes (one per device) whose per-process estimate fits `device_gib`; None if none does."""
    for processes in range(1, max_devices + 1):
        if training_memory(n, base_parameters=base_parameters, processes=processes, **options).total <= \
                device_gib * _GIB:
            return processes
        if not options.get("fsdp", True):
            return None  # without FSDP more devices do not lower the per-device memory
    return None


__all__ = ["MemoryEstimate", "devices_needed", "training_memory"]
