"""`load_adapter`: one loader for every adapter kind gradiend_hf writes, chosen by the config's `adapter_type`."""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import AdapterLoadError
from ._files import ADAPTER_LOADERS, adapter_folder
from .configuration import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from .delta_adapter import DeltaAdapter
from .representation_adapter import RepresentationAdapter
from .self_debias_adapter import SelfDebiasAdapter

Adapter = DeltaAdapter | RepresentationAdapter | SelfDebiasAdapter
"""Any adapter kind: a weight update, an affine map of hidden states, or a rescaled output distribution."""

_CLASSES: dict[str, type] = {
    "gradiend_delta": DeltaAdapter,
    "gradiend_representation": RepresentationAdapter,
    "gradiend_self_debias": SelfDebiasAdapter,
}


def load_adapter(path_or_repo: str | os.PathLike, **hub_options: Any) -> Adapter:
    """Load a delta, representation or SelfDebias adapter from a folder or Hub repo, whichever it holds."""
    folder = adapter_folder(path_or_repo, [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME], what="an adapter",
                            **hub_options)
    path = folder / ADAPTER_CONFIG_NAME
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("adapter_type")
    except (OSError, ValueError, AttributeError) as error:
        raise AdapterLoadError(f"`{path}` is missing or not a JSON object ({type(error).__name__}); point to a "
                               f"folder written by an adapter's `save_pretrained`.") from error
    if kind not in _CLASSES:
        raise AdapterLoadError(f"`{folder}` holds adapter type {kind!r}; expected one of {sorted(ADAPTER_LOADERS)}.")
    adapter = _CLASSES[kind].from_pretrained(folder)
    adapter.name_or_path = str(path_or_repo)
    return adapter


__all__ = ["Adapter", "load_adapter"]
