"""FSDP2 sharding of a GRADIEND across processes: each process holds 1/k of the 3n weights and of AdamW's 6n moments.

`torch.distributed.fsdp.fully_shard` turns the encoder's and decoder's parameters into DTensors. Every tensor that
belongs to a selected base parameter is split along the same base-parameter dimension (the first one divisible by
the number of processes), so one process's pieces of W_e[i], W_d[i] and b_d[i] cover the same entries of that base
parameter's gradient. The step never gathers a weight: `reconstruction_gradients` works on the local entries and
sums three small partial results (z, ∂L/∂h, the loss) across processes, and AdamW (fused, on the DTensors) updates
each piece where it lives. Checkpoints are one safetensors file per process; the model a run saves is gathered into
an ordinary `GradiendModel`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from .errors import TrainingError

SHARD_FILE = "shard-{rank:05d}-of-{world:05d}.safetensors"


def is_dtensor(tensor: object) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The part of `tensor` this process holds (the tensor itself when it is not sharded)."""
    return tensor.to_local() if is_dtensor(tensor) else tensor


def _shard_dims(model) -> dict[int, int]:
    """id(parameter) -> the dimension it is split along; the same base dimension for W_e[i], W_d[i] and b_d[i]."""
    import torch.distributed as dist

    world = dist.get_world_size()
    dims: dict[int, int] = {}
    for name, shape, enc, dec, bias in zip(model.config.param_names, model.config.param_shapes,
                                           model.encoder.weights, model.decoder.weights, model.decoder.biases):
        base_dim = next((d for d, size in enumerate(shape) if size % world == 0), None)
        if base_dim is None:
            raise TrainingError(
                f"FSDP splits each selected parameter along a dimension divisible by the number of processes "
                f"({world}); {name} has shape {tuple(shape)}. Use a process count that divides one of its sizes, "
                f"or leave this parameter out of the selection."
            )
        dims[id(enc)] = dims[id(dec)] = base_dim + 1  # (latent, *shape)
        dims[id(bias)] = base_dim
    dims[id(model.encoder.bias)] = 0  # latent-sized; FSDP allows an uneven split along dim 0
    return dims


def shard_gradiend(model, device_type: str = "cpu"):
    """Shard `model`'s encoder and decoder in place with FSDP2 across all processes; returns the device mesh."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard

    if not dist.is_initialized():
        raise TrainingError("FSDP needs several processes: start the run with torchrun (or `gradiend train "
                            "--num-processes k`).")
    dims = _shard_dims(model)
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    for module in (model.encoder, model.decoder):
        fully_shard(module, mesh=mesh, shard_placement_fn=lambda p: Shard(dims[id(p)]))
    return mesh


def is_sharded(model) -> bool:
    return is_dtensor(model.encoder.bias)


def local_entries(full: torch.Tensor, param: torch.Tensor, param_dim_offset: int) -> torch.Tensor:
    """The entries of a base-parameter-shaped tensor (e.g. its gradient) that `param`'s local piece covers.

    `param_dim_offset` is 1 for (latent, *shape) weights and 0 for base-shaped biases.
    """
    if not is_dtensor(param):
        return full
    placement = param.placements[0]
    dim = placement.dim - param_dim_offset
    size = full.shape[dim]
    world, rank = param.device_mesh.size(), param.device_mesh.get_local_rank()
    chunk = -(-size // world)
    start = min(rank * chunk, size)
    length = param.to_local().shape[placement.dim]
    return full.narrow(dim, start, length)


def sum_across(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` in place over the processes that share `like`'s shards (nothing when `like` is not sharded)."""
    if is_dtensor(like):
        import torch.distributed as dist

        dist.all_reduce(tensor, group=like.device_mesh.get_group())
    return tensor


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every process (an all-gather for a sharded one)."""
    return tensor.full_tensor() if is_dtensor(tensor) else tensor


def assign_grad(param: torch.Tensor, gradient: torch.Tensor) -> None:
    """Set `param.grad` from this process's piece of the gradient."""
    if is_dtensor(param):
        from torch.distributed.tensor import DTensor

        param.grad = DTensor.from_local(gradient, param.device_mesh, param.placements, run_check=False,
                                        shape=param.shape, stride=param.stride())
    else:
        param.grad = gradient


@contextlib.contextmanager
def gathered(module: nn.Module) -> Iterator[nn.Module]:
    """Whole (gathered) parameters in place of the shards while the block runs, for code that reads weights directly
    (validation by directional derivatives); the shards are back afterwards."""
    saved = dict(module._parameters)
    if not any(is_dtensor(p) for p in saved.values()):
        yield module
        return
    try:
        for name, param in saved.items():
            module._parameters[name] = nn.Parameter(full(param.detach()), requires_grad=False)
        yield module
    finally:
        module._parameters.update(saved)


def unshard(model) -> None:
    """Make a sharded `model` an ordinary `GradiendModel` again (whole weights on every process)."""
    if not is_sharded(model):
        return
    from .modeling_gradiend import GradiendModel

    with torch.device("meta"):
        plain = GradiendModel(model.config)
    for name in ("encoder", "decoder"):
        sharded, fresh = getattr(model, name), getattr(plain, name)
        for key, param in sharded.named_parameters():
            fresh._parameters[key] = nn.Parameter(full(param.detach()), requires_grad=param.requires_grad)
        setattr(model, name, fresh)


def local_state(model) -> dict[str, torch.Tensor]:
    """A copy of this process's pieces of every weight (what `load_local_state` puts back)."""
    return {name: local(p.detach()).clone() for name, p in model.named_parameters()}


@torch.no_grad()
def load_local_state(model, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    if set(params) != set(state):
        raise TrainingError("The sharded checkpoint does not hold this model's weights; it cannot be resumed here.")
    for name, tensor in state.items():
        piece = local(params[name])
        if piece.shape != tensor.shape:
            raise TrainingError(f"The sharded checkpoint's piece of {name} has shape {tuple(tensor.shape)}, this "
                                f"process holds {tuple(piece.shape)}: resume with as many processes as wrote it.")
        piece.copy_(tensor)


def wrap_optimizer_state(param: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """An AdamW moment loaded from a shard file, as a DTensor shaped like `param` (scalars such as `step` stay)."""
    if not is_dtensor(param) or tensor.dim() == 0:
        return tensor
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(tensor, param.device_mesh, param.placements, run_check=False, shape=param.shape,
                              stride=param.stride())


__all__ = ["SHARD_FILE", "assign_grad", "full", "gathered", "is_sharded", "load_local_state", "local",
           "local_entries", "local_state", "shard_gradiend", "sum_across", "unshard", "wrap_optimizer_state"]
