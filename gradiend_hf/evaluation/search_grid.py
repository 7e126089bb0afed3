"""Pruning of the decoder grid: which (h*, α) points a search must score and which it may skip, with the reason.

Two facts make skipping safe: a point's score never exceeds its index, and for one h* the update α·dec(h*) only
grows with |α|. So each walk (one h*, one sign of α, |α| ascending) is scored from its largest |α| and bisected,
and the points inside a bracket of scored points are skipped when both ends are broken or when every index is
linear in α across it and nothing inside could beat the best score (`PRUNING`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from ..errors import SearchError
from .search_result import SearchPoint

STOP_BELOW = 0.5
"""A point whose LM factor or kept mass is below this is "broken"; points between two broken points of the same
walk are not scored."""

MIN_GAIN = 1e-3
"""A point's LM is scored only if one of its indices beats the best score so far by more than this."""

def check_grid(values: Iterable[float] | None, default: Sequence[float], name: str) -> list[float]:
    if values is None:
        return list(default)
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise SearchError(f"`{name}` must be a sequence of numbers, e.g. {list(default[:3])}, got {values!r}.")
    try:
        items = list(values)
    except TypeError:
        raise SearchError(f"`{name}` must be a sequence of numbers, e.g. {list(default[:3])}, got {values!r}.") from None
    out = []
    for value in items:
        if isinstance(value, bool):
            raise SearchError(f"`{name}` must hold numbers, found the bool {value!r}.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise SearchError(f"`{name}` must hold numbers, found {value!r}.") from None
        if not math.isfinite(number):
            raise SearchError(f"`{name}` must hold finite numbers, found {number}.")
        out.append(number)
    if not out:
        raise SearchError(f"`{name}` is empty; give at least one value (default: {list(default)}).")
    duplicates = sorted({v for v in out if out.count(v) > 1})
    if duplicates:
        raise SearchError(f"`{name}` lists {duplicates[0]:g} more than once; give each value once.")
    return sorted(out)


def walks(alphas: Sequence[float]) -> list[list[float]]:
    """The α of each sign in order of growing |α| (α = 0, if given, alone)."""
    zeros = [a for a in alphas if a == 0.0]
    negatives = sorted((a for a in alphas if a < 0.0), key=abs)
    positives = sorted((a for a in alphas if a > 0.0), key=abs)
    return [walk for walk in (zeros, negatives, positives) if walk]


LINEAR_TOLERANCE = 0.1
"""Pruning: two points of a walk count as collinear with the base when every index change at the larger |α|
differs from the change at the smaller |α|, scaled by the ratio of the α, by at most this share (plus 1e-6)."""


def broken(point: SearchPoint, stop_below: float, lm_floor: float | None = None) -> bool:
    """Whether a point counts as broken for pruning: its LM factor or kept mass below `stop_below`, or (threshold
    policy, `lm_floor` = threshold × base LM score) its LM score below the floor."""
    if lm_floor is not None and point.lm_score is not None and point.lm_score < lm_floor:
        return True
    lm = point.lm_factor if point.lm_factor is not None else 1.0
    return lm < stop_below or (point.mass_kept is not None and point.mass_kept < stop_below)


def _skip_reason(chain: list[SearchPoint], i: int, j: int, best: dict[str, float], criteria: Sequence[str],
                 stop_below: float, min_gain: float, lm_floor: float | None) -> str | None:
    """Why the points strictly between chain[i] and chain[j] need no scoring, or None if they do.

    `chain` is one walk with the base model in front: [base, |α| ascending...]; chain[i] and chain[j] are scored.
    """
    low, high = chain[i], chain[j]
    if i > 0 and broken(low, stop_below, lm_floor) and broken(high, stop_below, lm_floor):
        return (f"pruned: between two broken points (alpha={low.alpha:g} and {high.alpha:g} have an LM factor or "
                f"kept mass below {stop_below:g}" + ("" if lm_floor is None else ", or an LM score below the "
                                                     "threshold") + ")")
    # Linearity needs a third point on the line: the base and the bracket's ends, or (for a bracket that starts at
    # the base) the base, its upper end and the nearest scored point above it.
    if i > 0:
        near, far = low, high
    else:
        above = [p for p in chain[j + 1:] if p.indices is not None]
        if not above:
            return None
        near, far = high, above[0]
    base = chain[0]
    ratio = far.alpha / near.alpha
    interior = chain[i + 1: j]
    for c in criteria:
        change_far = far.indices[c] - base.indices[c]
        deviation = abs(change_far - ratio * (near.indices[c] - base.indices[c]))
        if deviation > LINEAR_TOLERANCE * abs(change_far) + 1e-6:
            return None  # not linear in α here: the points between must be looked at
        for point in interior:  # linear: each point between interpolates the bracket's ends (scores ≤ indices)
            share = (point.alpha - low.alpha) / (high.alpha - low.alpha)
            estimate = low.indices[c] + share * (high.indices[c] - low.indices[c])
            if estimate + deviation > best[c] + min_gain:
                return None  # it could beat the best score (e.g. with a better LM factor than the bracket's end)
    return (f"pruned: every index changes linearly in alpha between the base, alpha={near.alpha:g} and "
            f"{far.alpha:g}, so no point between alpha={low.alpha:g} and {high.alpha:g} beats the best score by "
            f"more than {min_gain:g}")


def bracket(row: list[SearchPoint], evaluate: Callable[[SearchPoint], None], base: SearchPoint,
             best: dict[str, float], criteria: Sequence[str], *, prune: bool, stop_below: float, min_gain: float,
             on_prune: Callable[[int], None], lm_floor: float | None = None) -> None:
    """Score one walk (same h*, same sign, |α| ascending): the largest |α| first, then the middle of every bracket
    of scored points (the base counts as scored, at α = 0) that cannot be skipped, upper brackets first."""
    if not prune or len(row) <= 1 or row[0].alpha == 0.0:
        for point in row:
            evaluate(point)
        return
    chain = [base, *row]
    evaluate(chain[-1])
    brackets = [(0, len(chain) - 1)]
    while brackets:
        i, j = brackets.pop()
        if j - i < 2:
            continue
        reason = _skip_reason(chain, i, j, best, criteria, stop_below, min_gain, lm_floor)
        if reason:
            for point in chain[i + 1: j]:
                point.pruned = reason
            on_prune(j - i - 1)
            continue
        middle = (i + j) // 2
        evaluate(chain[middle])
        brackets += [(i, middle), (middle, j)]  # the upper bracket is popped first: it gives witnesses below



PRUNING = (f"for each h* and sign of alpha, score the largest |alpha|, then bisect the brackets between scored "
           f"points (the base counts as scored, at alpha = 0), upper brackets first; the points inside a bracket "
           f"are skipped if both ends are broken (LM factor or mean kept mass below stop_below, default "
           f"{STOP_BELOW}; under the threshold LM policy also an LM score below the threshold), or if every index is linear in alpha there (three scored points, the base among them, "
           f"collinear within 10 %) and no point inside, interpolated, could beat the best score by more than "
           f"min_gain (default {MIN_GAIN}); a point's LM is scored only if one of its indices exceeds the best "
           f"score so far by more than min_gain; so best() is exact up to min_gain where the indices are linear "
           f"between scored points")
"""The pruning rule, returned with every result."""

__all__ = ["LINEAR_TOLERANCE", "MIN_GAIN", "PRUNING", "STOP_BELOW", "bracket", "broken", "check_grid", "walks"]
