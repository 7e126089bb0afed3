"""Files shared by the hook-based adapter kinds: strict JSON configs, whole-folder writes, local-or-Hub folders.

Representation and SelfDebias adapters save like delta adapters (`adapter_config.json`, optional
`adapter_model.safetensors`, our card); the plumbing lives here once so that each kind keeps only its own checks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import AdapterLoadError, GradiendConfigError
from .configuration import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, config_from_dict
from .fingerprints import base_fingerprint

MODEL_CARD_NAME = "README.md"
ADAPTER_LOADERS = {
    "gradiend_delta": "gradiend_hf.DeltaAdapter.from_pretrained",
    "gradiend_representation": "gradiend_hf.RepresentationAdapter.from_pretrained",
    "gradiend_self_debias": "gradiend_hf.SelfDebiasAdapter.from_pretrained",
}
"""Every adapter type gradiend_hf writes, with the loader that reads it (`gradiend_hf.load_adapter` reads all)."""

ConfigT = TypeVar("ConfigT")


def read_adapter_config(folder: str | Path, cls: type[ConfigT], *, adapter_type: str, what: str) -> ConfigT:
    """Read `adapter_config.json` of adapter type `adapter_type`; another type gets an error naming its loader."""
    path = Path(folder) / ADAPTER_CONFIG_NAME
    if not path.is_file():
        raise AdapterLoadError(f"`{folder}` holds no {what}: `{ADAPTER_CONFIG_NAME}` is missing. Point to a folder "
                               f"written by its `save_pretrained`.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdapterLoadError(f"`{path}` is not valid JSON ({error}).") from error
    found = data.get("adapter_type") if isinstance(data, dict) else None
    if found != adapter_type:
        if found in ADAPTER_LOADERS:
            advice = f"it is a `{found}` adapter: load it with {ADAPTER_LOADERS[found]} (or gradiend_hf.load_adapter)"
        elif isinstance(data, dict) and data.get("peft_type"):
            advice = f"it is a PEFT `{data['peft_type']}` adapter: load it with `peft.PeftModel.from_pretrained`"
        else:
            advice = f"it is not a gradiend_hf adapter (adapter_type {found!r})"
        raise AdapterLoadError(f"`{folder}` cannot be loaded as a {what}: {advice}.")
    try:
        return config_from_dict(cls, data)
    except (GradiendConfigError, TypeError) as error:
        raise AdapterLoadError(f"`{path}` is not a valid {what} config: {error}") from error


def adapter_folder(path_or_repo: str | os.PathLike, files: list[str], *, what: str, **hub_options: Any) -> Path:
    """The local folder of an adapter: `path_or_repo` itself, or its Hub snapshot (offline from the HF cache too)."""
    source = str(path_or_repo)
    if os.path.isdir(source):
        return Path(source)
    from ..hub import download_repo_files

    return download_repo_files(source, files, error_class=AdapterLoadError, what=what, **hub_options)


def write_adapter_folder(save_directory: str | os.PathLike, *, config_json: str,
                         tensors: Mapping[str, torch.Tensor] | None, adapter_type: str,
                         card: Callable[[], Any] | None) -> Path:
    """Write weights (if any), config and card; a README without our marker (the user's) is kept.

    A new folder is written under a temporary name and renamed when complete, and files in an existing folder are
    each written to a temporary name first, so a crash never leaves a half-written adapter behind.
    """
    final = Path(save_directory)
    folder = final if final.exists() else final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if folder != final and folder.exists():
        shutil.rmtree(folder)
    try:
        _write_files(folder, config_json, tensors, adapter_type, card)
        if folder != final:
            folder.replace(final)
    except BaseException:
        if folder != final:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return final


def _write_files(folder: Path, config_json: str, tensors: Mapping[str, torch.Tensor] | None, adapter_type: str,
                 card: Callable[[], Any] | None) -> None:
    from ..hub import CARD_MARKER

    folder.mkdir(parents=True, exist_ok=True)
    if tensors is not None:
        tmp = folder / (ADAPTER_WEIGHTS_NAME + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": "pt", "adapter_type": adapter_type})
        tmp.replace(folder / ADAPTER_WEIGHTS_NAME)
    tmp_config = folder / (ADAPTER_CONFIG_NAME + ".tmp")
    tmp_config.write_text(config_json, encoding="utf-8")
    tmp_config.replace(folder / ADAPTER_CONFIG_NAME)
    card_path = folder / MODEL_CARD_NAME
    ours = not card_path.exists() or CARD_MARKER in card_path.read_text(encoding="utf-8", errors="replace")
    if card is not None and ours:
        card().save(card_path)


def whole_model_fingerprint(model: nn.Module) -> str:
    """Fingerprint of every parameter of `model` as it is without delta adapters (hook adapters read them all)."""
    return base_fingerprint(model, [name for name, _ in model.named_parameters()])


def render_card(template: str, config: Any, *, repo_id: str | None, tags: list[str]) -> Any:
    """Our card for a hook adapter, citing an embedded base by its upstream Hub id and licence."""
    from ..hub import render_hook_adapter_card
    from ..zoo import EMBEDDED_MODELS, hub_id_for

    base = config.base_model_name_or_path
    embedded = EMBEDDED_MODELS.get(base or "")
    return render_hook_adapter_card(template, config, repo_id=repo_id, base_model_id=hub_id_for(base),
                                    license=embedded.license if embedded else None,
                                    license_note=embedded.license_note if embedded else None, tags=tags)


def config_json(config: Any) -> str:
    """Sorted, indented JSON of a config dataclass (stable diffs between saves)."""
    return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True) + "\n"


__all__ = [
    "ADAPTER_LOADERS",
    "MODEL_CARD_NAME",
    "adapter_folder",
    "config_json",
    "read_adapter_config",
    "render_card",
    "whole_model_fingerprint",
    "write_adapter_folder",
]
