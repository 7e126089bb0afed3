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


_SAFETENSORS_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2,
    "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}
MAX_SAFETENSORS_HEADER = 100_000_000


def read_safetensors_header(path: Path, error_class: type[Exception]) -> dict[str, Any]:
    """The JSON header of a safetensors file, after checking that it describes the file exactly.

    Lets loaders compare names and shapes with a config before reading any tensor, and refuse a truncated, corrupt
    or hostile file (huge sizes, overlapping or gapped offsets, unknown dtypes) before the safetensors reader
    allocates anything. Raises `error_class` with a message saying what is wrong and what to do.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise error_class(f"`{path}` is truncated: it has {size} bytes, too few for a safetensors header.")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise error_class(
                f"`{path}` is corrupt: its header claims {header_len} bytes but the file has {size}. Re-save or "
                f"re-download it."
            )
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise error_class(f"`{path}` is corrupt: its safetensors header is not valid JSON ({error}).") from error
    if not isinstance(header, dict):
        raise error_class(f"`{path}` is corrupt: its safetensors header is not a JSON object.")
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise error_class(f"`{path}` is corrupt: `__metadata__` must map strings to strings.")
            continue
        spans.append((*_tensor_span(path, key, info, error_class), key))
    spans.sort()
    end = 0
    for begin, stop, key in spans:
        if begin != end:
            what = "overlaps the tensor before it" if begin < end else "leaves a gap before it"
            raise error_class(f"`{path}` is corrupt or hostile: the data of tensor `{key}` {what} (offset {begin}, "
                              f"expected {end}). Re-save or re-download it; do not load it with other tools.")
        end = stop
    if 8 + header_len + end != size:
        raise error_class(
            f"`{path}` is truncated or corrupt: its header describes {8 + header_len + end} bytes but the file has "
            f"{size}. Re-save or re-download it."
        )
    return header


def _tensor_span(path: Path, key: str, info: Any, error_class: type[Exception]) -> tuple[int, int]:
    """(begin, end) of one tensor's bytes, after checking its dtype, shape and size against each other."""
    if not isinstance(info, dict):
        raise error_class(f"`{path}` is corrupt: the entry of tensor `{key}` is not an object.")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in _SAFETENSORS_ITEMSIZE:
        raise error_class(f"`{path}`: tensor `{key}` has an unknown dtype {dtype!r}; expected one of "
                          f"{sorted(_SAFETENSORS_ITEMSIZE)}.")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise error_class(f"`{path}`: tensor `{key}` has an invalid shape {shape!r}.")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise error_class(f"`{path}`: tensor `{key}` has invalid data offsets {offsets!r}.")
    numel = 1
    for dim in shape:
        numel *= dim
    if numel * _SAFETENSORS_ITEMSIZE[dtype] != offsets[1] - offsets[0]:
        raise error_class(
            f"`{path}` is corrupt or hostile: tensor `{key}` of shape {shape} ({dtype}) needs "
            f"{numel * _SAFETENSORS_ITEMSIZE[dtype]} bytes but its offsets span {offsets[1] - offsets[0]}."
        )
    return offsets[0], offsets[1]


def empty_output_dir(folder: str | Path, *, overwrite: bool, what: str, remove: bool = True) -> Path:
    """`folder` as a Path, refusing to write into it when it holds files, unless `overwrite`.

    With `overwrite`, the folder is emptied first (`remove=True`) or only checked (`remove=False`, for writers that
    replace it atomically at the end) — and only if everything in it is gradiend_hf's own output and it is not the
    working directory or a folder above it (see `atomic_io.check_output_dir`). The error names the folder and the
    way out.
    """
    from .atomic_io import check_output_dir, remove_our_outputs

    folder = check_output_dir(folder, overwrite=overwrite, what=what)
    if remove and folder.is_dir() and any(folder.iterdir()):
        remove_our_outputs(folder, what=what)
    return folder


def save_figure(figure: Any, png_path: str | Path, *, title: str | None = None, dpi: int = 120) -> Path:
    """Title, tighten, write and close a matplotlib figure (closed, so long runs do not pile figures up)."""
    import matplotlib.pyplot as plt

    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(png_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path

