"""Exact, reversible in-place edits of base parameters: W = W0 + Σ scale·ΔW, and W0 back bit for bit.

Adding a delta and subtracting it again does not restore float weights exactly (round-off), so every edit here
keeps one copy W0 of each parameter it touches and always writes `W0 + Σ scale·ΔW` (accumulated in float32) or W0
itself. Tied parameters (an embedding shared with the LM head) are one tensor reachable under two names: they are
edited once, and both names see the edit.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import torch
from torch import nn

from .base_model import resolve_parameters

DeltaTerm = tuple[Mapping[str, torch.Tensor], float]
"""One summand of an edit: `({parameter name: ΔW}, scale)`."""


class ParameterPatch:
    """In-place edits of some parameters of a model, always undone exactly.

    Args:
        base_model: the model whose parameters are edited.
        names: parameter names it may edit (tied aliases are allowed and resolve to one tensor).
        shapes: expected shapes, checked up front (a mismatch raises before anything is written).

    Example:

    ```python
    >>> with ParameterPatch(base, update.keys()) as patch:
    ...     for alpha in (1e-3, 1e-2):
    ...         patch.write([(update, alpha)])     # W = W0 + alpha * update, in place
    ...         evaluate(base)
    >>> # here every parameter is bit-identical to before
    ```
    """

    def __init__(self, base_model: nn.Module, names: Sequence[str],
                 shapes: Sequence[Sequence[int]] | None = None):
        self.base_model = base_model
        self._params: dict[int, nn.Parameter] = {}
        self._key_of: dict[str, int] = {}
        self._originals: dict[int, torch.Tensor] = {}
        self.add(names, shapes)

    # -- what is patched -----------------------------------------------------------------------------------------
    def add(self, names: Sequence[str], shapes: Sequence[Sequence[int]] | None = None) -> None:
        """Also cover `names`; their current values become their originals."""
        params = resolve_parameters(self.base_model, list(names), shapes, what="This edit")
        for name, param in params.items():
            key = id(param)
            self._key_of[name] = key
            if key not in self._params:
                self._params[key] = param
                self._originals[key] = param.detach().clone()

    @property
    def names(self) -> list[str]:
        return list(self._key_of)

    def covers(self, name: str) -> bool:
        return name in self._key_of

    def original(self, name: str) -> torch.Tensor:
        """The saved original of parameter `name` (do not modify it)."""
        return self._originals[self._key_of[name]]

    # -- edits ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def write(self, terms: Sequence[DeltaTerm]) -> None:
        """Set every covered parameter to `W0 + Σ scale·ΔW` over `terms` (W0 where no term names it).

        The sum is formed in float32 from the saved originals, then cast to the parameter's dtype. If writing fails
        half-way, every parameter is put back to its original before the error propagates.
        """
        sums: dict[int, torch.Tensor] = {}
        for deltas, scale in terms:
            for name, delta in deltas.items():
                key = self._key_of.get(name)
                if key is None:
                    raise KeyError(f"`{name}` is not covered by this patch; add it first.")
                original = self._originals[key]
                if tuple(delta.shape) != tuple(original.shape):
                    raise ValueError(f"ΔW for `{name}` has shape {tuple(delta.shape)}, the parameter "
                                     f"{tuple(original.shape)}.")
                base = sums[key] if key in sums else original.float()
                sums[key] = base + float(scale) * delta.to(device=original.device, dtype=torch.float32)
        try:
            for key, param in self._params.items():
                param.copy_(sums[key].to(param.dtype) if key in sums else self._originals[key])
        except BaseException:
            self.restore()
            raise

    @torch.no_grad()
    def restore(self) -> None:
        """Put every covered parameter back to its original, bit for bit."""
        for key, param in self._params.items():
            param.copy_(self._originals[key])

    def __enter__(self) -> ParameterPatch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()


# -- adapters active on a model ------------------------------------------------------------------------------------
_handle_ids = count(1)


@dataclass
class _Entry:
    handle_id: int
    owner: Any
    deltas: dict[str, torch.Tensor]
    scale: float
    merged: bool


@dataclass
class _ActiveDeltas:
    """The delta adapters applied to one model, in order, over one patch that keeps the originals."""

    patch: ParameterPatch
    entries: list[_Entry] = field(default_factory=list)


_active: weakref.WeakKeyDictionary[nn.Module, _ActiveDeltas] = weakref.WeakKeyDictionary()


class DeltaHandle:
    """An applied delta: `remove()` takes it off again (the model is then as if it had never been applied)."""

    def __init__(self, base_model: nn.Module, handle_id: int, description: str):
        self._base = weakref.ref(base_model)
        self.handle_id = handle_id
        self.description = description

    @property
    def active(self) -> bool:
        base = self._base()
        state = _active.get(base) if base is not None else None
        return state is not None and any(e.handle_id == self.handle_id for e in state.entries)

    def remove(self) -> None:
        """Take this delta off; other deltas applied to the same model stay. Removing twice does nothing."""
        base = self._base()
        if base is not None:
            remove_deltas(base, lambda entry: entry.handle_id == self.handle_id)

    def __repr__(self) -> str:
        return f"DeltaHandle({self.description}, active={self.active})"


def apply_delta(base_model: nn.Module, deltas: Mapping[str, torch.Tensor], *, scale: float = 1.0,
                owner: Any = None, merged: bool = False, description: str = "delta") -> DeltaHandle:
    """Add `scale·ΔW` to the parameters of `base_model` in place, on top of deltas already applied.

    Shapes are checked before anything is written. Returns a handle whose `remove()` undoes exactly this delta.
    """
    names = list(deltas)
    state = _active.get(base_model)
    if state is None:
        state = _ActiveDeltas(ParameterPatch(base_model, names, [list(d.shape) for d in deltas.values()]))
    else:
        new = [n for n in names if not state.patch.covers(n)]
        state.patch.add(new, [list(deltas[n].shape) for n in new])
        for name in names:
            if tuple(state.patch.original(name).shape) != tuple(deltas[name].shape):
                resolve_parameters(base_model, [name], [list(deltas[name].shape)])  # raises, naming the mismatch
    entry = _Entry(next(_handle_ids), owner, dict(deltas), float(scale), merged)
    previous = list(state.entries)
    state.entries.append(entry)
    try:
        state.patch.write([(e.deltas, e.scale) for e in state.entries])
    except BaseException:
        state.entries[:] = previous
        _rewrite(base_model, state)
        raise
    _active[base_model] = state
    return DeltaHandle(base_model, entry.handle_id, description)


def remove_deltas(base_model: nn.Module, which) -> int:
    """Remove the applied deltas for which `which(entry)` is true; returns how many were removed."""
    state = _active.get(base_model)
    if state is None:
        return 0
    keep = [e for e in state.entries if not which(e)]
    removed = len(state.entries) - len(keep)
    if removed:
        state.entries[:] = keep
        _rewrite(base_model, state)
    return removed


def _rewrite(base_model: nn.Module, state: _ActiveDeltas) -> None:
    if state.entries:
        state.patch.write([(e.deltas, e.scale) for e in state.entries])
    else:
        state.patch.restore()
        _active.pop(base_model, None)  # nothing applied: drop the saved originals


def applied_entries(base_model: nn.Module) -> list[_Entry]:
    """The deltas currently applied to `base_model`, oldest first."""
    state = _active.get(base_model)
    return list(state.entries) if state is not None else []


def original_tensors(base_model: nn.Module, names: Sequence[str]) -> list[torch.Tensor]:
    """The weights called `names` as they are without any applied delta (saved originals where patched)."""
    from .base_model import named_parameters_with_aliases

    state = _active.get(base_model)
    available = named_parameters_with_aliases(base_model)
    out = []
    for name in names:
        if state is not None and state.patch.covers(name):
            out.append(state.patch.original(name))
        else:
            out.append(available[name].detach())
    return out


__all__ = [
    "DeltaHandle",
    "DeltaTerm",
    "ParameterPatch",
    "applied_entries",
    "apply_delta",
    "original_tensors",
    "remove_deltas",
]
