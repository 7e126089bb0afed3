"""Content tokens: which tensors hold the same values, known without hashing them.

A fingerprint cache keyed by tensor version rehashes after every adapter toggle (each restore bumps the version),
and a registry that compares versions would think a weight restored bit for bit had been changed. A token names the
values a tensor holds: it stays while PyTorch's version counter (and the storage) of the tensor stay, and writers
that put known values back (`patching`) hand the old token back to the tensor.
"""

from __future__ import annotations

import threading
from itertools import count

import torch
from torch.utils.weak import WeakIdKeyDictionary

_lock = threading.Lock()
_token_ids = count(1)
_tokens: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> (data_ptr, version, token)


def _state_of(tensor: torch.Tensor) -> tuple[int, int]:
    return tensor.data_ptr(), tensor._version


def content_token(tensor: torch.Tensor) -> int:
    """A number that stays the same while `tensor`'s values do (it changes with any in-place change or `.data`
    swap that PyTorch's version counter sees; writes through `.data` are invisible to it)."""
    with _lock:
        record = _tokens.get(tensor)
        if record is not None and record[:2] == _state_of(tensor):
            return record[2]
        token = next(_token_ids)
        _tokens[tensor] = (*_state_of(tensor), token)
        return token


def retoken(tensor: torch.Tensor, token: int) -> None:
    """Record that `tensor` (just written) holds the values known under `token` again."""
    with _lock:
        _tokens[tensor] = (*_state_of(tensor), token)


def new_token() -> int:
    """A token no tensor has had yet (for values computed anew)."""
    return next(_token_ids)


__all__ = ["content_token", "new_token", "retoken"]
