"""Exact, reversible in-place edits of base parameters: W = W0 + Σ scale·ΔW, and W0 back bit for bit.

Adding a delta and subtracting it again does not restore float weights exactly (round-off), so every edit here
keeps one copy W0 of each parameter it touches and always writes `W0 + Σ scale·ΔW` (accumulated in float32) or W0
itself. Tied parameters (an embedding shared with the LM head) are one tensor reachable under two names: they are
edited once, and both names see the edit.

The registry of deltas applied to a model never disagrees with its weights: it changes only after the weights are
written; a write that fails puts back the weights the registry describes; one lock serialises every change; a covered
weight that something else changes in place while deltas are on (an optimiser step, `load_state_dict`) is detected by
its tensor version and reported (`AdapterStateError`) instead of being overwritten; non-finite updates are refused;
and an update that rounds away in the weight's dtype (bf16, fp16) is reported with a warning.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Literal

import torch
from torch import nn

from ..errors import AdapterCompatibilityError, AdapterStateError
from .base_model import named_parameters_with_aliases, resolve_parameters
from .content_tokens import content_token, new_token, retoken

DeltaTerm = tuple[Mapping[str, torch.Tensor], float]
"""One summand of an edit: `({parameter name: ΔW}, scale)`."""
OnChange = Literal["raise", "keep", "discard"]
"""What to do with a covered weight changed in place while deltas were on: refuse (default), keep the change (it
becomes part of the original), or discard it (the weight is rewritten from the saved original)."""

ROUNDING_WARN_ERROR = 0.5
"""Warn when the update written into a half-precision weight differs from the intended one by more than this share
of its norm (most of it rounded away)."""

_lock = threading.RLock()
"""Guards the registry of applied deltas and every write it makes (re-entrant: removing calls writing)."""


def _copy_into(param: torch.Tensor, value: torch.Tensor) -> None:
    """The one place a weight is written (fault-injection tests replace it)."""
    param.copy_(value)


@dataclass
class RoundingLoss:
    """How much of an intended update survived being written in a low-precision dtype."""

    name: str
    dtype: torch.dtype
    changed_share: float
    """Share of the entries the update changes whose stored value actually changed."""
    relative_error: float
    """‖written − intended‖ / ‖intended‖ of the update."""

    def message(self) -> str:
        return (f"The update of `{self.name}` mostly rounds away in {str(self.dtype).removeprefix('torch.')}: only "
                f"{self.changed_share:.0%} of the entries it changes change the weight, and the applied update is "
                f"off by {self.relative_error:.0%} of its norm. Apply it to a float32 copy of the base model "
                f"(`base.float()`), or use a larger scale.")


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
        self._original_tokens: dict[int, int] = {}
        self._expected: dict[int, int] = {}
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
                self._original_tokens[key] = self._expected[key] = content_token(param)

    @property
    def names(self) -> list[str]:
        return list(self._key_of)

    def covers(self, name: str) -> bool:
        return name in self._key_of

    def original(self, name: str) -> torch.Tensor:
        """The saved original of parameter `name` (do not modify it)."""
        return self._originals[self._key_of[name]]

    def original_token(self, name: str) -> int:
        """The content token of the saved original of `name` (see `content_token`)."""
        return self._original_tokens[self._key_of[name]]

    def changed(self) -> list[str]:
        """Covered parameters changed in place by someone else since this patch last wrote them (one name each)."""
        first_name = {}
        for name, key in self._key_of.items():
            first_name.setdefault(key, name)
        return [first_name[key] for key, param in self._params.items() if content_token(param) != self._expected[key]]

    # -- edits ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def write(self, terms: Sequence[DeltaTerm], *, rounding: Sequence[str] = ()) -> list[RoundingLoss]:
        """Set every covered parameter to `W0 + Σ scale·ΔW` over `terms` (W0 where no term names it).

        The sum is formed in float32 from the saved originals, then cast to the parameter's dtype. Everything is
        computed and checked before the first weight is written; if writing fails half-way, every parameter is put
        back to its original before the error propagates.

        Args:
            terms: the deltas and their scales.
            rounding: parameters whose update is checked for being rounded away in a half-precision dtype.

        Returns:
            The parameters of `rounding` whose update mostly rounded away (empty for float32 weights).

        Raises:
            AdapterCompatibilityError: a name is not covered, a shape differs, or the result is not finite.
        """
        sums: dict[int, torch.Tensor] = {}
        names_of: dict[int, str] = {}
        for deltas, scale in terms:
            for name, delta in deltas.items():
                key = self._key_of.get(name)
                if key is None:
                    raise KeyError(f"`{name}` is not covered by this patch; add it first.")
                original = self._originals[key]
                if tuple(delta.shape) != tuple(original.shape):
                    raise AdapterCompatibilityError(f"ΔW for `{name}` has shape {tuple(delta.shape)}, the parameter "
                                                    f"{tuple(original.shape)}.")
                base = sums[key] if key in sums else original.float()
                sums[key] = base + float(scale) * delta.to(device=original.device, dtype=torch.float32)
                names_of.setdefault(key, name)
        values = {}
        for key, total in sums.items():
            param, original = self._params[key], self._originals[key]
            value = total.to(param.dtype)
            if not bool(torch.isfinite(value).all()) and bool(torch.isfinite(original).all()):
                raise AdapterCompatibilityError(
                    f"W0 + ΔW for `{names_of[key]}` is not finite in {str(param.dtype).removeprefix('torch.')} "
                    f"(a NaN or inf in the update, or a sum beyond the dtype's range); nothing was written. Check "
                    f"the adapter's file and the scale."
                )
            values[key] = value
        losses = [loss for name in rounding if (loss := self._rounding_loss(name, sums, values)) is not None]
        try:
            for key, param in self._params.items():
                _copy_into(param, values[key] if key in values else self._originals[key])
                if key in values:
                    self._expected[key] = content_token(param)
                else:
                    retoken(param, self._original_tokens[key])
                    self._expected[key] = self._original_tokens[key]
        except BaseException:
            self.restore()
            raise
        return losses

    def _rounding_loss(self, name: str, sums: Mapping[int, torch.Tensor],
                       values: Mapping[int, torch.Tensor]) -> RoundingLoss | None:
        key = self._key_of[name]
        value = values.get(key)
        if value is None or value.dtype not in (torch.bfloat16, torch.float16):
            return None
        original = self._originals[key].float()
        intended = sums[key] - original
        norm = float(intended.norm())
        if norm == 0.0:
            return None
        written = value.float() - original
        error = float((written - intended).norm()) / norm
        if error <= ROUNDING_WARN_ERROR:
            return None
        moved = intended != 0
        share = float(((written != 0) & moved).sum()) / max(int(moved.sum()), 1)
        return RoundingLoss(name, value.dtype, share, error)

    @torch.no_grad()
    def restore(self) -> None:
        """Put every covered parameter back to its original, bit for bit.

        Raises:
            AdapterStateError: a weight could not be written (the error names it; the model should be reloaded).
        """
        for key, param in self._params.items():
            try:
                _copy_into(param, self._originals[key])
            except BaseException as error:
                raise AdapterStateError(
                    f"Could not write the original values back into a patched weight ({type(error).__name__}: "
                    f"{error}); its values are unknown now. Reload the model."
                ) from error
            retoken(param, self._original_tokens[key])
            self._expected[key] = self._original_tokens[key]

    @torch.no_grad()
    def rebase(self, names: Sequence[str], terms: Sequence[DeltaTerm]) -> None:
        """Make the current values of `names`, minus the applied `terms`, their new originals (keeps an in-place
        change made while the terms were on; exact up to one rounding in the parameter's dtype)."""
        keys = {self._key_of[name] for name in names}
        for key in keys:
            current = self._params[key].detach().float()
            for deltas, scale in terms:
                for name, delta in deltas.items():
                    if self._key_of.get(name) == key:
                        current = current - float(scale) * delta.to(device=current.device, dtype=torch.float32)
            self._originals[key] = current.to(self._params[key].dtype)
            self._original_tokens[key] = new_token()

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
    description: str = "delta"


@dataclass
class _ActiveDeltas:
    """The delta adapters applied to one model, in order, over one patch that keeps the originals."""

    patch: ParameterPatch
    entries: list[_Entry] = field(default_factory=list)
    broken: str | None = None
    """Set when a write failed and not even the originals could be put back: the weights are unknown."""


_active: weakref.WeakKeyDictionary[nn.Module, _ActiveDeltas] = weakref.WeakKeyDictionary()


def _terms(entries: Sequence[_Entry]) -> list[DeltaTerm]:
    return [(entry.deltas, entry.scale) for entry in entries]


def _usable_state(base_model: nn.Module) -> _ActiveDeltas | None:
    state = _active.get(base_model)
    if state is not None and state.broken:
        raise AdapterStateError(state.broken)
    return state


def _check_unchanged(state: _ActiveDeltas, on_change: OnChange) -> None:
    """Deal with covered weights changed in place since the registry last wrote them (see `OnChange`)."""
    changed = state.patch.changed()
    if not changed:
        return
    if on_change == "keep":
        state.patch.rebase(changed, _terms(state.entries))
        _commit_write(state, state.entries)
    elif on_change == "discard":
        _commit_write(state, state.entries)
    else:
        shown = ", ".join(f"`{n}`" for n in changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise AdapterStateError(
            f"{shown} changed in place while delta adapters were on (an optimiser step or load_state_dict?); taking "
            f"adapters off or adding one now would overwrite that change, so nothing was done. Keep the change "
            f"(`handle.remove(on_change='keep')`, or `resolve_changes(model, keep=True)`), or discard it "
            f"(`on_change='discard'`)."
        )


def _commit_write(state: _ActiveDeltas, entries: Sequence[_Entry], rounding: Sequence[str] = ()) -> list[RoundingLoss]:
    """Write `entries`; on failure put back what `state.entries` says is applied (registry and weights agree)."""
    try:
        return state.patch.write(_terms(entries), rounding=rounding)
    except (AdapterCompatibilityError, KeyError):  # refused before anything was written
        raise
    except AdapterStateError as error:  # the originals could not be written back either
        state.broken = (f"A write into this model's weights failed and could not be undone ({error}); its weights "
                        f"are unknown. Reload the model.")
        raise
    except BaseException as error:  # write() has put the originals back; now put back what the registry says
        if state.entries:
            try:
                state.patch.write(_terms(state.entries))
            except BaseException as second:
                described = ", ".join(e.description for e in state.entries)
                state.entries.clear()
                if isinstance(second, AdapterStateError):
                    state.broken = f"Writing this model's weights failed twice; they are unknown ({second}). Reload it."
                raise AdapterStateError(
                    f"Writing the weights failed ({type(error).__name__}: {error}), and so did putting back the "
                    f"adapters that were on ({described}); the model holds its original weights and no delta "
                    f"adapter is applied now."
                ) from error
        raise


def _commit(base_model: nn.Module, state: _ActiveDeltas, entries: list[_Entry],
            rounding: Sequence[str] = ()) -> list[RoundingLoss]:
    """Write `entries` into the weights, then (only then) record them as the applied deltas."""
    losses = _commit_write(state, entries, rounding)
    state.entries[:] = entries
    if not entries:
        _active.pop(base_model, None)  # nothing applied: drop the saved originals
    else:
        _active[base_model] = state
    return losses


class DeltaHandle:
    """An applied delta: `remove()` takes it off again (the model is then as if it had never been applied)."""

    def __init__(self, base_model: nn.Module, handle_id: int, description: str):
        self._base = weakref.ref(base_model)
        self.handle_id = handle_id
        self.description = description

    @property
    def active(self) -> bool:
        base = self._base()
        with _lock:
            state = _active.get(base) if base is not None else None
            return state is not None and any(e.handle_id == self.handle_id for e in state.entries)

    def remove(self, *, on_change: OnChange = "raise") -> None:
        """Take this delta off; other deltas applied to the same model stay. Removing twice does nothing.

        Raises:
            AdapterStateError: a covered weight was changed in place while the delta was on (`on_change="keep"`
                keeps that change, `"discard"` drops it).
        """
        base = self._base()
        if base is not None:
            remove_deltas(base, lambda entry: entry.handle_id == self.handle_id, on_change=on_change)

    def __repr__(self) -> str:
        return f"DeltaHandle({self.description}, active={self.active})"


def _check_finite(deltas: Mapping[str, torch.Tensor], scale: float) -> None:
    if not torch.isfinite(torch.tensor(float(scale))):
        raise AdapterCompatibilityError(f"`scale` must be a finite number, got {scale!r}.")
    for name, delta in deltas.items():
        if not delta.is_floating_point():
            raise AdapterCompatibilityError(f"ΔW for `{name}` must be floating point, got {delta.dtype}.")
        finite = torch.isfinite(delta)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise AdapterCompatibilityError(
                f"ΔW for `{name}` has {bad} NaN or infinite entr{'y' if bad == 1 else 'ies'}; a delta is never "
                f"written into a model unless it is finite. The adapter's file may be corrupt."
            )


def apply_delta(base_model: nn.Module, deltas: Mapping[str, torch.Tensor], *, scale: float = 1.0,
                owner: Any = None, merged: bool = False, description: str = "delta",
                on_change: OnChange = "raise") -> DeltaHandle:
    """Add `scale·ΔW` to the parameters of `base_model` in place, on top of deltas already applied.

    Shapes and finiteness are checked before anything is written. A half-precision weight that the update mostly
    rounds away gets a warning. Returns a handle whose `remove()` undoes exactly this delta.

    Raises:
        AdapterCompatibilityError: a missing or mis-shaped parameter, or a non-finite update.
        AdapterStateError: a covered weight was changed in place while other deltas were on (see `OnChange`).
    """
    _check_finite(deltas, scale)
    names = list(deltas)
    shapes = [list(d.shape) for d in deltas.values()]
    with _lock:
        state = _usable_state(base_model)
        if state is None:
            state = _ActiveDeltas(ParameterPatch(base_model, names, shapes))
        else:
            _check_unchanged(state, on_change)
            resolve_parameters(base_model, names, shapes, what="This delta")  # raises, naming every mismatch
            state.patch.add([n for n in names if not state.patch.covers(n)])
        entry = _Entry(next(_handle_ids), owner, dict(deltas), float(scale), merged, description)
        losses = _commit(base_model, state, [*state.entries, entry], rounding=names)
    for loss in losses:
        warnings.warn(loss.message(), stacklevel=2)
    return DeltaHandle(base_model, entry.handle_id, description)


def remove_deltas(base_model: nn.Module, which: Callable[[_Entry], bool], *, on_change: OnChange = "raise") -> int:
    """Remove the applied deltas for which `which(entry)` is true; returns how many were removed.

    Raises:
        AdapterStateError: a covered weight was changed in place while the deltas were on (see `OnChange`).
    """
    with _lock:
        state = _usable_state(base_model)
        if state is None:
            return 0
        keep = [e for e in state.entries if not which(e)]
        removed = len(state.entries) - len(keep)
        if removed:
            _check_unchanged(state, on_change)
            _commit(base_model, state, keep)
        return removed


def resolve_changes(base_model: nn.Module, *, keep: bool) -> list[str]:
    """Settle covered weights that were changed in place while deltas were on: keep the change (it becomes part of
    the originals) or discard it (the weights are rewritten). Returns the names of the changed weights."""
    with _lock:
        state = _usable_state(base_model)
        if state is None:
            return []
        changed = state.patch.changed()
        _check_unchanged(state, "keep" if keep else "discard")
        return changed


def applied_entries(base_model: nn.Module) -> list[_Entry]:
    """The deltas currently applied to `base_model`, oldest first."""
    with _lock:
        state = _usable_state(base_model)
        return list(state.entries) if state is not None else []


def original_tensors(base_model: nn.Module, names: Sequence[str]) -> list[torch.Tensor]:
    """The weights called `names` as they are without any applied delta (saved originals where patched).

    Raises:
        AdapterStateError: a covered weight was changed in place while deltas were on (its original is stale).
    """
    with _lock:
        state = _usable_state(base_model)
        if state is not None:
            _check_unchanged(state, "raise")
        available = named_parameters_with_aliases(base_model)
        out = []
        for name in names:
            if state is not None and state.patch.covers(name):
                out.append(state.patch.original(name))
            else:
                out.append(available[name].detach())
        return out


def original_content_tokens(base_model: nn.Module, names: Sequence[str]) -> tuple[int, ...]:
    """Content tokens of the weights `original_tensors` would return: equal tokens mean equal values, so a
    fingerprint cache keyed by them survives toggling adapters but not a real change of the weights."""
    with _lock:
        state = _usable_state(base_model)
        available = named_parameters_with_aliases(base_model)
        return tuple(state.patch.original_token(name) if state is not None and state.patch.covers(name)
                     else content_token(available[name]) for name in names)


__all__ = [
    "DeltaHandle",
    "DeltaTerm",
    "OnChange",
    "ParameterPatch",
    "RoundingLoss",
    "applied_entries",
    "apply_delta",
    "original_content_tokens",
    "original_tensors",
    "remove_deltas",
    "resolve_changes",
]
