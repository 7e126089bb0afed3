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
- **SHiRA** (`shira_export`, built on this module's preparation and check): the r·(m + n) largest-magnitude
  entries of each Linear ΔW with their indices: the same storage as a rank-r LoRA, but high rank.
- **Tied embeddings** (Gemma ties its LM head to `model.embed_tokens`): an update of the shared tensor changes the
  input embedding *and* the head. LoRA exports use PEFT 0.21's weight tying (`ensure_weight_tying=True`, the head
  saved next to the embedding, as PEFT itself saves it); SHiRA exports save the head as a `modules_to_save` module
  of its own. A tensor shared in any other way has no exact PEFT form, and the export refuses it.

Every export is written to a staging folder and, when a base model is given, loaded from there with
`PeftModel.from_pretrained` and compared with the delta adapter applied exactly: the report's logit error is what
PEFT does with the written files, and an `"exact"` export that PEFT does not reproduce is refused (the folder is
left as it was). The weight errors are computed from the tensors read back from the written file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from safetensors.torch import load_file
from torch import nn

from ..errors import AdapterExportError
from .base_model import describe_modules, named_parameters_with_aliases
from .configuration import DeltaAdapterConfig
from .patching import original_tensors
from .peft_check import DEFAULT_SAMPLE_TEXTS, PEFT_PREFIX, PEFT_WEIGHTS_NAME, check_export_logits


class ExportableDelta(Protocol):
    """What an export reads of a `DeltaAdapter` (a protocol, so this module does not import the adapter class that
    calls it)."""

    config: DeltaAdapterConfig

    @property
    def param_names(self) -> list[str]: ...

    def delta(self, *, h: float | Sequence[float] | None = None, alpha: float | None = None,
              scale: float = 1.0) -> dict[str, torch.Tensor]: ...

    def check_base_model(self, base_model: nn.Module) -> dict[str, nn.Parameter]: ...

LINEAR_TYPES = frozenset({"Linear", "Conv1D", "NonDynamicallyQuantizableLinear"})
"""Module classes whose weight PEFT's LoRA / SHiRA can carry (GPT-2's Conv1D stores its weight transposed)."""
REPORT_NAME = "export_report.json"
VERIFIED_WITH = "peft.PeftModel.from_pretrained on the written folder"


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
    """‖logits(PEFT-loaded export) − logits(delta applied)‖ / ‖logits(delta applied) − logits(base)‖: the share of
    the update's effect on the outputs that the export loses, measured by loading the written folder with PEFT
    (needs `base_model`; sample texts with `tokenizer`, else random token ids)."""
    logits_max_abs_error: float | None = None
    logits_inputs: str | None = None
    """What the logits were computed on."""
    verified_with: str | None = None
    """How the logit numbers were obtained; `None` when the export was not loaded (no `base_model`)."""
    tied: dict[str, list[str]] = field(default_factory=dict)
    """Tied parameters the export carries, with the modules that share them (e.g. the LM head)."""
    notes: list[str] = field(default_factory=list)
    """Known limits of the written format (e.g. loaders that cannot read it)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for a terminal."""
        worst = max(self.relative_errors.items(), key=lambda kv: kv[1], default=("-", 0.0))
        lines = [f"{self.format} export in {self.path}: {len(self.ranks)} target modules, "
                 f"{self.stored_values:,} stored values",
                 f"  relative error of the update: {self.total_relative_error:.3g} overall, worst {worst[1]:.3g} "
                 f"({worst[0]})"]
        if self.verified_with is not None:
            lines.append(f"  logits, loaded with PEFT: {self.logits_relative_error:.3g} of the update's effect lost, "
                         f"max |Δlogit| {self.logits_max_abs_error:.3g} ({self.logits_inputs})")
        else:
            lines.append("  logits: not checked by loading the export (pass base_model= to load it with PEFT)")
        for module, heads in self.tied.items():
            lines.append(f"  tied: {module} is shared with {', '.join(heads)} (exported for both)")
        if self.modules_to_save:
            lines.append(f"  modules_to_save: {', '.join(self.modules_to_save)}")
        for name, why in list(self.dropped.items())[:5]:
            lines.append(f"  left out: {name} ({why})")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


