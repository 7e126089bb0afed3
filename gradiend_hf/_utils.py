"""Small helpers shared by several modules: dtype names, file hashing, safetensors headers, output folders."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None, default: torch.dtype = torch.float32) -> torch.dtype:
    """Turn `"bf16"`, `"bfloat16"` or a `torch.dtype` into a floating `torch.dtype`."""
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"Expected a floating dtype, got {dtype}.")
        return dtype
    key = str(dtype).removeprefix("torch.").lower()
    if key not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {sorted(set(_DTYPES))}.")
    return _DTYPES[key]


def sha256_file(path: str | Path, chunk_size: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks so that gigabyte files need no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def read_safetensors_header(path: Path, error_class: type[Exception]) -> dict[str, Any]:
    """The JSON header of a safetensors file, after checking that the file is as long as the header says.

    Lets loaders compare names and shapes with a config before reading any tensor, and name the file when it is
    truncated or corrupt. Raises `error_class` with a message saying what is wrong and what to do.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise error_class(f"`{path}` is truncated: it has {size} bytes, too few for a safetensors header.")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(size - 8, 100_000_000):
            raise error_class(
                f"`{path}` is corrupt: its header claims {header_len} bytes but the file has {size}. Re-save or "
                f"re-download it."
            )
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise error_class(f"`{path}` is corrupt: its safetensors header is not valid JSON ({error}).") from error
    end = max((info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        raise error_class(
            f"`{path}` is truncated or corrupt: its header describes {8 + header_len + end} bytes but the file has "
            f"{size}. Re-save or re-download it."
        )
    return header


def empty_output_dir(folder: str | Path, *, overwrite: bool, what: str) -> Path:
    """`folder` as a Path, refusing to write into it when it holds files, unless `overwrite` (then it is emptied).

    Nothing a user saved is written over silently: the error names the folder and the way out.
    """
    import shutil

    from .errors import OutputExistsError

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"`{folder}` exists and is not empty; the {what} is not written over it. Choose another folder, or "
                f"pass overwrite=True (CLI: --overwrite) to replace it."
            )
        shutil.rmtree(folder)
    return folder
