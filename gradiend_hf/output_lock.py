"""One writer per output folder: a lock file next to the folder (`.NAME.lock`, held with `flock`, so a killed holder
releases it) makes a second process that writes the same folder fail with a clear error instead of interleaving its
files with the first; within one process the lock is re-entrant for its thread."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputBusyError

try:
    import fcntl
except ImportError:  # not POSIX: creating the lock file with O_EXCL is the lock (a killed holder leaves it behind)
    fcntl = None

_held_lock = threading.Lock()
_held: dict[str, list[Any]] = {}  # resolved folder -> [owning thread id, depth, fd, lock path]


def _lock_path(folder: Path) -> Path:
    return folder / ".gradiend.lock" if cannot_swap(folder) else folder.parent / f".{folder.name}.lock"


def cannot_swap(folder: Path) -> bool:
    """A mount point (a Docker volume), or a folder whose parent is read-only, cannot be replaced by a rename."""
    return folder.is_dir() and (os.path.ismount(folder) or not os.access(folder.parent, os.W_OK))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_lock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def _busy(folder: Path, lock_path: Path, what: str) -> OutputBusyError:
    try:
        holder = lock_path.read_text().split()[0]
    except (OSError, IndexError):
        holder = "unknown"
    return OutputBusyError(
        f"`{folder}` is being written by another process (pid {holder}, lock `{lock_path}`), so the {what} is not "
        f"written there now. Wait for that process to finish, or choose another folder."
    )


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, *, what: str = "output") -> Iterator[Path]:
    """Hold the write lock of `folder` (re-entrant within one thread; another process or thread gets an error).

    Raises:
        OutputBusyError: another process (or another thread of this one) holds the lock.
    """
    folder = Path(os.path.abspath(folder))
    key = str(folder)
    ident = threading.get_ident()
    with _held_lock:
        entry = _held.get(key)
        if entry is not None:
            if entry[0] != ident:
                raise OutputBusyError(f"`{folder}` is being written by another thread of this process; the {what} "
                                      f"is not written there now. Let that save finish first.")
            entry[1] += 1
    if entry is not None:
        try:
            yield folder
        finally:
            with _held_lock:
                entry[1] -= 1
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock_path = _lock_path(folder)
    fd = _acquire(folder, lock_path, what)
    with _held_lock:
        _held[key] = [ident, 1, fd, lock_path]
    try:
        yield folder
    finally:
        with _held_lock:
            _held.pop(key, None)
        with contextlib.suppress(OSError):
            lock_path.unlink()  # still holding the lock: a waiting process re-checks the inode and retries
        os.close(fd)


def _acquire(folder: Path, lock_path: Path, what: str) -> int:
    for _ in range(50):
        flags = os.O_RDWR | os.O_CREAT | (0 if fcntl is not None else os.O_EXCL)
        try:
            fd = os.open(lock_path, flags, 0o644)
        except FileExistsError:
            raise _busy(folder, lock_path, what) from None
        if not _try_lock(fd):
            os.close(fd)
            raise _busy(folder, lock_path, what)
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder removed this file while we waited for it: lock the new one
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
    raise _busy(folder, lock_path, what)


__all__ = ["cannot_swap", "output_lock", "pid_alive"]