# -- shared steps ----------------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    folder: Path
    deltas: dict[str, torch.Tensor]
    """The update per canonical parameter name (a tied tensor under its input-embedding name)."""
    modules: dict[str, dict[str, Any]]
    tied: dict[str, list[str]]
    """Canonical embedding module -> the other modules (LM heads) that share its weight."""


def _prepare(adapter: ExportableDelta, save_directory: str | os.PathLike, base_model: nn.Module | None,
             overwrite: bool, **knobs: Any) -> _Plan:
    from ..atomic_io import check_output_dir

    folder = check_output_dir(save_directory, overwrite=overwrite, what="PEFT export")
    deltas = {name: tensor.float() for name, tensor in adapter.delta(**knobs).items()}
    if base_model is not None:
        adapter.check_base_model(base_model)
        deltas, tied = _canonical_tied(base_model, deltas)
        return _Plan(folder, deltas, describe_modules(base_model, list(deltas)), tied)
    modules = adapter.config.modules
    if not modules or not all(n in modules for n in adapter.param_names):
        raise AdapterExportError(
            "This adapter does not record which base modules own its parameters (it was made without the base "
            "model at hand); pass `base_model=` so the export knows Linear layers from other modules."
        )
    shared = [n for n in adapter.param_names if modules[n].get("tied")]
    if shared:
        raise AdapterExportError(
            f"`{shared[0]}` is tied to {modules[shared[0]]['tied']} in the base model, so its export must carry both "
            f"sides of the tie; pass `base_model=`."
        )
    return _Plan(folder, deltas, modules, {})


def _canonical_tied(base_model: nn.Module, deltas: Mapping[str, torch.Tensor]
                    ) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Name every tied tensor by its input-embedding name (summing updates given under two names), and list the
    modules that share it; a tensor shared other than embedding ↔ head is refused (PEFT 0.21 cannot tie it)."""
    params = named_parameters_with_aliases(base_model)
    embedding = base_model.get_input_embeddings()
    embedding_names = [n for n, p in params.items() if p is getattr(embedding, "weight", None)]
    out: dict[str, torch.Tensor] = {}
    tied: dict[str, list[str]] = {}
    for name, delta in deltas.items():
        aliases = [n for n, p in params.items() if p is params[name]]
        if len(aliases) == 1:
            out[name] = out[name] + delta if name in out else delta
            continue
        if not embedding_names or embedding_names[0] not in aliases:
            raise AdapterExportError(
                f"`{name}` is one tensor shared by {aliases}; PEFT 0.21 ties only the input embedding to the LM head, "
                f"so no exact PEFT export of an update to this tensor exists (export with pure=True to leave it out)."
            )
        canonical = embedding_names[0]
        out[canonical] = out[canonical] + delta if canonical in out else delta
        tied[canonical.rpartition(".")[0]] = sorted(a.rpartition(".")[0] for a in aliases if a != canonical)
    return out, tied


def _group_by_module(modules: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    grouped: dict[str, dict[str, Any]] = {}
    for name, info in modules.items():
        entry = grouped.setdefault(info["module"], {"type": info["type"], "bias": info["bias"], "params": {}})
        entry["params"][info["param"]] = name
    return grouped


def _modules_to_save(grouped: Mapping[str, dict[str, Any]], deltas: Mapping[str, torch.Tensor],
                     base_model: nn.Module | None, pure: bool, report: ExportReport, reason_pure: str,
                     tied: Mapping[str, list[str]]) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Whole modules for parameters that are not Linear weights/biases (and tied embeddings, with the heads that
    share them): base weights + update, or left out with `pure`."""
    names, tensors = [], {}
    for module, entry in grouped.items():
        if entry["type"] in LINEAR_TYPES and module not in tied:
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
            for head in tied.get(module, []) if leaf == "weight" else []:  # the LM head sharing this weight
                tensors[f"{PEFT_PREFIX}{head}.weight"] = tensors[f"{PEFT_PREFIX}{full}"].clone()
        names.append(module)
    report.modules_to_save = names
    report.tied = {m: list(heads) for m, heads in tied.items() if m in names}
    return names, tensors


