"""Export a delta adapter as a stock PEFT adapter: LoRA (exact or truncated SVD) or SHiRA (sparse, high rank).

PEFT 0.21's `PeftType` enum is closed (`register_peft_method` accepts only names already in it), so a delta adapter
cannot be registered as a PEFT type of its own; instead it is written in formats that the installed PEFT and
transformers' `load_adapter` read as they are:

- **LoRA, `rank="exact"`**: for a Linear weight ΔW (out × in), r = min(out, in) and one factor is the identity
  (B = I, A = ΔW or A = I, B = ΔW) with `lora_alpha = r`, so PEFT's merge `W + (B @ A)·1` gives W + ΔW bit for bit.
  Linear biases become LoRA biases (`lora_bias=True`); any other parameter (norms, embeddings) is saved as its whole
  module in `modules_to_save` (with the update added to the base weights, so it needs the base model).
- **LoRA, `rank=k` or `rank=0.99`**: truncated SVD per matrix, to rank k or to the smallest rank that keeps that
  fraction of the squared singular values; the relative error per parameter (and on sample logits) is reported.
- **`pure=True`**: A/B factors only, no biases and no `modules_to_save`, as serving engines such as vLLM require;
  what is left out is reported.
- **SHiRA**: the r·(m + n) largest-magnitude entries of each Linear ΔW with their indices: the same storage as a
  rank-r LoRA, but high rank.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors.torch import save_file
from torch import nn

from .._utils import empty_output_dir
from ..errors import AdapterExportError
from .base_model import describe_modules
from .patching import apply_delta, original_tensors

if TYPE_CHECKING:
    from .delta_adapter import DeltaAdapter

LINEAR_TYPES = frozenset({"Linear", "Conv1D", "NonDynamicallyQuantizableLinear"})
"""Module classes whose weight PEFT's LoRA / SHiRA can carry (GPT-2's Conv1D stores its weight transposed)."""
PEFT_PREFIX = "base_model.model."
REPORT_NAME = "export_report.json"
DEFAULT_SAMPLE_TEXTS = (
    "The committee met on Tuesday to discuss the budget for the next year.",
    "After the rain stopped, the children went outside to play in the park.",
    "She said that he would arrive at the station before noon.",
    "Water boils at a lower temperature at high altitude.",
)


@dataclass
class ExportReport:
    """What an export wrote and how close it is to the delta adapter's update."""

    format: Literal["lora", "shira"]
    path: str
    ranks: dict[str, int] = field(default_factory=dict)
    """LoRA: rank per target module; SHiRA: stored entries per target module."""
    relative_errors: dict[str, float] = field(default_factory=dict)
    """‖ΔW − exported ΔW‖_F / ‖ΔW‖_F per base parameter (0 for exact and for parameters stored whole)."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Parameters of the update that the export leaves out, with the reason."""
    modules_to_save: list[str] = field(default_factory=list)
    stored_values: int = 0
    """Numbers stored in the exported weights file (factors, sparse values, whole modules)."""
    total_relative_error: float = 0.0
    """The same error over the whole update."""
    logits_relative_error: float | None = None
    """‖logits(exported) − logits(exact)‖ / ‖logits(exact) − logits(base)‖ on sample texts: the share of the
    update's effect on the outputs that the export loses (needs `base_model` and `tokenizer`)."""
    logits_max_abs_error: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for a terminal."""
        worst = max(self.relative_errors.items(), key=lambda kv: kv[1], default=("-", 0.0))
        lines = [f"{self.format} export in {self.path}: {len(self.ranks)} target modules, "
                 f"{self.stored_values:,} stored values",
                 f"  relative error of the update: {self.total_relative_error:.3g} overall, worst {worst[1]:.3g} "
                 f"({worst[0]})"]
        if self.logits_relative_error is not None:
            lines.append(f"  logits: {self.logits_relative_error:.3g} of the update's effect lost, max |Δlogit| "
                         f"{self.logits_max_abs_error:.3g}")
        if self.modules_to_save:
            lines.append(f"  modules_to_save: {', '.join(self.modules_to_save)}")
        for name, why in list(self.dropped.items())[:5]:
            lines.append(f"  left out: {name} ({why})")
        return "\n".join(lines)


# -- shared steps ----------------------------------------------------------------------------------------------------
def _prepare(adapter: DeltaAdapter, save_directory: str | os.PathLike, base_model: nn.Module | None,
             overwrite: bool, **knobs: Any) -> tuple[Path, dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    folder = empty_output_dir(save_directory, overwrite=overwrite, what="PEFT export")
    if base_model is not None:
        adapter.check_base_model(base_model)
        modules = describe_modules(base_model, adapter.param_names)
    elif adapter.config.modules and all(n in adapter.config.modules for n in adapter.param_names):
        modules = adapter.config.modules
    else:
        raise AdapterExportError(
            "This adapter does not record which base modules own its parameters (it was made without the base "
            "model at hand); pass `base_model=` so the export knows Linear layers from other modules."
        )
    deltas = {name: tensor.float() for name, tensor in adapter.delta(**knobs).items()}
    return folder, deltas, modules


def _group_by_module(modules: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    grouped: dict[str, dict[str, Any]] = {}
    for name, info in modules.items():
        entry = grouped.setdefault(info["module"], {"type": info["type"], "bias": info["bias"], "params": {}})
        entry["params"][info["param"]] = name
    return grouped


def _modules_to_save(grouped: Mapping[str, dict[str, Any]], deltas: Mapping[str, torch.Tensor],
                     base_model: nn.Module | None, pure: bool, report: ExportReport,
                     reason_pure: str) -> tuple[list[str], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Whole modules for parameters that are not Linear weights/biases: base weights + update (or left out)."""
    names, tensors, approx = [], {}, {}
    for module, entry in grouped.items():
        if entry["type"] in LINEAR_TYPES:
            continue
        if pure:
            for param_name in entry["params"].values():
                report.dropped[param_name] = reason_pure
            continue
        if base_model is None:
            raise AdapterExportError(
                f"`{module}` ({entry['type']}) is not a Linear layer, so it is exported whole as a PEFT "
                f"`modules_to_save` module, which needs the base weights: pass `base_model=`, or `pure=True` to leave "
                f"such parameters out."
            )
        owner = dict(base_model.named_modules(remove_duplicate=False))[module]
        local_names = [leaf for leaf, _ in owner.named_parameters(recurse=False)]
        originals = original_tensors(base_model, [f"{module}.{leaf}" for leaf in local_names])
        for leaf, original in zip(local_names, originals):
            full = f"{module}.{leaf}"
            value = original.float() + deltas[full] if full in deltas else original.float()
            tensors[f"{PEFT_PREFIX}{full}"] = value.to(original.dtype).contiguous().cpu()
            if full in deltas:
                approx[full] = deltas[full]
                report.relative_errors[full] = 0.0
        names.append(module)
    report.modules_to_save = names
    return names, tensors, approx


