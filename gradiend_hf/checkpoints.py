"""Training checkpoints as safetensors + JSON: GRADIEND weights and AdamW's state by parameter name, nothing pickled.

A checkpoint must resume to the very same weights, and a large GRADIEND (3n weights, 6n moments) must not be copied
on the way to disk: tensors are written as they are, keyed `<parameter>::<state field>`, with the param groups'
hyper-parameters in JSON. A sharded (FSDP) GRADIEND writes one file per process with that process's pieces, into
one folder that appears only when every process has written its file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .atomic_io import atomic_folder, atomic_save_tensors
from .errors import TrainingError
from .sharding import SHARD_FILE, is_sharded, load_local_state, local, wrap_optimizer_state

WEIGHTS_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
STATE_NAME = "trainer_state.json"


def clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, folder: Path) -> None:
    atomic_save_tensors(model.state_dict(), folder / WEIGHTS_NAME)


def load_weights(model: torch.nn.Module, folder: Path) -> torch.nn.Module:
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
        else [WEIGHTS_NAME]
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
                tensors[f"{names[id(p)]}::{key}"] = local(torch.as_tensor(value)).detach().contiguous()
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    for group in groups:
        group["betas"] = list(group["betas"])
    return tensors, groups


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                            tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]],
                            wrap: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
    params = dict(model.named_parameters())
    ids = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, field_name = key.rsplit("::", 1)
        state.setdefault(ids[id(params[name])], {})[field_name] = wrap(params[name], value) if wrap else value
    saved_groups = []
    for group, saved in zip(optimizer.param_groups, groups):
        saved = dict(saved)
        saved["betas"] = tuple(saved["betas"])
        saved["params"] = [ids[id(p)] for p in group["params"]]
        saved_groups.append(saved)
    optimizer.load_state_dict({"state": state, "param_groups": saved_groups})


def _process() -> tuple[int, int]:
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    state: dict[str, Any] | None = None) -> None:
    """Write weights (+ AdamW state and `state` as JSON) to `folder`, replacing it only once all is written.

    Every process calls this; with ordinary weights only the first one writes.
    """
    rank, world = _process()
    if not is_sharded(model):
        if rank == 0:
            with atomic_folder(folder, what="training checkpoint", replace=True) as tmp:  # old one until complete
                save_weights(model, tmp)
                if optimizer is not None:
                    tensors, groups = optimizer_to_tensors(optimizer, model)
                    atomic_save_tensors(tensors, tmp / OPTIMIZER_NAME)
                    state = {**(state or {}), "param_groups": groups}
                if state is not None:
                    (tmp / STATE_NAME).write_text(json.dumps(state, indent=2))
        return
    pending = folder.with_name(f".{folder.name}.shards")
    if rank == 0:
        shutil.rmtree(pending, ignore_errors=True)
        pending.mkdir(parents=True)
    _barrier()
    tensors = {name: local(p.detach()) for name, p in model.named_parameters()}
    groups = None
    if optimizer is not None:
        moments, groups = optimizer_to_tensors(optimizer, model)
        tensors.update(moments)
    atomic_save_tensors(tensors, pending / SHARD_FILE.format(rank=rank, world=world))
    del tensors
    _barrier()
    if rank == 0:
        with atomic_folder(folder, what="training checkpoint", replace=True) as tmp:
            for shard in pending.iterdir():
                os.replace(shard, tmp / shard.name)
            record = {**(state or {}), "processes": world}
            if groups is not None:
                record["param_groups"] = groups
            (tmp / STATE_NAME).write_text(json.dumps(record, indent=2))
        pending.rmdir()
    _barrier()


def load_checkpoint(folder: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """Load what `save_checkpoint` wrote into `model` (and `optimizer`); returns the JSON state ({} if none)."""
    state = json.loads((folder / STATE_NAME).read_text()) if (folder / STATE_NAME).is_file() else {}
    rank, world = _process()
    shard = folder / SHARD_FILE.format(rank=rank, world=world)
    written_sharded = any(folder.glob("shard-*-of-*.safetensors"))
    if is_sharded(model) != written_sharded or (written_sharded and not shard.is_file()):
        wrote = f"{state.get('processes', '?')} processes with FSDP" if written_sharded else "unsharded weights"
        now = f"{world} processes with FSDP" if is_sharded(model) else "unsharded weights"
        raise TrainingError(f"The checkpoint in {folder} holds {wrote}; this run uses {now}. Resume it the way it "
                            f"was started (same process count and --fsdp setting), or train into another folder.")
    if not written_sharded:
        load_weights(model, folder)
        if optimizer is not None:
            optimizer_from_tensors(optimizer, model, load_file(str(folder / OPTIMIZER_NAME)), state["param_groups"])
        return state
    tensors = load_file(str(shard))
    load_local_state(model, {k: v for k, v in tensors.items() if "::" not in k})
    if optimizer is not None:
        optimizer_from_tensors(optimizer, model, {k: v for k, v in tensors.items() if "::" in k},
                               state["param_groups"], wrap=wrap_optimizer_state)
    return state


__all__ = ["OPTIMIZER_NAME", "STATE_NAME", "WEIGHTS_NAME", "clone_state", "load_checkpoint",
           "load_weights", "optimizer_from_tensors", "optimizer_to_tensors", "save_checkpoint", "save_weights"]