def _relative(delta: torch.Tensor, approx: torch.Tensor) -> float:
    norm = float(delta.double().norm())
    return float((delta.double() - approx.double()).norm()) / norm if norm > 0 else 0.0


def _read_back(path: Path, plan: _Plan, base_model: nn.Module | None) -> dict[str, torch.Tensor]:
    """The update each parameter gets from the written file, as PEFT computes it (scaling is 1 throughout)."""
    stored = load_file(str(path))
    out: dict[str, torch.Tensor] = {}
    for name in plan.deltas:
        info = plan.modules[name]
        module, leaf = info["module"], info["param"]
        key = f"{PEFT_PREFIX}{module}"
        if f"{key}.{leaf}" in stored:  # modules_to_save: the whole new weight, against what the adapter writes
            original = original_tensors(base_model, [name])[0] if base_model is not None else None
            if original is not None:
                applied = (original.float() + plan.deltas[name]).to(original.dtype)
                out[name] = plan.deltas[name] + (stored[f"{key}.{leaf}"].float() - applied.float())
        elif leaf == "bias" and f"{key}.lora_B.bias" in stored:
            out[name] = stored[f"{key}.lora_B.bias"].float()
        elif f"{key}.lora_A.weight" in stored:
            product = stored[f"{key}.lora_B.weight"].float() @ stored[f"{key}.lora_A.weight"].float()
            out[name] = product.T if info["type"] == "Conv1D" else product
        elif f"{key}.shira_weight" in stored:
            rows, cols = plan.deltas[name].shape
            dense = torch.zeros(rows, cols)
            indices = stored[f"{key}.shira_indices"].long()
            dense[indices[0], indices[1]] = stored[f"{key}.shira_weight"].float()
            out[name] = dense
    return out


def _finish(plan: _Plan, report: ExportReport, tensors: Mapping[str, torch.Tensor], peft_config: Any,
            adapter: ExportableDelta, base_model: nn.Module | None, tokenizer: Any,
            sample_texts: Sequence[str] | None) -> ExportReport:
    """Stage the files, read them back, load them with PEFT, and swap the folder in only if all that holds: files
    that carry the update exactly (read-back error ≤ 1e-6, nothing left out) must give PEFT the same logits."""
    from ..atomic_io import atomic_folder, atomic_save_tensors, atomic_write_text
    from ..hub import render_export_card

    report.path = str(plan.folder)
    with atomic_folder(plan.folder, what="PEFT export", replace=True) as staging:
        atomic_save_tensors(dict(tensors), staging / PEFT_WEIGHTS_NAME, metadata={"format": "pt"})
        peft_config.save_pretrained(str(staging))
        report.stored_values = sum(t.numel() for t in tensors.values())
        approx = _read_back(staging / PEFT_WEIGHTS_NAME, plan, base_model)
        report.relative_errors = {n: _relative(d, approx.get(n, torch.zeros_like(d))) for n, d in plan.deltas.items()
                                  if n not in report.dropped}
        total = math.sqrt(sum(float(d.double().pow(2).sum()) for d in plan.deltas.values()))
        lost = math.sqrt(sum(float((d.double() - approx.get(n, torch.zeros_like(d)).double()).pow(2).sum())
                             for n, d in plan.deltas.items()))
        report.total_relative_error = lost / total if total > 0 else 0.0
        if base_model is not None:
            check = check_export_logits(base_model, staging, plan.deltas, tokenizer=tokenizer, texts=sample_texts)
            report.logits_relative_error, report.logits_max_abs_error = check.relative_error, check.max_abs_error
            report.logits_inputs, report.verified_with = check.inputs, VERIFIED_WITH
            carried_exactly = report.total_relative_error <= 1e-6 and not report.dropped
            if carried_exactly and not check.exact:
                raise AdapterExportError(
                    f"PEFT does not reproduce this update exactly: loaded from the written files, its logits differ "
                    f"from the delta adapter's by {check.lost:.3g} (allowed {check.tolerance:.3g}), so the exact "
                    f"export is refused and nothing was written to `{plan.folder}`."
                )
        atomic_write_text(staging / REPORT_NAME, json.dumps(report.to_dict(), indent=2) + "\n")
        card = render_export_card(report.format, adapter.config, report, base_model_id=_base_id(adapter))
        atomic_write_text(staging / "README.md", card)
    return report


