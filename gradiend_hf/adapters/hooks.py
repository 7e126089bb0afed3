"""Adapters that act through forward hooks: a handle per application, and which are on for a model.

Off means no hook: the module's forward is the original one, so outputs are bit-identical to the base's.
Registering is all-or-nothing (a failure removes the hooks already registered), and `HookHandle.remove` is idempotent.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import AdapterCompatibilityError

_ids = count(1)


@dataclass
class _HookEntry:
    handle_id: int
    owner: Any
    handles: list[RemovableHandle]
    description: str


_active: weakref.WeakKeyDictionary[nn.Module, list[_HookEntry]] = weakref.WeakKeyDictionary()


class HookHandle:
    """An applied hook adapter: `remove()` takes it off again (the model's forward is then the original one)."""

    def __init__(self, model: nn.Module, handle_id: int, description: str):
        self._model = weakref.ref(model)
        self.handle_id = handle_id
        self.description = description

    @property
    def active(self) -> bool:
        model = self._model()
        return model is not None and any(e.handle_id == self.handle_id for e in _active.get(model, []))

    def remove(self) -> None:
        """Take this application off; other adapters on the same model stay. Removing twice does nothing."""
        model = self._model()
        if model is not None:
            remove_hooks(model, lambda entry: entry.handle_id == self.handle_id)

    def __repr__(self) -> str:
        return f"HookHandle({self.description}, active={self.active})"


def register_hooks(model: nn.Module, owner: Any, registrations: Sequence[Callable[[], RemovableHandle]], *,
                   description: str) -> HookHandle:
    """Run each registration (a call of `register_forward_hook` & co.); if one fails, undo the others and re-raise."""
    handles: list[RemovableHandle] = []
    try:
        for register in registrations:
            handles.append(register())
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    entry = _HookEntry(next(_ids), owner, handles, description)
    _active.setdefault(model, []).append(entry)
    return HookHandle(model, entry.handle_id, description)


def remove_hooks(model: nn.Module, which: Callable[[_HookEntry], bool]) -> int:
    """Remove the hook adapters for which `which(entry)` is true; returns how many were removed."""
    entries = _active.get(model, [])
    gone = [e for e in entries if which(e)]
    for entry in gone:
        for handle in entry.handles:
            handle.remove()
    remaining = [e for e in entries if not which(e)]
    if remaining:
        _active[model] = remaining
    else:
        _active.pop(model, None)
    return len(gone)


def applied_hooks(model: nn.Module) -> list[_HookEntry]:
    """The hook adapters currently on `model`, oldest first."""
    return list(_active.get(model, []))


class HookAdapter:
    """What the hook-based adapter kinds share: switching off, the context manager, and pushing to the Hub.

    A subclass implements `enable(model, **options) -> HookHandle`, `save_pretrained(folder, model_card=...)` and
    `model_card(repo_id)`.
    """

    commit_message = "Upload adapter"

    def enable(self, model: nn.Module, **options: Any) -> HookHandle:
        raise NotImplementedError

    def disable(self, model: nn.Module) -> int:
        """Switch off every application of this adapter on `model`; returns how many there were."""
        return remove_hooks(model, lambda entry: entry.owner is self)

    @contextlib.contextmanager
    def applied(self, model: nn.Module, **options: Any) -> Iterator[nn.Module]:
        """Context manager: on inside the block (options as for `enable`), off afterwards, also after an exception.

        The handle is acquired before the `try`, so a failing `enable` leaves no hook behind either.
        """
        handle = self.enable(model, **options)
        try:
            yield model
        finally:
            handle.remove()

    def is_applied(self, model: nn.Module) -> bool:
        """Whether this adapter is on for `model`."""
        return any(entry.owner is self for entry in applied_hooks(model))

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: bool | str | None = None, revision: str | None = None, create_pr: bool = False) -> Any:
        """Upload the adapter's files and our card to a Hub repo (a README on the Hub that you wrote is kept)."""
        from ..hub import push_folder_with_card

        return push_folder_with_card(
            save=lambda folder: self.save_pretrained(folder, model_card=False),  # type: ignore[attr-defined]
            card=self.model_card(repo_id=repo_id), repo_id=repo_id,  # type: ignore[attr-defined]
            commit_message=commit_message or self.commit_message, private=private, token=token, revision=revision,
            create_pr=create_pr,
        )


def body_of(model: nn.Module) -> nn.Module:
    """The model's body (`model.base_model`: the transformer without its head), or the model itself."""
    body = getattr(model, "base_model", None)
    return model if body is None else body


def hidden_size_of(model: nn.Module) -> int:
    """The width of the body's final hidden states, from the (text) config."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    size = getattr(config, "hidden_size", None)
    if not isinstance(size, int):
        raise AdapterCompatibilityError(
            f"Cannot tell the hidden size of {type(model).__name__}: its config has no integer `hidden_size`. "
            f"Representation adapters need a transformers model whose config names it."
        )
    return size


__all__ = ["HookAdapter", "HookHandle", "applied_hooks", "body_of", "hidden_size_of", "register_hooks", "remove_hooks"]
