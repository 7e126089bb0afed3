"""Checking a saved GRADIEND model's files before transformers reads them, and fetching them from the Hub.

A missing, truncated or mismatched checkpoint fails with an error naming the file and the base parameter, instead
of a shape error deep inside `from_pretrained`; only JSON and safetensors headers are read, nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._utils import read_safetensors_header
from .configuration_gradiend import GradiendConfig
from .errors import GradiendConfigError, GradiendLoadError

CONFIG_NAME = "config.json"
SAFETENSORS_SINGLE_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"


def download_checkpoint(repo_id: str, kwargs: dict[str, Any]) -> Path:
    """Fetch config and safetensors of a Hub repo (or find them in the HF cache when offline)."""
    from .hub import download_repo_files

    return download_repo_files(
        repo_id, [CONFIG_NAME, "*.safetensors", SAFETENSORS_INDEX_FILE], error_class=GradiendLoadError,
        what="a GRADIEND model", **{k: kwargs.get(k) for k in ("revision", "cache_dir", "token", "subfolder")},
        force_download=kwargs.get("force_download", False), local_files_only=kwargs.get("local_files_only", False),
    )


def verify_checkpoint(folder: str | os.PathLike) -> GradiendConfig:
    """Check that `folder` holds a complete GRADIEND checkpoint whose tensors match its config.

    Raises:
        GradiendLoadError: no config, not a GRADIEND config, a missing/truncated/corrupt shard, or a tensor whose
            shape disagrees with the config (the error names the file and the base parameter).
    """
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise GradiendLoadError(
            f"`{folder}` holds no GRADIEND model: `{CONFIG_NAME}` is missing. Point to a folder written by "
            f"`GradiendModel.save_pretrained` or a Hub repo pushed with `push_to_hub`."
        )
    from .untrusted_files import check_folder, read_config_json

    raw_config = read_config_json(config_path, what="GRADIEND model", error_class=GradiendLoadError)
    if raw_config.get("model_type") != GradiendConfig.model_type:
        raise GradiendLoadError(
            f"`{folder}` holds a `{raw_config.get('model_type')}` model, not a GRADIEND model "
            f"(expected model_type 'gradiend' in {CONFIG_NAME})."
        )
    from huggingface_hub.errors import StrictDataclassError

    try:
        config = GradiendConfig.from_dict(raw_config)
    except (GradiendConfigError, StrictDataclassError, TypeError, ValueError) as error:
        cause = error.__cause__ if isinstance(error.__cause__, GradiendConfigError) else error
        raise GradiendLoadError(f"`{config_path}` is not a valid GRADIEND config: {cause}") from error
    index_path = folder / SAFETENSORS_INDEX_FILE
    check_folder(folder, [CONFIG_NAME, SAFETENSORS_INDEX_FILE, SAFETENSORS_SINGLE_FILE], what="GRADIEND model",
                 error_class=GradiendLoadError)
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text()).get("weight_map", {})
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
            raise GradiendLoadError(f"`{index_path}` is not a valid safetensors index ({error}).") from error
        files = sorted(set(weight_map.values()))
        for name in files:
            if not isinstance(name, str) or "/" in name or "\\" in name or not name.endswith(".safetensors"):
                raise GradiendLoadError(f"`{index_path}` lists the shard {name!r}; shards must be safetensors files "
                                        f"in the same folder.")
        check_folder(folder, files, what="GRADIEND model", error_class=GradiendLoadError)
    elif (folder / SAFETENSORS_SINGLE_FILE).is_file():
        files = [SAFETENSORS_SINGLE_FILE]
    else:
        raise GradiendLoadError(
            f"`{folder}` has a GRADIEND config but no weights: neither `{SAFETENSORS_SINGLE_FILE}` nor "
            f"`{SAFETENSORS_INDEX_FILE}` exists (only safetensors are read, never pickled .bin files)."
        )
    expected = expected_tensor_shapes(config)
    seen: set[str] = set()
    for file_name in files:
        shard = folder / file_name
        if not shard.is_file():
            raise GradiendLoadError(f"Shard `{file_name}` listed in `{index_path}` is missing from `{folder}`.")
        for key, info in read_safetensors_header(shard, GradiendLoadError).items():
            if key == "__metadata__":
                continue
            seen.add(key)
            if key not in expected:
                raise GradiendLoadError(
                    f"`{shard}` holds tensor `{key}`, which a GRADIEND model with this config does not have."
                )
            param, shape = expected[key]
            if list(info["shape"]) != shape:
                raise GradiendLoadError(
                    f"`{shard}`: tensor `{key}` (for base parameter `{param}`) has shape {info['shape']}, but "
                    f"{CONFIG_NAME} says {shape}. The config and the weights do not belong together."
                )
    missing = sorted(set(expected) - seen)
    if missing:
        raise GradiendLoadError(
            f"`{folder}` lacks {len(missing)} tensor(s) the config calls for, e.g. `{missing[0]}` "
            f"(base parameter `{expected[missing[0]][0]}`). The checkpoint is incomplete."
        )
    return config


def expected_tensor_shapes(config: GradiendConfig) -> dict[str, tuple[str, list[int]]]:
    """State-dict key -> (base parameter it belongs to, shape) for a GRADIEND model with `config`."""
    latent = config.latent_size
    shapes: dict[str, tuple[str, list[int]]] = {"encoder.bias": ("(encoder bias)", [latent])}
    for i, (name, shape) in enumerate(zip(config.param_names, config.param_shapes)):
        shapes[f"encoder.weight_{i}"] = (name, [latent, *shape])
        shapes[f"decoder.weight_{i}"] = (name, [latent, *shape])
        shapes[f"decoder.bias_{i}"] = (name, list(shape))
    return shapes


__all__ = ["CONFIG_NAME", "SAFETENSORS_INDEX_FILE", "SAFETENSORS_SINGLE_FILE", "download_checkpoint",
           "expected_tensor_shapes", "verify_checkpoint"]
