"""Export a delta adapter as a stock PEFT SHiRA adapter: the largest entries of each Linear update, high rank.

SHiRA keeps r·(m + n) entries of an m × n update with their indices — the storage of a rank-r LoRA, but without the
rank limit, which suits GRADIEND's updates (their spectrum is flat). Preparation, tied-embedding handling, the
staged write and the check against `PeftModel.from_pretrained` are shared with the LoRA export (`peft_export`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import AdapterExportError
from .peft_check import PEFT_PREFIX
from .peft_export import (
    LINEAR_TYPES,
    ExportableDelta,
    ExportReport,
    _base_id,
    _finish,
    _group_by_module,
    _modules_to_save,
    _prepare,
)

SHIRA_LOAD_ADAPTER_NOTE = (
    "transformers' `load_adapter` does not load SHiRA's `shira_indices` (they are not a registered buffer), so it "
    "scatters the values to the wrong entries: load this export with `peft.PeftModel.from_pretrained`."
)


def export_shira(adapter: ExportableDelta, save_directory: str | os.PathLike, *, r: int = 32, pure: bool = False,
                 base_model: nn.Module | None = None, tokenizer: Any = None,
                 sample_texts: Sequence[str] | None = None, scale: float = 1.0,
                 h: float | Sequence[float] | None = None, alpha: float | None = None,
                 overwrite: bool = False) -> ExportReport:
    """Write `adapter`'s update as a stock PEFT SHiRA adapter: per Linear weight (m × n) the r·(m + n) entries of
    largest magnitude and their indices (as many numbers as a rank-r LoRA, but high rank).

    Linear biases cannot be carried by SHiRA and are left out (reported); other parameters go to
    `modules_to_save` unless `pure=True`, a tied embedding together with its LM head. Loads with
    `peft.PeftModel.from_pretrained(base, folder)` (not with transformers' `load_adapter`, which drops SHiRA's
    indices; the report notes it).

    Raises:
        AdapterExportError: `r` not positive, r·(m + n) larger than a matrix, a GPT-2 Conv1D layer (PEFT's SHiRA
            supports `nn.Linear` only), or a tensor shared in a way PEFT cannot tie.
    """
    from peft import ShiraConfig

    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise AdapterExportError(f"`r` must be a positive integer, got {r!r}.")
    plan = _prepare(adapter, save_directory, base_model, overwrite, scale=scale, h=h, alpha=alpha)
    deltas, grouped = plan.deltas, _group_by_module(plan.modules)
    report = ExportReport(format="shira", path=str(plan.folder), notes=[SHIRA_LOAD_ADAPTER_NOTE])
    _, tensors = _modules_to_save(grouped, deltas, base_model, pure, report, "pure=True: not a Linear weight",
                                  plan.tied)
    targets = []
    for module, entry in grouped.items():
        if entry["type"] not in LINEAR_TYPES or module in plan.tied:
            continue
        if entry["type"] == "Conv1D":
            raise AdapterExportError(f"`{module}` is a GPT-2 Conv1D layer; PEFT's SHiRA supports nn.Linear only. "
                                     f"Use export_lora instead.")
        if "bias" in entry["params"]:
            report.dropped[entry["params"]["bias"]] = "SHiRA stores no biases"
        weight_name = entry["params"].get("weight")
        if weight_name is None:
            continue
        delta = deltas[weight_name]
        rows, cols = delta.shape
        k = r * (rows + cols)
        if k > rows * cols:
            raise AdapterExportError(
                f"r={r} keeps r·(m + n) = {k} entries of `{weight_name}` ({rows} × {cols} = {rows * cols}); choose "
                f"r ≤ {rows * cols // (rows + cols)}."
            )
        flat = delta.reshape(-1)
        kept = torch.topk(flat.abs(), k).indices.sort().values
        tensors[f"{PEFT_PREFIX}{module}.shira_weight"] = flat[kept].contiguous()
        tensors[f"{PEFT_PREFIX}{module}.shira_indices"] = torch.stack([kept // cols, kept % cols]).to(torch.int32)
        report.ranks[module] = k
        targets.append(module)
    if not targets:
        raise AdapterExportError("Nothing to export as SHiRA: the update changes no Linear weight.")
    heads = sorted({head for module in report.tied for head in plan.tied[module]})
    config = ShiraConfig(r=r, target_modules=sorted(targets),
                         modules_to_save=[*report.modules_to_save, *heads] or None, inference_mode=True,
                         base_model_name_or_path=_base_id(adapter), revision=adapter.config.base_model_revision)
    report.modules_to_save = [*report.modules_to_save, *heads]
    return _finish(plan, report, tensors, config, adapter, base_model, tokenizer, sample_texts)


__all__ = ["SHIRA_LOAD_ADAPTER_NOTE", "export_shira"]