def _logit_errors(base_model: nn.Module | None, tokenizer: Any, texts: Sequence[str] | None,
                  exact: Mapping[str, torch.Tensor], approx: Mapping[str, torch.Tensor],
                  report: ExportReport) -> None:
    if base_model is None or tokenizer is None:
        return
    texts = list(texts or DEFAULT_SAMPLE_TEXTS)
    device = next(base_model.parameters()).device
    zero_approx = {name: approx.get(name, torch.zeros_like(delta)) for name, delta in exact.items()}

    def logits() -> list[torch.Tensor]:
        with torch.no_grad():
            return [base_model(**tokenizer(t, return_tensors="pt").to(device)).logits.float().cpu() for t in texts]

    base_logits = logits()
    handle = apply_delta(base_model, exact)
    try:
        exact_logits = logits()
    finally:
        handle.remove()
    handle = apply_delta(base_model, zero_approx)
    try:
        export_logits = logits()
    finally:
        handle.remove()
    effect = math.sqrt(sum(float((e - b).double().pow(2).sum()) for e, b in zip(exact_logits, base_logits)))
    lost = math.sqrt(sum(float((x - e).double().pow(2).sum()) for x, e in zip(export_logits, exact_logits)))
    report.logits_relative_error = lost / effect if effect > 0 else 0.0
    report.logits_max_abs_error = max(float((x - e).abs().max()) for x, e in zip(export_logits, exact_logits))


