"""Fingerprints of base weights: which weights an adapter was made for, compared without any adapter applied."""

from __future__ import annotations

import hashlib
import warnings
import weakref
from collections.abc import Sequence

import torch
from torch import nn

from .patching import original_content_tokens, original_tensors

FINGERPRINT_PREFIX = "bf16-sha256:"
"""Fingerprints hash the selected weights rounded to bfloat16, so an fp32 and a bf16 copy of a model agree."""

_fingerprint_cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple, str]] = weakref.WeakKeyDictionary()


def fingerprint(tensors: Sequence[torch.Tensor]) -> str:
    """A short hash of weights, rounded to bfloat16 first so that the dtype of the copy does not matter."""
    digest = hashlib.sha256()
    for tensor in tensors:
        rounded = tensor.detach().to(device="cpu", dtype=torch.bfloat16).contiguous()
        digest.update(str(list(rounded.shape)).encode())
        digest.update(rounded.view(torch.int16).numpy().tobytes())
    return FINGERPRINT_PREFIX + digest.hexdigest()[:32]


def base_fingerprint(base_model: nn.Module, names: Sequence[str]) -> str:
    """Fingerprint of the base weights called `names`, as they are without any delta adapter applied.

    Cached per model and content token (`content_tokens.content_token`): toggling adapters on and off restores the
    original values and their token, so it does not rehash; a real change of the weights (an optimiser step,
    `load_state_dict`) gives new tokens and a new hash.
    """
    key = (tuple(names), original_content_tokens(base_model, names))
    cache = _fingerprint_cache.setdefault(base_model, {})
    if key not in cache:
        cache.clear()
        cache[key] = fingerprint(original_tensors(base_model, names))
    return cache[key]


def check_fingerprint(base_model: nn.Module, names: Sequence[str], recorded: str | None, *,
                      what: str = "This adapter", recorded_base: str | None = None) -> bool:
    """Warn (never refuse) when the base weights differ from those the adapter was made for."""
    if not recorded:
        return True
    found = base_fingerprint(base_model, names)
    if found == recorded:
        return True
    warnings.warn(
        f"{what} was made for other weights of these parameters (fingerprint {recorded}, found {found}; "
        f"base recorded: {recorded_base!r}). It applies, but its effect was measured on the other weights: "
        f"another revision, a fine-tuned sibling or an fp16 copy (fingerprints compare weights rounded to bf16).",
        stacklevel=3,
    )
    return False


__all__ = ["FINGERPRINT_PREFIX", "base_fingerprint", "check_fingerprint", "fingerprint"]
