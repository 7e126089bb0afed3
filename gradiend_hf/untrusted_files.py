"""Checks on folders and Hub repositories someone else wrote, before anything in them is read.

Loaders here read only JSON and safetensors, but a repository can still try to make them (or the tools a user runs
next) execute or unpickle something, or read outside the folder: pickled weights next to or instead of safetensors,
a config pointing transformers at code in the repository (`auto_map`), file names or symlinks leading out of the
folder. Each is refused with one error naming the file; the safetensors headers are checked separately
(`_utils.read_safetensors_header`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
"""File types that are (or may be) Python pickles: refused wherever gradiend_hf loads from."""
REMOTE_CODE_KEYS = ("auto_map",)
"""Config keys that make transformers import code shipped in the repository."""


def _is_pickle(name: str) -> bool:
    return name.lower().endswith(PICKLE_SUFFIXES)


def check_repo_listing(names: Iterable[str], *, source: str, what: str, error_class: type[Exception]) -> None:
    """Refuse a repository whose file list holds pickles or names that lead out of its folder.

    Raises:
        error_class: naming the first such file.
    """
    for name in names:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\\" in name or name.startswith("~"):
            raise error_class(f"`{source}` lists a file named {name!r}, which points outside the repository; it is "
                              f"not a {what} gradiend_hf will download. Nothing was downloaded.")
        if _is_pickle(name):
            raise error_class(
                f"`{source}` holds `{name}`, a pickle file that can run code when loaded; gradiend_hf reads only "
                f"safetensors and JSON (never pickled files) and refuses repositories that ship pickles next to or "
                f"instead of them. "
                f"Nothing was downloaded or unpickled; ask the author for a safetensors-only {what}."
            )


def _root_of(folder: Path) -> Path:
    """The folder symlinks may point into: the folder itself, or for a Hub cache snapshot its repository cache
    (`models--a--b/`, whose `blobs/` the snapshot's files link to)."""
    if folder.parent.name == "snapshots":
        return folder.parent.parent
    return folder


def check_folder(folder: str | os.PathLike, files: Iterable[str], *, what: str,
                 error_class: type[Exception]) -> None:
    """Refuse a folder that holds pickles, or whose `files` (names inside it) are symlinks leading out of it.

    Raises:
        error_class: naming the file.
    """
    folder = Path(folder)
    for entry in folder.iterdir() if folder.is_dir() else ():
        if _is_pickle(entry.name):
            raise error_class(
                f"`{folder}` holds `{entry.name}`, a pickle file that can run code when loaded; gradiend_hf reads "
                f"only safetensors and JSON (never pickled files) and refuses folders that ship pickles next to or "
                f"instead of them. Nothing was unpickled; remove the file (or ask for a safetensors-only {what})."
            )
    root = os.path.realpath(_root_of(folder))
    for name in files:
        path = folder / name
        if not os.path.lexists(path):
            continue
        real = os.path.realpath(path)
        if os.path.commonpath([root, real]) != root:
            raise error_class(f"`{path}` is a link to `{real}`, outside the {what}'s folder; it is not read. Copy "
                              f"the real file into the folder if you trust it.")


def check_param_modules(modules: object, names: Iterable[str], *, what: str, error_class: type[Exception]) -> None:
    """Refuse module records (`{param name: {"module": m, "param": leaf, ...}}`) that name parameters outside the
    selected set, or that place a parameter in another module than its name says (an export would write there)."""
    if modules is None:
        return
    if not isinstance(modules, dict):
        raise error_class(f"The {what}'s module records must be an object keyed by parameter name, got "
                          f"{type(modules).__name__}.")
    selected = set(names)
    for name, info in modules.items():
        if name not in selected:
            raise error_class(f"The {what} records a module for `{name}`, which is not one of its parameters; the "
                              f"records and `param_names` do not belong together.")
        found = (".".join(str(part) for part in (info.get("module"), info.get("param")) if part)
                 if isinstance(info, dict) else repr(info))
        if found != name:
            raise error_class(f"The {what} places parameter `{name}` in `{found}`; a parameter's module must be the "
                              f"prefix of its name. The config is corrupt or was edited to write elsewhere.")


def read_config_json(path: str | os.PathLike, *, what: str, error_class: type[Exception]) -> dict:
    """A config file someone else wrote: valid JSON, an object, and no request for remote code.

    Raises:
        error_class: naming the file and what is wrong.
    """
    import json

    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise error_class(f"`{path}` is not valid JSON ({error}).") from error
    if not isinstance(config, dict):
        raise error_class(f"`{path}` is not a JSON object, so not a {what} config.")
    check_config_dict(config, path=path, what=what, error_class=error_class)
    return config


def check_config_dict(config: dict, *, path: str | os.PathLike, what: str, error_class: type[Exception]) -> None:
    """Refuse a config that asks for code from the repository (`auto_map`)."""
    for key in REMOTE_CODE_KEYS:
        if key in config:
            raise error_class(
                f"`{path}` has `{key}`, which points transformers at code shipped with the repository; a {what} "
                f"never needs remote code, so it is refused and nothing was imported or executed."
            )


__all__ = [
    "PICKLE_SUFFIXES",
    "REMOTE_CODE_KEYS",
    "check_config_dict",
    "check_folder",
    "check_param_modules",
    "check_repo_listing",
    "read_config_json",
]