def _relative(delta: torch.Tensor, approx: torch.Tensor) -> float:
    norm = float(delta.double().norm())
    return float((delta.double() - approx.double()).norm()) / norm if norm > 0 else 0.0


def _finish(folder: Path, report: ExportReport, tensors: Mapping[str, torch.Tensor], peft_config: Any,
            deltas: Mapping[str, torch.Tensor], approx: Mapping[str, torch.Tensor],
            adapter: DeltaAdapter) -> ExportReport:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(dict(tensors), str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    peft_config.save_pretrained(str(folder))
    report.stored_values = sum(t.numel() for t in tensors.values())
    total = math.sqrt(sum(float(d.double().pow(2).sum()) for d in deltas.values()))
    lost = math.sqrt(sum(float((d.double() - approx.get(n, torch.zeros_like(d)).double()).pow(2).sum())
                         for n, d in deltas.items()))
    report.total_relative_error = lost / total if total > 0 else 0.0
    (folder / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    from ..hub import render_export_card

    card = render_export_card(report.format, adapter.config, report, base_model_id=_base_id(adapter))
    (folder / "README.md").write_text(card, encoding="utf-8")
    return report


def _base_id(adapter: DeltaAdapter) -> str | None:
    from ..zoo import hub_id_for

    base = adapter.config.base_model_name_or_path
    return hub_id_for(base) or base


# -- LoRA --------------------------------------------------------------------------------------------------------------
def _factorise(delta: torch.Tensor, rank: str | int | float) -> tuple[torch.Tensor, torch.Tensor]:
    """B (out × r), A (r × in) with B @ A = ΔW (exact) or its best rank-r approximation."""
    out_features, in_features = delta.shape
    full = min(out_features, in_features)
    if rank == "exact":
        if out_features <= in_features:
            return torch.eye(out_features), delta.clone()
        return delta.clone(), torch.eye(in_features)
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    if isinstance(rank, float):
        energy = torch.cumsum(s.pow(2), 0)
        total = float(energy[-1])
        k = 1 if total == 0 else int(torch.searchsorted(energy, rank * total - 1e-12 * total).item()) + 1
    else:
        k = rank
    k = max(1, min(int(k), full))
    return (u[:, :k] * s[:k]).float().contiguous(), vh[:k].float().contiguous()


def _check_rank(rank: str | int | float) -> None:
    if rank == "exact":
        return
    if isinstance(rank, bool) or not isinstance(rank, int | float):
        raise AdapterExportError(f"`rank` must be 'exact', a positive int or an energy fraction in (0, 1], got "
                                 f"{rank!r}.")
    if isinstance(rank, int) and rank < 1:
        raise AdapterExportError(f"An integer `rank` must be at least 1, got {rank}.")
    if isinstance(rank, float) and not 0.0 < rank <= 1.0:
        raise AdapterExportError(f"An energy `rank` must be a fraction in (0, 1] (e.g. 0.99), got {rank}.")


def export_lora(adapter: DeltaAdapter, save_directory: str | os.PathLike, *, rank: str | int | float = "exact",
                pure: bool = False, base_model: nn.Module | None = None, tokenizer: Any = None,
                sample_texts: Sequence[str] | None = None, scale: float = 1.0,
                h: float | Sequence[float] | None = None, alpha: float | None = None,
                overwrite: bool = False) -> ExportReport:
    """Write `adapter`'s update (times `scale`; a dial decoded at `h`, `alpha`) as a stock PEFT LoRA adapter.

    The folder loads with `peft.PeftModel.from_pretrained(base, folder)` and transformers'
    `base.load_adapter(folder)`, with no gradiend_hf installed.

    Args:
        adapter: the delta adapter.
        save_directory: a new (or empty) folder; an existing non-empty one needs `overwrite=True`.
        rank: `"exact"` (bit-exact merge), an int (truncated SVD to that rank) or a float in (0, 1] (the smallest
            rank per matrix that keeps that fraction of the squared singular values).
        pure: A/B factors only (no LoRA biases, no `modules_to_save`), for serving engines.
        base_model: the base model; needed for `modules_to_save` and the logits check, and to learn module types
            when the adapter does not record them.
        tokenizer: with `base_model`, the relative error on the logits of `sample_texts` is reported.
        sample_texts: texts for that check (default: four neutral sentences).
        scale, h, alpha: which update to export (see `DeltaAdapter.delta`).
        overwrite: replace an existing non-empty folder.

    Returns:
        An `ExportReport` (also written as `export_report.json`).

    Raises:
        AdapterExportError: a bad rank, no module information, or LoRA biases on modules without a base bias.
    """
    from peft import LoraConfig

    _check_rank(rank)
    folder, deltas, modules = _prepare(adapter, save_directory, base_model, overwrite, scale=scale, h=h,
                                       alpha=alpha)
    grouped = _group_by_module(modules)
    report = ExportReport(format="lora", path=str(folder))
    _, tensors, approx = _modules_to_save(grouped, deltas, base_model, pure, report,
                                          "pure=True: not a Linear weight")
    targets = {m: e for m, e in grouped.items() if e["type"] in LINEAR_TYPES}
    bias_deltas = {m: e["params"]["bias"] for m, e in targets.items() if "bias" in e["params"]}
    lora_bias = bool(bias_deltas) and not pure
    if lora_bias and not all(e["bias"] for e in targets.values()):
        without = sorted(m for m, e in targets.items() if not e["bias"])
        raise AdapterExportError(
            f"The update changes Linear biases, which LoRA stores as `lora_bias` on every target module, but "
            f"{without[:3]} have no bias in the base model, so PEFT could not merge them. Export with `pure=True` "
            f"(biases left out) or select parameters without biases."
        )
    ranks, alphas, conv1d = {}, {}, False
    for module, entry in targets.items():
        is_conv1d = entry["type"] == "Conv1D"
        conv1d |= is_conv1d
        weight_name = entry["params"].get("weight")
        if weight_name is not None:
            delta = deltas[weight_name]
            matrix = delta.T if is_conv1d else delta  # PEFT computes (B @ A).T for fan_in_fan_out layers
            if matrix.dim() != 2:
                raise AdapterExportError(f"`{weight_name}` has shape {list(delta.shape)}; LoRA needs a matrix.")
            factor_b, factor_a = _factorise(matrix, rank)
            product = factor_b @ factor_a
            approx[weight_name] = product.T if is_conv1d else product
            report.relative_errors[weight_name] = _relative(delta, approx[weight_name])
        else:  # only the bias changes: a zero rank-1 pair carries the LoRA bias
            out_features = deltas[entry["params"]["bias"]].shape[0]
            in_features = _in_features(base_model, module)
            factor_b, factor_a = torch.zeros(out_features, 1), torch.zeros(1, in_features)
        r = factor_a.shape[0]
        ranks[module], alphas[module] = r, r  # lora_alpha = r: scaling 1, so the exact factors merge exactly
        tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = factor_a.contiguous()
        tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = factor_b.contiguous()
        if module in bias_deltas:
            bias_name = bias_deltas[module]
            if pure:
                report.dropped[bias_name] = "pure=True: LoRA bias left out"
            else:
                tensors[f"{PEFT_PREFIX}{module}.lora_B.bias"] = deltas[bias_name].contiguous()
                approx[bias_name] = deltas[bias_name]
                report.relative_errors[bias_name] = 0.0
        elif lora_bias:
            tensors[f"{PEFT_PREFIX}{module}.lora_B.bias"] = torch.zeros(factor_b.shape[0])
    report.ranks = ranks
    if not targets and not report.modules_to_save:
        raise AdapterExportError("Nothing to export: the update has no Linear weight and pure=True leaves out the "
                                 "rest.")
    default_rank = max(ranks.values(), default=8)
    config = LoraConfig(
        r=default_rank, lora_alpha=default_rank, target_modules=sorted(targets) or None,
        rank_pattern={m: r for m, r in ranks.items() if r != default_rank},
        alpha_pattern={m: a for m, a in alphas.items() if a != default_rank},
        lora_dropout=0.0, bias="none", lora_bias=lora_bias, fan_in_fan_out=conv1d,
        modules_to_save=report.modules_to_save or None, inference_mode=True,
        base_model_name_or_path=_base_id(adapter), revision=adapter.config.base_model_revision,
    )
    _logit_errors(base_model, tokenizer, sample_texts, deltas, approx, report)
    return _finish(folder, report, tensors, config, deltas, approx, adapter)


def _in_features(base_model: nn.Module | None, module: str) -> int:
    if base_model is None:
        raise AdapterExportError(f"`{module}` changes only its bias; pass `base_model=` so its input size is known.")
    layer = dict(base_model.named_modules(remove_duplicate=False))[module]
    weight = layer.weight
    return weight.shape[0] if type(layer).__name__ == "Conv1D" else weight.shape[1]


# -- SHiRA -------------------------------------------------------------------------------------------------------------
def export_shira(adapter: DeltaAdapter, save_directory: str | os.PathLike, *, r: int = 32, pure: bool = False,
                 base_model: nn.Module | None = None, tokenizer: Any = None,
                 sample_texts: Sequence[str] | None = None, scale: float = 1.0,
                 h: float | Sequence[float] | None = None, alpha: float | None = None,
                 overwrite: bool = False) -> ExportReport:
    """Write `adapter`'s update as a stock PEFT SHiRA adapter: per Linear weight (m × n) the r·(m + n) entries of
    largest magnitude and their indices (as many numbers as a rank-r LoRA, but high rank).

    Linear biases cannot be carried by SHiRA and are left out (reported); other parameters go to
    `modules_to_save` unless `pure=True`. Loads with `peft.PeftModel.from_pretrained(base, folder)`.

    Raises:
        AdapterExportError: `r` not positive, r·(m + n) larger than a matrix, or a GPT-2 Conv1D layer (PEFT's SHiRA
            supports `nn.Linear` only).
    """
    from peft import ShiraConfig

    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise AdapterExportError(f"`r` must be a positive integer, got {r!r}.")
    folder, deltas, modules = _prepare(adapter, save_directory, base_model, overwrite, scale=scale, h=h,
                                       alpha=alpha)
    grouped = _group_by_module(modules)
    report = ExportReport(format="shira", path=str(folder))
    _, tensors, approx = _modules_to_save(grouped, deltas, base_model, pure, report,
                                          "pure=True: not a Linear weight")
    targets = []
    for module, entry in grouped.items():
        if entry["type"] not in LINEAR_TYPES:
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
        indices = torch.stack([kept // cols, kept % cols]).to(torch.int32)
        values = flat[kept].contiguous()
        tensors[f"{PEFT_PREFIX}{module}.shira_weight"] = values
        tensors[f"{PEFT_PREFIX}{module}.shira_indices"] = indices.contiguous()
        sparse = torch.zeros_like(flat)
        sparse[kept] = values
        approx[weight_name] = sparse.reshape(delta.shape)
        report.relative_errors[weight_name] = _relative(delta, approx[weight_name])
        report.ranks[module] = k
        targets.append(module)
    if not targets:
        raise AdapterExportError("Nothing to export as SHiRA: the update changes no Linear weight.")
    config = ShiraConfig(r=r, target_modules=sorted(targets), modules_to_save=report.modules_to_save or None,
                         inference_mode=True, base_model_name_or_path=_base_id(adapter),
                         revision=adapter.config.base_model_revision)
    _logit_errors(base_model, tokenizer, sample_texts, deltas, approx, report)
    return _finish(folder, report, tensors, config, deltas, approx, adapter)


__all__ = ["DEFAULT_SAMPLE_TEXTS", "LINEAR_TYPES", "ExportReport", "export_lora", "export_shira"]
