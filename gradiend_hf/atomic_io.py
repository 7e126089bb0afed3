"""Crash-safe writes: a file or a folder appears complete or not at all, and only one writer holds a folder.

A save that is killed half-way (SIGKILL, power cut, full disk) must leave the previous save loadable. Files are
written to a hidden temporary name next to their target, flushed to disk and renamed over it (a rename within one
folder is atomic). Folders are staged as a hidden sibling and swapped into place in one `renameat2(RENAME_EXCHANGE)`
call (Linux); entries of the old folder that the new save does not write (a training log, a README you wrote) are
hard-linked into the staged folder first, so they survive the swap. Where the exchange is not available, the old
folder is renamed aside and back; that leaves a window of two renames, which the next save repairs. A folder that
cannot be renamed at all (a mount point such as a Docker volume, or one whose parent is read-only) gets its files
replaced one by one, each atomically, with a warning saying so.

One writer per folder: `output_lock` (its own module) makes a second
process that writes the same folder fail with a clear error instead of interleaving its files with the first.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import OutputExistsError
from .output_lock import cannot_swap, output_lock, pid_alive

PAUSE_ENV = "GRADIEND_TEST_PAUSE"
"""Test hook: `POINT[:NAME][@N]` makes the N-th write reaching POINT (for a target whose name contains NAME) touch
the file named by `GRADIEND_TEST_PAUSE_FILE` and sleep, so that a test can kill the process at that moment. Points:
`write` (half of a file's bytes written), `rename` (a file complete, before its rename), `staged` (a folder complete,
before the swap), `swapped` (after the swap, before the old folder is removed)."""
PAUSE_FILE_ENV = "GRADIEND_TEST_PAUSE_FILE"

MAX_KEPT_ENTRIES = 10_000
"""A save into a folder keeps (hard-links) at most this many files it does not write itself."""

OUR_OUTPUTS = (
    # GRADIEND models (transformers' save_pretrained) and training runs
    "config.json", "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
    "generation_config.json", "training_log.jsonl", "training_curve.png", "trainer_state.json",
    "optimizer.safetensors", "results.json", "shard-*-of-*.safetensors",
    # delta adapters, PEFT exports and merged models (with their tokenizer)
    "adapter_config.json", "adapter_model.safetensors", "export_report.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json",
    "vocab.txt", "merges.txt", "added_tokens.json",
    # evaluation, search, benchmarks and the demo
    "encoder_report.json", "encoder_h_distribution.png", "search.json", "search.csv", "search_heatmap.png",
    "search_test.json", "chosen_point_test.json", "benchmarks.md", "benchmarks.png", "demo_state.json",
    "*.examples.safetensors", "*paired.json",
    "report.md",
    # our own temporary names, and locks
    ".*.tmp-*", ".*.staging-*", ".*.old-*", ".*.lock", ".*.shards",
)
"""Names gradiend_hf writes. `--overwrite` replaces a folder only when everything in it is one of these (a README
only with our card marker, a JSON file also when it is a benchmark report), so it never removes a user's file."""

_pause_counts: dict[str, int] = {}


def _pause(point: str, name: str) -> None:
    """The test hook of `PAUSE_ENV` (does nothing unless the variable is set)."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return
    spec, _, nth = wanted.partition("@")
    want_point, _, want_name = spec.partition(":")
    if want_point != point or want_name not in name:
        return
    _pause_counts[spec] = _pause_counts.get(spec, 0) + 1
    if _pause_counts[spec] != int(nth or 1):
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        Path(marker).write_text(f"{os.getpid()} {point} {name}\n")
    while True:  # the test kills the process here
        time.sleep(60)


# -- files ---------------------------------------------------------------------------------------------------------
def _temporary_name(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` fills a temporary sibling of `path`, which then replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path.parent, path.name)
    tmp = _temporary_name(path, "tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _pause("rename", path.name)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` so that `path` holds either its old content or all of `data`, never a mix."""
    path = Path(path)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            half = len(data) // 2
            handle.write(data[:half])
            handle.flush()
            _pause("write", path.name)
            handle.write(data[half:])

    return _atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, **dumps_kwargs: Any) -> Path:
    """Write `data` as JSON (indented unless told otherwise), atomically."""
    dumps_kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(data, **dumps_kwargs) + "\n")


