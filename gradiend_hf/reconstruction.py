"""The GRADIEND training loss and its gradients in closed form, without an autograd graph over n-long tensors.

GRADIEND minimises MSE(dec(enc(g)), t) with enc(g) = act(Σ_i <W_e[i], g_i> + b_e) and dec(h)_i = h·W_d[i] + b_d[i].
The model is linear in W_d and b_d and one activation away from W_e, so with r_i = dec(h)_i − t_i and c = 2/n:

    ∂L/∂b_d[i] = c·r_i        ∂L/∂W_d[i] = c·h ⊗ r_i        ∂L/∂h = c·Σ_i W_d[i]·r_i
    ∂L/∂z = ∂L/∂h ⊙ act'(z)   ∂L/∂W_e[i] = ∂L/∂z ⊗ g_i      ∂L/∂b_e = ∂L/∂z

Autograd would keep the decoded update, the residual and their products for every selected parameter until the
backward pass (several n-long buffers; at n = 268M each is 1 GB). Here each parameter's residual lives only while
its gradients are written. With `on_gradient` (the trainer applies AdamW to that one parameter and frees its
gradient) not even the 3n gradients are held at once. With FSDP-sharded weights (`sharding`) each process computes
the gradients of the entries it holds; only z, ∂L/∂h and the loss (latent-sized sums) are added across processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from .sharding import assign_grad, full, is_dtensor, local, local_entries, sum_across


def _activation_derivative(activation: str, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    if activation == "tanh":
        return 1.0 - h * h
    if activation == "hardtanh":
        return ((z > -1.0) & (z < 1.0)).to(z.dtype)
    return torch.ones_like(z)


def _grad_buffer(param: torch.nn.Parameter) -> torch.Tensor:
    """A buffer for this process's piece of `param`'s gradient (the old `.grad` when it fits; a sharded parameter's
    gradient is set by `_publish`)."""
    if is_dtensor(param):
        return torch.empty_like(local(param))
    if param.grad is None or param.grad.shape != param.shape or param.grad.dtype != param.dtype:
        param.grad = torch.empty_like(param)
    return param.grad


def _publish(param: torch.nn.Parameter, buffer: torch.Tensor) -> None:
    if is_dtensor(param):
        assign_grad(param, buffer)


def _write_values(param: torch.nn.Parameter, values: torch.Tensor) -> None:
    """param.grad = values (this process's piece), copied into the gradient buffer."""
    buffer = _grad_buffer(param)
    buffer.copy_(values.reshape(buffer.shape))
    _publish(param, buffer)


def _write_outer(param: torch.nn.Parameter, left: torch.Tensor, right: torch.Tensor) -> None:
    """param.grad = left ⊗ right (latent × n_i), written in place when the dtypes allow it."""
    buffer = _grad_buffer(param)
    if buffer.dtype == torch.float32:
        torch.outer(left, right, out=buffer.reshape(left.shape[0], -1))
    else:
        buffer.copy_(torch.outer(left, right).reshape(buffer.shape))
    _publish(param, buffer)


@torch.no_grad()
def reconstruction_gradients(model, source: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
                             target: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], *,
                             on_gradient: Callable[[torch.nn.Parameter], None] | None = None) -> float:
    """Write ∂MSE/∂θ of one (unbatched) source/target pair into every GRADIEND parameter's `.grad`; return the MSE.

    The same loss as `GradiendModel.forward(source, target).loss` (mean over all n entries) and the same gradients
    as its `backward()`, to float round-off.

    Args:
        model: a `GradiendModel`.
        source: the encoder's input gradient per selected base parameter (dict by name, or tensors in order).
        target: ∇± per selected base parameter.
        on_gradient: called with each parameter as soon as its gradient is written (before the next one is), e.g. to
            update it and free the gradient. The order keeps that equal to updating after all gradients: a decoder weight is handed over
            after its contribution to ∂L/∂h is taken, the encoder after ∂L/∂z is complete, and the forward pass
            (z, h) is computed before anything is handed over.
    """
    names = model.config.param_names
    sources = [source[n] for n in names] if isinstance(source, Mapping) else list(source)
    targets = [target[n] for n in names] if isinstance(target, Mapping) else list(target)
    encoder, decoder = model.encoder, model.decoder
    latent = model.config.latent_size
    # Sharded (FSDP) weights: each process works on its own entries; z, ∂L/∂h and the loss are sums over entries,
    # so their partial sums are added across processes (`sum_across` does nothing for ordinary weights).
    z = torch.zeros(latent, dtype=torch.float32, device=encoder.bias.device)
    for weight, g in zip(encoder.weights, sources):
        z += local(weight).reshape(latent, -1).float() @ local_entries(g, weight, 1).reshape(-1).float()
    z = sum_across(z, encoder.bias) + full(encoder.bias.detach()).float()
    h = model.activate(z)
    scale = 2.0 / model.config.num_selected
    grad_h = torch.zeros(latent + 1, dtype=torch.float32, device=z.device)  # ∂L/∂h / scale, then the squared error
    for weight, bias, t in zip(decoder.weights, decoder.biases, targets):
        flat_weight = local(weight).reshape(latent, -1).float()
        # r = b_d + W_dᵀ h − t, built in one buffer (no separate products for an n_i-long parameter)
        residual = local(bias).detach().reshape(-1).float().clone().addmv_(flat_weight.T, h)
        residual.sub_(local_entries(t, bias, 0).reshape(-1).to(device=residual.device, dtype=torch.float32))
        grad_h[latent] += torch.dot(residual, residual)
        grad_h[:latent] += flat_weight @ residual
        residual.mul_(scale)
        _write_values(bias, residual)
        if on_gradient is not None:  # one gradient at a time: the callback may update every parameter with one
            on_gradient(bias)
        _write_outer(weight, h, residual)
        del residual, flat_weight
        if on_gradient is not None:
            on_gradient(weight)
    grad_h = sum_across(grad_h, encoder.bias)
    loss = float(grad_h[latent])
    grad_z = (grad_h[:latent] * scale) * _activation_derivative(model.config.activation, z, h)
    for weight, g in zip(encoder.weights, sources):
        _write_outer(weight, grad_z, local_entries(g, weight, 1).reshape(-1).to(device=z.device, dtype=torch.float32))
        if on_gradient is not None:
            on_gradient(weight)
    _write_values(encoder.bias, local_entries(grad_z, encoder.bias, 0))
    if on_gradient is not None:
        on_gradient(encoder.bias)
    return loss / model.config.num_selected


__all__ = ["reconstruction_gradients"]
