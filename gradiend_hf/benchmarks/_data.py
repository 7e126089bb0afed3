"""Reading the bundled benchmark files, deterministic balanced subsets, and bias-type checks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from gradiend_hf.errors import BenchmarkError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

T = TypeVar("T")

DATA_PACKAGE = "gradiend_hf.benchmarks.data"


def data_file(name: str) -> Traversable:
    """A shipped file (or folder) of `gradiend_hf/benchmarks/data/`."""
    return resources.files(DATA_PACKAGE).joinpath(name)


def evenly_spaced(items: Sequence[T], limit: int | None) -> list[T]:
    """`limit` items spread evenly over `items` (all of them when limit is None or not smaller).

    Spreading, rather than taking the first `limit`, keeps many targets / articles in a small subset.
    """
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 1:
        raise BenchmarkError(f"limit must be a positive number of items or None, got {limit}.")
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def balanced_subset(items: Sequence[T], key: Callable[[T], str], limit: int | None) -> list[T]:
    """At most `limit` items of every group (by `key`), spread evenly, in the original order."""
    if limit is None:
        return list(items)
    if limit < 1:
        raise BenchmarkError(f"limit must be a positive number of items per bias type or None, got {limit}.")
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(key(item), []).append(index)
    kept = sorted(i for indices in groups.values() for i in evenly_spaced(indices, limit))
    return [items[i] for i in kept]


def check_bias_types(
    requested: Iterable[str] | None,
    available: Sequence[str],
    benchmark: str,
    aliases: dict[str, str] | None = None,
) -> list[str]:
    """The requested bias types in the benchmark's own spelling (all available ones when None).

    Raises:
        BenchmarkError: A requested type is not one of `available` (or an alias of one).
    """
    if requested is None:
        return list(available)
    if isinstance(requested, str):
        requested = [requested]
    aliases = aliases or {}
    chosen = []
    for bias_type in requested:
        name = aliases.get(bias_type, bias_type)
        if name not in available:
            raise BenchmarkError(
                f"{benchmark} has no bias type {bias_type!r}; expected one of {list(available)}"
                + (f" (or the aliases {sorted(aliases)})" if aliases else "")
                + "."
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise BenchmarkError(f"bias_types is empty; pass None for all of {list(available)} or some of them.")
    return chosen


def select_by_bias_type(
    items: Sequence[T],
    requested: Iterable[str] | None,
    available: Sequence[str],
    benchmark: str,
    limit: int | None,
    aliases: dict[str, str] | None = None,
) -> list[T]:
    """The items (each with a `bias_type`) of the requested bias types, at most `limit` per type, spread evenly.

    Raises:
        BenchmarkError: A requested type is not one of `available` (or an alias of one), or a bad limit.
    """
    chosen = check_bias_types(requested, available, benchmark, aliases)
    return balanced_subset([i for i in items if i.bias_type in chosen], lambda i: i.bias_type, limit)


def rows_by_bias_type(bias_types: Sequence[str], known: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """Row indices of each bias type in `bias_types` (one per item), then of all rows as "overall".

    Known types come first in their order, any others after them, sorted.
    """
    present = set(bias_types)
    groups = [b for b in known if b in present] + sorted(present - set(known))
    return [(group, np.array([i for i, b in enumerate(bias_types) if group in ("overall", b)]))
            for group in [*groups, "overall"]]


def require_fields(record: dict[str, Any], fields: Sequence[str], what: str) -> None:
    missing = [f for f in fields if f not in record]
    if missing:
        raise BenchmarkError(
            f"{what} lacks the fields {missing}; expected {list(fields)}, found {sorted(record)}."
        )