def atomic_save_tensors(tensors: Mapping[str, Any], path: str | os.PathLike,
                        metadata: Mapping[str, str] | None = None) -> Path:
    """`safetensors.torch.save_file`, atomically (tensors are moved to the CPU and made contiguous).

    The file is written straight from the tensors' memory: building it as bytes first would hold a second copy of a
    checkpoint (9n numbers for a GRADIEND and its AdamW state) at the peak.
    """
    from safetensors.torch import save_file

    path = Path(path)
    cpu = {key: tensor.detach().contiguous().cpu() for key, tensor in tensors.items()}

    def write(tmp: Path) -> None:
        save_file(cpu, tmp, metadata=dict(metadata) if metadata else None)
        _pause("write", path.name)  # written but not in place: a process killed here leaves `path` as it was

    return _atomic_write(path, write)


# -- folders -------------------------------------------------------------------------------------------------------
def _renameat2_exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one system call; False where the platform or file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"Could not swap `{first}` and `{second}`: {os.strerror(code)}")


def _remove_stale(parent: Path, name: str) -> None:
    """Remove temporary files and folders that a killed writer of `parent/name` left, and undo a half swap."""
    if not parent.is_dir():
        return
    target = parent / name
    for entry in parent.glob(f".{_glob_escape(name)}.*-*"):
        kind, _, rest = entry.name[len(name) + 2:].partition("-")
        if kind not in ("tmp", "staging", "old"):
            continue
        pid = rest.split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        if kind == "old" and not target.exists():
            entry.rename(target)  # killed between the two renames of the fallback swap: the old save comes back
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _glob_escape(name: str) -> str:
    """`name` with glob wildcards escaped (folder names may contain brackets)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _link_tree(source: Path, destination: Path, budget: list[int]) -> None:
    """Hard-link `source` (a file, link or folder) to `destination`; copies where links are not possible."""
    budget[0] -= 1
    if budget[0] < 0:
        raise OutputExistsError(
            f"The folder holds more than {MAX_KEPT_ENTRIES} files that this save does not write, which would all be "
            f"linked into the new version; save into a dedicated folder instead."
        )
    if source.is_symlink():
        os.symlink(os.readlink(source), destination)
    elif source.is_dir():
        destination.mkdir()
        for child in source.iterdir():
            _link_tree(child, destination / child.name, budget)
    else:
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)


def refuse_working_directory(folder: Path, what: str) -> None:
    """Refuse to replace or empty the current working directory or a folder above it."""
    real = Path(os.path.realpath(folder))
    cwd = Path(os.path.realpath(os.getcwd()))
    if real == cwd or real in cwd.parents:
        raise OutputExistsError(
            f"`{folder}` is the working directory or a folder above it; the {what} is never written over it (that "
            f"would replace or remove the folder you are in). Choose a subfolder, e.g. `{Path(folder) / 'out'}`."
        )


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike, *, what: str, replace: bool = False,
                  stale: tuple[str, ...] = ()) -> Iterator[Path]:
    """Stage the new content of `folder` in a hidden sibling and swap it into place when the block succeeds.

    With `replace=False` (a `save_pretrained`), entries of the existing folder that the block does not write are
    kept, except those matching a `stale` pattern (e.g. weight shards of an earlier save, which a loader would mix
    with the new ones); with `replace=True` (an `--overwrite`), the folder ends up holding only what the block
    wrote. If the block raises, or the process dies, `folder` is left exactly as it was. The folder's lock is held
    throughout.

    Yields:
        The staging folder to write into.

    Raises:
        OutputBusyError: another process is writing `folder`.
        OutputExistsError: `folder` is the working directory or above it, or is not a folder.
    """
    folder = Path(folder)
    if folder.is_symlink():  # write where the link points, and keep the link
        folder = Path(os.path.realpath(folder))
    folder = Path(os.path.abspath(folder))
    refuse_working_directory(folder, what)
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"`{folder}` is a file, not a folder; the {what} needs a folder. Choose another path.")
    in_place = cannot_swap(folder)
    with output_lock(folder, what=what):
        if in_place:
            warnings.warn(
                f"`{folder}` is a mount point (or its parent is read-only), so it cannot be swapped as a whole: the "
                f"{what}'s files replace the old ones one by one, each atomically, and a save killed half-way can "
                f"leave a mix of old and new files. Save into a subfolder for all-or-nothing saves.", stacklevel=3)
            _remove_stale(folder, "gradiend")
            staging = _temporary_name(folder / "gradiend", "staging")
        else:
            _remove_stale(folder.parent, folder.name)
            staging = _temporary_name(folder, "staging")
        staging.mkdir(parents=True)
        try:
            yield staging
            if in_place:
                _replace_entries(staging, folder, replace)
            else:
                if folder.exists() and not replace:
                    budget = [MAX_KEPT_ENTRIES]
                    for entry in folder.iterdir():
                        if any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in stale):
                            continue
                        if not os.path.lexists(staging / entry.name):
                            _link_tree(entry, staging / entry.name, budget)
                _fsync_dir(staging)
                _pause("staged", folder.name)
                _swap_into_place(staging, folder)
                _pause("swapped", folder.name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(staging, ignore_errors=True)  # now the old version (or nothing)
        _fsync_dir(folder.parent)


def _replace_entries(staging: Path, folder: Path, replace: bool) -> None:
    """The fallback of `atomic_folder` for folders that cannot be swapped: move each staged entry into place."""
    written = set()
    for entry in sorted(staging.iterdir()):
        target = folder / entry.name
        written.add(entry.name)
        if entry.is_dir() and target.is_dir() and not target.is_symlink():
            old = _temporary_name(target, "old")
            os.rename(target, old)
            os.rename(entry, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(entry, target)
    if replace:
        for entry in folder.iterdir():
            if entry.name in written or entry.name.startswith(".gradiend."):
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    _fsync_dir(folder)


def _swap_into_place(staging: Path, folder: Path) -> None:
    """Make `staging` be `folder`; afterwards `staging` holds the old folder (or does not exist)."""
    if not folder.exists():
        os.rename(staging, folder)
        return
    if _renameat2_exchange(staging, folder):
        return
    old = _temporary_name(folder, "old")
    os.rename(folder, old)
    os.rename(staging, folder)
    os.rename(old, staging)


# -- overwriting -----------------------------------------------------------------------------------------------------
def _is_ours(path: Path) -> bool:
    from .hub import CARD_MARKER

    if path.is_symlink():
        return False
    if path.is_dir():
        return all(_is_ours(child) for child in path.iterdir())
    name = path.name
    if name == "README.md":
        try:
            return CARD_MARKER in path.read_text(encoding="utf-8", errors="replace")[:4096]
        except OSError:
            return False
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in OUR_OUTPUTS):
        return True
    if name.endswith(".json") and path.stat().st_size < 50_000_000:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(data, dict) and {"version", "model", "lm_kind", "results"} <= set(data)  # a benchmark
    return False


def foreign_entries(folder: str | os.PathLike) -> list[Path]:
    """Entries of `folder` (searched recursively) that gradiend_hf did not write."""
    out: list[Path] = []
    for entry in sorted(Path(folder).iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            inner = foreign_entries(entry)
            out.extend(inner)
        elif not _is_ours(entry):
            out.append(entry)
    return out


def check_output_dir(folder: str | os.PathLike, *, overwrite: bool, what: str) -> Path:
    """`folder` as a Path, if the `what` may be written there: it is absent or empty, or `overwrite` is set and
    everything in it is gradiend_hf's own output (never the working directory or a folder above it).

    Raises:
        OutputExistsError: the folder holds files and `overwrite` is not set, or it holds files gradiend_hf did not
            write, or it is the working directory or above it.
    """
    folder = Path(folder)
    if not folder.exists():
        return folder
    if not folder.is_dir():
        raise OutputExistsError(f"`{folder}` is a file, not a folder; the {what} needs a folder. Choose another path.")
    if not any(folder.iterdir()):
        return folder
    if not overwrite:
        raise OutputExistsError(
            f"`{folder}` exists and is not empty; the {what} is not written over it. Choose another folder, or "
            f"pass overwrite=True (CLI: --overwrite) to replace it."
        )
    refuse_working_directory(folder, what)
    foreign = foreign_entries(folder)
    if foreign:
        shown = ", ".join(f"`{p.relative_to(folder)}`" for p in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise OutputExistsError(
            f"`{folder}` holds {shown}{more}, which gradiend_hf did not write, so --overwrite does not replace it "
            f"(it only replaces gradiend_hf's own outputs). Move those files, or choose another folder."
        )
    return folder


def remove_our_outputs(folder: str | os.PathLike, *, what: str) -> None:
    """Empty `folder` after `check_output_dir(..., overwrite=True)` allowed it (the folder itself stays)."""
    folder = check_output_dir(folder, overwrite=True, what=what)
    if not folder.is_dir():
        return
    with output_lock(folder, what=what):
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


__all__ = [
    "MAX_KEPT_ENTRIES",
    "OUR_OUTPUTS",
    "PAUSE_ENV",
    "PAUSE_FILE_ENV",
    "atomic_folder",
    "atomic_save_tensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_dir",
    "foreign_entries",
    "output_lock",
    "refuse_working_directory",
    "remove_our_outputs",
]
