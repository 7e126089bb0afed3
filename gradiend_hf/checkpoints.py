"""Training checkpoints as safetensors + JSON: GRADIEND weights and AdamW's state by parameter name, nothing pickled.

A checkpoint must resume to the very same weights, and a large GRADIEND (3n weights, 6n moments) must not be copied
on the way to disk: tensors are written as they are, keyed `<parameter>::<state field>`, with the param groups'
hyper-parameters in JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .atomic_io import atomic_save_tensors
from .modeling_gradiend import GradiendModel


def clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def empty_like_model(model: GradiendModel) -> GradiendModel:
    return GradiendModel(model.config)


def save_weights(model: torch.nn.Module, folder: Path) -> None:
    atomic_save_tensors(model.state_dict(), folder / "model.safetensors")


def load_weights(model: torch.nn.Module, folder: Path) -> torch.nn.Module:
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
        else ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(folder / name)))
    model.load_state_dict(state)
    return model


def optimizer_to_tensors(optimizer: torch.optim.Optimizer, model: torch.nn.Module):
    names = {id(p): n for n, p in model.named_parameters()}
    tensors: dict[str, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                # no copy: the moments are as large as the GRADIEND itself (2 × 3n), and writing only reads them
                tensors[f"{names[id(p)]}::{key}"] = torch.as_tensor(value).detach().contiguous()
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    for group in groups:
        group["betas"] = list(group["betas"])
    return tensors, groups


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                            tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> None:
    params = dict(model.named_parameters())
    ids = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, field_name = key.rsplit("::", 1)
        state.setdefault(ids[id(params[name])], {})[field_name] = value
    saved_groups = []
    for group, saved in zip(optimizer.param_groups, groups):
        saved = dict(saved)
        saved["betas"] = tuple(saved["betas"])
        saved["params"] = [ids[id(p)] for p in group["params"]]
        saved_groups.append(saved)
    optimizer.load_state_dict({"state": state, "param_groups": saved_groups})


__all__ = ["clone_state", "empty_like_model", "load_weights", "optimizer_from_tensors", "optimizer_to_tensors",
           "save_weights"]