def _base_id(adapter: ExportableDelta) -> str | None:
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


def export_lora(adapter: ExportableDelta, save_directory: str | os.PathLike, *, rank: str | int | float = "exact",
                pure: bool = False, base_model: nn.Module | None = None, tokenizer: Any = None,
                sample_texts: Sequence[str] | None = None, scale: float = 1.0,
                h: float | Sequence[float] | None = None, alpha: float | None = None,
                overwrite: bool = False) -> ExportReport:
    """Write `adapter`'s update (times `scale`; a dial decoded at `h`, `alpha`) as a stock PEFT LoRA adapter.

    The folder loads with `peft.PeftModel.from_pretrained(base, folder)` and transformers'
    `base.load_adapter(folder)`, with no gradiend_hf installed. With `base_model`, the written folder is loaded
    with PEFT before it is moved into place, and the report's logit error is that of the loaded export.

    Args:
        adapter: the delta adapter.
        save_directory: a new (or empty) folder; an existing non-empty one needs `overwrite=True`.
        rank: `"exact"` (bit-exact merge), an int (truncated SVD to that rank) or a float in (0, 1] (the smallest
            rank per matrix that keeps that fraction of the squared singular values).
        pure: A/B factors only (no LoRA biases, no `modules_to_save`), for serving engines.
        base_model: the base model; needed for `modules_to_save`, tied embeddings and the logits check, and to
            learn module types when the adapter does not record them.
        tokenizer: with `base_model`, the logits are compared on `sample_texts` (else on random token ids).
        sample_texts: texts for that check (default: four neutral sentences).
        scale, h, alpha: which update to export (see `DeltaAdapter.delta`).
        overwrite: replace an existing folder that holds only gradiend_hf's outputs.

    Returns:
        An `ExportReport` (also written as `export_report.json`).

    Raises:
        AdapterExportError: a bad rank, no module information, LoRA biases on modules without a base bias, a tensor
            shared in a way PEFT cannot tie, or an export whose files carry the update exactly but which PEFT does
            not reproduce.
    """
    from peft import LoraConfig

    _check_rank(rank)
    plan = _prepare(adapter, save_directory, base_model, overwrite, scale=scale, h=h, alpha=alpha)
    deltas, grouped = plan.deltas, _group_by_module(plan.modules)
    report = ExportReport(format="lora", path=str(plan.folder))
    _, tensors = _modules_to_save(grouped, deltas, base_model, pure, report, "pure=True: not a Linear weight",
                                  plan.tied)
    targets = {m: e for m, e in grouped.items() if e["type"] in LINEAR_TYPES and m not in plan.tied}
    bias_deltas = {m: e["params"]["bias"] for m, e in targets.items() if "bias" in e["params"]}
    lora_bias = bool(bias_deltas) and not pure
    if lora_bias and not all(e["bias"] for e in targets.values()):
        without = sorted(m for m, e in targets.items() if not e["bias"])
        raise AdapterExportError(
            f"The update changes Linear biases, which LoRA stores as `lora_bias` on every target module, but "
            f"{without[:3]} have no bias in the base model, so PEFT could not merge them. Export with `pure=True` "
            f"(biases left out) or select parameters without biases."
        )
    if not targets and not report.modules_to_save:
        raise AdapterExportError("Nothing to export: the update has no Linear weight and pure=True leaves out the "
                                 "rest.")
    ranks, conv1d = {}, False
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
        else:  # only the bias changes: a zero rank-1 pair carries the LoRA bias
            out_features = deltas[entry["params"]["bias"]].shape[0]
            factor_b, factor_a = torch.zeros(out_features, 1), torch.zeros(1, _in_features(base_model, module))
        ranks[module] = factor_a.shape[0]  # lora_alpha = r: scaling 1, so the exact factors merge exactly
        tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = factor_a.contiguous()
        tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = factor_b.contiguous()
        if module in bias_deltas:
            if pure:
                report.dropped[bias_deltas[module]] = "pure=True: LoRA bias left out"
            else:
                tensors[f"{PEFT_PREFIX}{module}.lora_B.bias"] = deltas[bias_deltas[module]].contiguous()
        elif lora_bias:
            tensors[f"{PEFT_PREFIX}{module}.lora_B.bias"] = torch.zeros(factor_b.shape[0])
    if not targets:  # PEFT refuses a LoRA without targets (and target_modules=None means its own defaults)
        carrier = _zero_carrier(base_model, report.modules_to_save, plan.tied)
        shape = carrier.weight.shape
        name = next(n for n, m in base_model.named_modules() if m is carrier)
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = torch.zeros(1, shape[1])
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = torch.zeros(shape[0], 1)
        targets, ranks[name] = {name: {}}, 1
        report.notes.append(f"PEFT needs at least one target module, so `{name}` carries a zero LoRA (no change).")
    report.ranks = ranks
    default_rank = max(ranks.values())
    config = LoraConfig(
        r=default_rank, lora_alpha=default_rank, target_modules=sorted(targets),
        rank_pattern={m: r for m, r in ranks.items() if r != default_rank},
        alpha_pattern={m: r for m, r in ranks.items() if r != default_rank},
        lora_dropout=0.0, bias="none", lora_bias=lora_bias, fan_in_fan_out=conv1d,
        modules_to_save=report.modules_to_save or None, ensure_weight_tying=bool(report.tied),
        inference_mode=True, base_model_name_or_path=_base_id(adapter),
        revision=adapter.config.base_model_revision,
    )
    return _finish(plan, report, tensors, config, adapter, base_model, tokenizer, sample_texts)


def _zero_carrier(base_model: nn.Module | None, saved: Sequence[str], tied: Mapping[str, list[str]]) -> nn.Linear:
    """A Linear layer of the base model, outside `modules_to_save` and the tied heads, to carry a zero LoRA."""
    excluded = set(saved) | {head for heads in tied.values() for head in heads}
    for name, module in (base_model.named_modules() if base_model is not None else []):
        if isinstance(module, nn.Linear) and name not in excluded and not any(name.startswith(m + ".") for m in saved):
            return module
    raise AdapterExportError("PEFT needs at least one Linear target module for a LoRA, and the base model has none "
                             "outside the exported modules; export the update as a delta adapter instead.")


def _in_features(base_model: nn.Module | None, module: str) -> int:
    if base_model is None:
        raise AdapterExportError(f"`{module}` changes only its bias; pass `base_model=` so its input size is known.")
    layer = dict(base_model.named_modules(remove_duplicate=False))[module]
    weight = layer.weight
    return weight.shape[0] if type(layer).__name__ == "Conv1D" else weight.shape[1]


__all__ = ["DEFAULT_SAMPLE_TEXTS", "LINEAR_TYPES", "ExportReport", "export_lora"]
