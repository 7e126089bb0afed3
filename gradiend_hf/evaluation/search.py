"""Decoder search: score the rewritten model W + α·dec(h*) over an (h*, α) grid, editing the base model in place.

A GRADIEND decoder turns a feature value h* into a weight update dec(h*) = h*·W_d + b_d; the rewritten model is
W̃ = W + α·dec(h*) on the selected base parameters. Which (h*, α) is best depends on the goal: a balanced model
(both classes equally likely at the slot) or one class preferred everywhere. Each grid point is scored on held-out
feature texts (bias indices) and on neutral text (an LM factor, so that a point that breaks the language model
scores ≈ 0). The base model is never copied: one `ParameterPatch` keeps a copy of the selected parameters and
writes W0 + α·dec(h*) for each point, and restores W0 bit for bit when the search ends, also on errors and Ctrl-C.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters.patching import ParameterPatch
from ..atomic_io import atomic_folder, atomic_write_text
from ..benchmarks.lm_score import evenly_spaced, lm_score
from ..errors import SearchError
from ..features import SPLITS
from ..features import neutral_texts as builtin_neutral_texts
from ..gradients import GradientEngine, SlotBatch, drop_multi_token_examples

DEFAULT_H: tuple[float, ...] = (-10.0, -2.0, -1.0, -0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 10.0)
"""The paper's feature factors h*, plus 0 (dec(0) = b_d alone: what the decoder writes for a feature-neutral input)."""

_MAGNITUDES = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5)
DEFAULT_ALPHAS: tuple[float, ...] = tuple(sorted([-m for m in _MAGNITUDES] + list(_MAGNITUDES)))
"""The paper's learning rates α, both signs: 16 values, so the default grid has 15 × 16 = 240 points."""

DEFAULT_MAX_TEXTS = 16
"""Feature texts scored per point (half per class); sized so that the pruned default grid takes about 4 minutes on
2 CPU cores with Gemma 3 270M (benchmarks/README.md, `bench_search.py`). Differences between points are paired
(the same texts), so they are less noisy than the indices; report a chosen point on more texts (`evaluate_point`)."""

DEFAULT_MAX_NEUTRAL = 8
"""Neutral sentences for the LM factor (≈ 200 tokens; the costly part on large vocabularies, the LM head runs at
every token: on Gemma 3 270M one LM factor costs about twice the feature texts of a point)."""

STOP_BELOW = 0.5
"""Pruning: a point whose LM factor or kept target-word mass is below this is "broken"; points between two broken
points of the same walk are not scored."""

MIN_GAIN = 1e-3
"""Pruning: a point's LM factor is scored only if one of its indices beats the best score so far by more than this."""

BALANCED = "balanced"
"""The criterion name of the balanced index; the class indices are named by their class."""

FORMULAS: dict[str, str] = {
    "p": "p_c(t): probability, at the slot of feature text t, of the target word of class c (the factual word if t "
         "belongs to c, else the counterfactual word); p_pos, p_neg for the positive and negative class",
    "mass": "m(t) = p_pos(t) + p_neg(t); m0(t) the same in the base model; keep(t) = min(1, m(t) / m0(t))",
    "balanced_index": "mean over texts t of (1 - |p_pos(t) - p_neg(t)| / m(t)) * keep(t)",
    "class_index": "for class c: mean over the texts t of both classes of p_c(t) / m(t) * keep(t)",
    "lm_factor": "min(1, exp(l - l0)), l = mean log-likelihood per token of neutral text (lm_score), l0 of the base",
    "score": "index * lm_factor, in [0, 1]; best(criterion) is the point with the highest score (the base model, "
             "h* = 0 and alpha = 0, is a candidate)",
    "bias": "mean over texts t of p_factual(t) - p_counterfactual(t)",
    "lm_perplexity": "exp(-l) (a pseudo-perplexity for masked LMs)",
    "pruning": f"for each h* and sign of alpha, score the largest |alpha|, then bisect the brackets between scored "
               f"points (the base counts as scored, at alpha = 0), upper brackets first; the points inside a bracket "
               f"are skipped if both ends are broken (LM factor or mean keep(t) below stop_below, default "
               f"{STOP_BELOW}), or if every index is linear in alpha there (three scored points, the base among them, "
               f"collinear within 10 %) and no point inside, interpolated, could beat the best score by more than "
               f"min_gain (default {MIN_GAIN}); a point's LM factor is scored only if one of its indices exceeds the "
               f"best score so far by more than min_gain; so best() is exact up to min_gain where the indices are "
               f"linear between scored points",
}
"""The definitions a search uses, returned with every result (README quotes them)."""


# -- one scored point -------------------------------------------------------------------------------------------------
@dataclass
class SearchPoint:
    """The scores of one rewritten model W + α·dec(h*) (or of the base model: `is_base`, h* = α = 0)."""

    h: float
    alpha: float
    indices: dict[str, float] | None = None
    """Bias index per criterion (`"balanced"` and each class), before the LM factor; None if not scored."""
    lm_factor: float | None = None
    """min(1, exp(ℓ − ℓ0)); None if not scored (pruned)."""
    lm_mean_log_likelihood: float | None = None
    lm_perplexity: float | None = None
    bias: float | None = None
    """Mean over texts of p(factual) − p(counterfactual)."""
    pair_mass: float | None = None
    """Mean over texts of p_pos + p_neg."""
    mass_kept: float | None = None
    """Mean over texts of keep(t) = min(1, m(t) / m0(t)); every index is at most this."""
    mean_p: dict[str, dict[str, float]] | None = None
    """`mean_p[text class][word class]`: mean probability of the word of one class on the texts of a class."""
    seconds: float = 0.0
    """Wall time of this point (writing the edit, feature texts, LM factor)."""
    lm_seconds: float = 0.0
    """The part of `seconds` spent on the LM factor."""
    pruned: str | None = None
    """Why the point was not (fully) scored; None when it was."""
    is_base: bool = False

    def score(self, criterion: str) -> float | None:
        """index · LM factor for `criterion`, or None when the point was not fully scored."""
        if self.indices is None or self.lm_factor is None or criterion not in self.indices:
            return None
        return self.indices[criterion] * self.lm_factor

    @property
    def scores(self) -> dict[str, float | None]:
        return {c: self.score(c) for c in (self.indices or {})}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchPoint:
        return cls(**data)


# -- the result -------------------------------------------------------------------------------------------------------
@dataclass
class DecoderSearchResult:
    """Scores of the base model and of every grid point, with the texts and settings that produced them."""

    feature: str
    classes: tuple[str, str]
    """(positive class, negative class): the class h* = +1 encodes first."""
    base: SearchPoint
    points: list[SearchPoint]
    """One per grid point, ordered by h*, then α."""
    settings: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)
    """The feature texts scored (text, factual, counterfactual, label)."""
    neutral_texts: list[str] = field(default_factory=list)
    formulas: dict[str, str] = field(default_factory=lambda: dict(FORMULAS))

    JSON_NAME = "search.json"
    CSV_NAME = "search.csv"
    HEATMAP_NAME = "search_heatmap.png"

    def __repr__(self) -> str:
        # The dataclass repr would print every point and text.
        best = self.best(BALANCED)
        where = "the base" if best.is_base else f"h*={best.h:g}, alpha={best.alpha:g}"
        scored = sum(p.indices is not None for p in self.points)
        return (f"DecoderSearchResult(feature={self.feature!r}, points={len(self.points)} ({scored} scored), "
                f"best balanced {best.score(BALANCED):.3f} at {where}, base {self.base.score(BALANCED):.3f})")

    @property
    def criteria(self) -> list[str]:
        """`"balanced"` and the two class names: what `best` accepts."""
        return [BALANCED, *self.classes]

    def _check_criterion(self, criterion: str) -> None:
        if criterion not in self.criteria:
            raise SearchError(f"Unknown criterion {criterion!r}; expected one of {self.criteria}.")

    def best(self, criterion: str = BALANCED) -> SearchPoint:
        """The fully scored point (or the base) with the highest index · LM factor for `criterion`.

        Ties go to the base model, then to the first point in table order.
        """
        self._check_criterion(criterion)
        candidates = [self.base, *(p for p in self.points if p.score(criterion) is not None)]
        return max(candidates, key=lambda p: p.score(criterion))

    def rows(self) -> list[dict[str, Any]]:
        """Flat table rows (base first), as written to CSV."""
        positive, negative = self.classes
        out = []
        for point in [self.base, *self.points]:
            indices = point.indices or {}
            row: dict[str, Any] = {"row": "base" if point.is_base else "point", "h": point.h, "alpha": point.alpha}
            for c in self.criteria:
                row[f"score_{c}"] = point.score(c)
            for c in self.criteria:
                row[f"index_{c}"] = indices.get(c)
            row.update(lm_factor=point.lm_factor, lm_mean_log_likelihood=point.lm_mean_log_likelihood,
                       lm_perplexity=point.lm_perplexity, bias=point.bias, pair_mass=point.pair_mass,
                       mass_kept=point.mass_kept)
            for text_class in (positive, negative):
                for word_class in (positive, negative):
                    value = (point.mean_p or {}).get(text_class, {}).get(word_class)
                    row[f"p_{word_class}_on_{text_class}"] = value
            row.update(seconds=point.seconds, lm_seconds=point.lm_seconds, pruned=point.pruned or "")
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "gradiend-decoder-search",
            "version": 1,
            "feature": self.feature,
            "classes": list(self.classes),
            "criteria": self.criteria,
            "formulas": self.formulas,
            "settings": self.settings,
            "base": self.base.to_dict(),
            "points": [p.to_dict() for p in self.points],
            "best": {c: {"h": b.h, "alpha": b.alpha, "score": b.score(c), "is_base": b.is_base}
                     for c in self.criteria for b in [self.best(c)]},
            "examples": self.examples,
            "neutral_texts": self.neutral_texts,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecoderSearchResult:
        if data.get("format") != "gradiend-decoder-search":
            raise SearchError(f"Not a decoder-search result: format {data.get('format')!r}, expected "
                              "'gradiend-decoder-search' (a search.json written by DecoderSearchResult.to_json).")
        return cls(
            feature=data["feature"], classes=tuple(data["classes"]), base=SearchPoint.from_dict(data["base"]),
            points=[SearchPoint.from_dict(p) for p in data["points"]], settings=data.get("settings", {}),
            examples=data.get("examples", []), neutral_texts=data.get("neutral_texts", []),
            formulas=data.get("formulas", dict(FORMULAS)),
        )

    def to_json(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=True))

    @classmethod
    def from_json(cls, path: str | Path) -> DecoderSearchResult:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        rows = self.rows()
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        return path

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write `search.json`, `search.csv` and `search_heatmap.png` into `directory` (created if missing)."""
        from .plots import plot_search_heatmap

        directory = Path(directory)
        with atomic_folder(directory, what="decoder search") as staging:  # all three appear together, or none
            self.to_json(staging / self.JSON_NAME)
            self.to_csv(staging / self.CSV_NAME)
            plot_search_heatmap(self, staging / self.HEATMAP_NAME)
        return {"json": directory / self.JSON_NAME, "csv": directory / self.CSV_NAME,
                "heatmap": directory / self.HEATMAP_NAME}


# -- scoring ----------------------------------------------------------------------------------------------------------
def _indices(p_pos: np.ndarray, p_neg: np.ndarray, base_mass: np.ndarray, positive: str,
             negative: str) -> tuple[dict[str, float], float]:
    """The bias indices of `FORMULAS` from per-text probabilities, and the mean kept mass."""
    tiny = np.finfo(np.float64).tiny
    mass = np.maximum(p_pos + p_neg, tiny)
    keep = np.minimum(1.0, mass / np.maximum(base_mass, tiny))
    share = p_pos / mass
    balanced = (1.0 - np.abs(p_pos - p_neg) / mass) * keep
    indices = {BALANCED: float(balanced.mean()), positive: float((share * keep).mean()),
               negative: float(((1.0 - share) * keep).mean())}
    return indices, float(keep.mean())


class _Scorer:
    """Scores the base model as it currently is: feature texts (tokenised once) and the LM on neutral text."""

    def __init__(self, engine: GradientEngine, tokenizer, examples: Sequence[Any], positive: str,
                 neutral: Sequence[str], *, batch_size: int):
        self.engine = engine
        self.tokenizer = tokenizer
        self.neutral = list(neutral)
        self.batch_size = batch_size
        self.is_positive = np.array([e.label == positive for e in examples])
        # Tokenise once; batches of similar length waste less compute on padding (the order is restored later).
        full = engine.slots(examples)
        lengths = full.attention_mask.sum(1)
        order = sorted(range(len(examples)), key=lambda i: int(lengths[i]))
        self.order = torch.tensor(order)
        self.batches: list[SlotBatch] = []
        for start in range(0, len(order), batch_size):
            rows = self.order[start: start + batch_size]
            width = int(lengths[rows].max())
            self.batches.append(SlotBatch(full.input_ids[rows, :width], full.attention_mask[rows, :width],
                                          full.positions[rows], full.factual_ids[rows],
                                          full.counterfactual_ids[rows]).to(engine.device))

    def probabilities(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per text, in input order: p_pos, p_neg, p_factual, p_counterfactual (float64)."""
        factual, counterfactual = [], []
        for batch in self.batches:
            lp_f, lp_c = self.engine.target_logprobs(batch)
            factual.append(lp_f.cpu())
            counterfactual.append(lp_c.cpu())
        p_f = np.empty(len(self.order))
        p_c = np.empty(len(self.order))
        p_f[self.order.numpy()] = torch.cat(factual).double().exp().numpy()
        p_c[self.order.numpy()] = torch.cat(counterfactual).double().exp().numpy()
        p_pos = np.where(self.is_positive, p_f, p_c)
        p_neg = np.where(self.is_positive, p_c, p_f)
        return p_pos, p_neg, p_f, p_c

    def lm_log_likelihood(self) -> float:
        result = lm_score(self.engine.model, self.tokenizer, self.neutral, lm_kind=self.engine.lm_kind,
                          batch_size=self.batch_size, bootstrap=0)
        return result.mean_log_likelihood


def _sample_examples(dataset: Any, split: str, classes: tuple[str, str], engine: GradientEngine, max_texts: int,
                     seed: int) -> list[Any]:
    """A balanced, seeded sample of the split's examples whose target words are single tokens (dataset order)."""
    examples = dataset.split(split)
    kept, _ = drop_multi_token_examples(list(examples), engine.slots)
    pools = {c: [e for e in kept if e.label == c] for c in classes}
    empty = [c for c, pool in pools.items() if not pool]
    if empty:
        raise SearchError(
            f"The {split} split of {getattr(dataset, 'name', 'the feature')!r} has no usable example of class "
            f"{empty[0]!r} ({len(examples)} examples, {len(kept)} with single-token targets). Use another split "
            "or a feature whose target words are single tokens for this tokenizer."
        )
    per_class = min(max_texts // 2, *(len(pool) for pool in pools.values()))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in classes:
        picks = torch.randperm(len(pools[c]), generator=generator)[:per_class].tolist()
        chosen.extend(pools[c][i] for i in sorted(picks))
    return chosen


# -- validation -------------------------------------------------------------------------------------------------------
def _grid(values: Iterable[float] | None, default: Sequence[float], name: str) -> list[float]:
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


def _check_inputs(model: Any, base: nn.Module, dataset: Any, split: str, max_texts: int, max_neutral: int,
                  batch_size: int, stop_below: float, min_gain: float | None) -> tuple[str, str]:
    config = model.config
    positive, negative = config.positive_class, config.negative_class
    if split not in SPLITS:
        raise SearchError(f"Unknown split {split!r}; expected one of {list(SPLITS)}.")
    if set(dataset.classes) != {positive, negative}:
        raise SearchError(
            f"The feature has classes {list(dataset.classes)}, but the GRADIEND model was trained for "
            f"{[positive, negative]}. Pass the feature the model was trained on."
        )
    if BALANCED in (positive, negative):
        raise SearchError(f"A class named {BALANCED!r} clashes with the balanced criterion; rename the class.")
    if config.latent_size != 1:
        raise SearchError(f"The search scans a scalar h*, but this GRADIEND model has latent size "
                          f"{config.latent_size}; it needs latent size 1.")
    for name, value, low in (("max_texts", max_texts, 2), ("max_neutral", max_neutral, 1),
                             ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SearchError(f"`{name}` must be an int of at least {low}, got {value!r}.")
    if not 0.0 <= stop_below <= 1.0:
        raise SearchError(f"`stop_below` must lie in [0, 1], got {stop_below}.")
    if min_gain is not None and not min_gain >= 0.0:
        raise SearchError(f"`min_gain` must be a non-negative number or None, got {min_gain}.")
    model.check_base_model(base)  # ParameterSelectionError naming the first missing or mis-shaped parameter
    return positive, negative


def _walks(alphas: Sequence[float]) -> list[list[float]]:
    """The α of each sign in order of growing |α| (α = 0, if given, alone)."""
    zeros = [a for a in alphas if a == 0.0]
    negatives = sorted((a for a in alphas if a < 0.0), key=abs)
    positives = sorted((a for a in alphas if a > 0.0), key=abs)
    return [walk for walk in (zeros, negatives, positives) if walk]


@torch.no_grad()
def _score(point: SearchPoint, scorer: _Scorer, classes: tuple[str, str], base_mass: np.ndarray | None,
           base_ll: float | None, need_lm: Callable[[SearchPoint], bool]) -> np.ndarray:
    """Fill `point` with the scores of the model as it is now; return the per-text pair mass."""
    positive, negative = classes
    started = time.perf_counter()
    p_pos, p_neg, p_f, p_c = scorer.probabilities()
    mass = p_pos + p_neg
    point.indices, point.mass_kept = _indices(p_pos, p_neg, mass if base_mass is None else base_mass, positive,
                                              negative)
    point.bias = float((p_f - p_c).mean())
    point.pair_mass = float(mass.mean())
    is_pos = scorer.is_positive
    point.mean_p = {
        text_class: {positive: float(p_pos[rows].mean()), negative: float(p_neg[rows].mean())}
        for text_class, rows in ((positive, is_pos), (negative, ~is_pos))
    }
    if need_lm(point):
        lm_started = time.perf_counter()
        ll = scorer.lm_log_likelihood()
        point.lm_seconds = time.perf_counter() - lm_started
        point.lm_mean_log_likelihood = ll
        point.lm_perplexity = float(math.exp(-ll))
        point.lm_factor = 1.0 if base_ll is None else float(min(1.0, math.exp(ll - base_ll)))
    point.seconds = time.perf_counter() - started
    return mass


LINEAR_TOLERANCE = 0.1
"""Pruning: two points of a walk count as collinear with the base when every index change at the larger |α|
differs from the change at the smaller |α|, scaled by the ratio of the α, by at most this share (plus 1e-6)."""


def _broken(point: SearchPoint, stop_below: float) -> bool:
    lm = point.lm_factor if point.lm_factor is not None else 1.0
    return lm < stop_below or (point.mass_kept is not None and point.mass_kept < stop_below)


def _skip_reason(chain: list[SearchPoint], i: int, j: int, best: dict[str, float], criteria: Sequence[str],
                 stop_below: float, min_gain: float) -> str | None:
    """Why the points strictly between chain[i] and chain[j] need no scoring, or None if they do.

    `chain` is one walk with the base model in front: [base, |α| ascending...]; chain[i] and chain[j] are scored.
    """
    low, high = chain[i], chain[j]
    if i > 0 and _broken(low, stop_below) and _broken(high, stop_below):
        return (f"pruned: between two broken points (alpha={low.alpha:g} and {high.alpha:g} have an LM factor or "
                f"kept target-word mass below {stop_below:g})")
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


def _bracket(row: list[SearchPoint], evaluate: Callable[[SearchPoint], None], base: SearchPoint,
             best: dict[str, float], criteria: Sequence[str], *, prune: bool, stop_below: float, min_gain: float,
             on_prune: Callable[[int], None]) -> None:
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
        reason = _skip_reason(chain, i, j, best, criteria, stop_below, min_gain)
        if reason:
            for point in chain[i + 1: j]:
                point.pruned = reason
            on_prune(j - i - 1)
            continue
        middle = (i + j) // 2
        evaluate(chain[middle])
        brackets += [(i, middle), (middle, j)]  # the upper bracket is popped first: it gives witnesses below


# -- the search -------------------------------------------------------------------------------------------------------
def search_decoder(
    model: Any,
    base: nn.Module,
    tokenizer,
    dataset: Any,
    *,
    h_values: Sequence[float] | None = None,
    alphas: Sequence[float] | None = None,
    split: str = "validation",
    max_texts: int = DEFAULT_MAX_TEXTS,
    neutral_texts: Sequence[str] | None = None,
    max_neutral: int = DEFAULT_MAX_NEUTRAL,
    batch_size: int = 16,
    prune: bool = True,
    stop_below: float = STOP_BELOW,
    min_gain: float | None = MIN_GAIN,
    progress: bool = True,
    seed: int = 0,
) -> DecoderSearchResult:
    """Score W + α·dec(h*) over an (h*, α) grid on held-out feature texts and neutral text, editing `base` in place.

    For a feature text t, p_pos(t) and p_neg(t) are the probabilities the model gives at the slot to the target
    words of the positive and negative class (for a female text "she" is the factual word and the positive one).
    With m(t) = p_pos + p_neg, m0(t) the same in the base model, and keep(t) = min(1, m(t)/m0(t)):

    - balanced index = mean_t (1 − |p_pos − p_neg| / m) · keep: 1 when both classes are equally likely at every
      slot and together as likely as before; at the base it is 1 only if the base is already balanced;
    - class index (per class c) = mean_t p_c / m · keep, over the texts of both classes: 1 when c's word wins
      every slot, with the pair's mass kept;
    - LM factor = min(1, exp(ℓ − ℓ0)), ℓ the mean log-likelihood per token of neutral text (`lm_score`), so a
      point that breaks the language model scores ≈ 0; score = index · LM factor, in [0, 1].

    Unlike the paper's BPI/FPI/MPI, which multiply raw probabilities ((1 − |p_M − p_F|)·(p_M + p_F), (1 − p_M)·p_F)
    by an absolute LM score, the indices use the class *shares* of the pair (so "balanced" does not depend on how
    likely the pair is at a slot) and mass and LM relative to the base (so the base scores its own balance, and
    features and models stay comparable). `FORMULAS` lists the definitions; every result carries them.

    The base model is never copied: one `ParameterPatch` saves the selected parameters once and writes
    W0 + α·dec(h*) for each point; on exit (also on errors and Ctrl-C) every parameter is restored bit for bit.

    Pruning (`prune=True`) uses two facts: a score never exceeds its index, and for one h* the update α·dec(h*) only
    grows with |α|. For each h* and sign of α the largest |α| is scored first, then the brackets between scored
    points (the base counts as scored, at α = 0) are bisected, upper brackets first; the points inside a bracket
    are skipped (marked `pruned` with the reason) when

    - both ends are broken (LM factor or mean keep(t) below `stop_below`): points between are taken as broken too;
    - every index is linear in α across the bracket (three scored points, the base among them, are collinear
      within `LINEAR_TOLERANCE`, 10 %), so the points inside interpolate the ends, and none of them could exceed
      the best score so far by more than `min_gain`.

    The LM factor (the expensive part: the LM head runs at every neutral token) is scored only if some index of the
    point exceeds the best score so far by more than `min_gain`. So `best()` is exact up to `min_gain`, given that
    the indices are linear where they look linear (on a trained Gemma 3 270M GRADIEND they are up to |α| ≈ 0.005
    for every h*, and 67 of the 240 default points were skipped as linear, 147 LM factors as unable to win;
    benchmarks/README.md has the numbers).

    Args:
        model: a trained `GradiendModel` (latent size 1).
        base: the base model it was trained on; edited in place during the search and restored afterwards.
        tokenizer: the base model's tokenizer.
        dataset: the `FeatureDataset` of the model's feature.
        h_values: the feature factors h* (default `DEFAULT_H`).
        alphas: the learning rates α (default `DEFAULT_ALPHAS`); α = 0 is allowed (it equals the base).
        split: feature texts to score on ("validation"; use `evaluate_point` on "test" to report a choice).
        max_texts: at most this many feature texts, half per class (seeded sample, single-token targets only).
        neutral_texts: texts for the LM factor (default `features.neutral_texts()`); `max_neutral` of them are
            taken, evenly spread.
        max_neutral: at most this many neutral texts.
        batch_size: texts per forward pass.
        prune: skip points as described above; False scores every point fully.
        stop_below: the LM factor / kept mass below which a point counts as broken.
        min_gain: the margin an index must beat the best score by before its LM factor is scored; None scores
            the LM factor of every point that is scored at all (pruning then only stops walks).
        progress: show a tqdm bar over the grid points.
        seed: seed of the feature-text sample.

    Returns:
        A `DecoderSearchResult`: base scores, one `SearchPoint` per grid point, `best(criterion)`, save methods.

    Raises:
        SearchError: a bad grid or option, classes that differ from the model's, no usable texts.
        ParameterSelectionError: `base` lacks a parameter the GRADIEND model spans.

    Example:

    ```python
    >>> result = search_decoder(model, base, tokenizer, gh.features.gender())
    >>> best = result.best("balanced")
    >>> adapter = model.to_adapter(h=best.h, alpha=best.alpha)
    >>> result.save("out/search")          # search.json, search.csv, search_heatmap.png
    ```
    """
    from tqdm.auto import tqdm

    hs = _grid(h_values, DEFAULT_H, "h_values")
    grid_alphas = _grid(alphas, DEFAULT_ALPHAS, "alphas")
    classes = _check_inputs(model, base, dataset, split, max_texts, max_neutral, batch_size, stop_below, min_gain)
    started = time.perf_counter()
    config = model.config
    engine = GradientEngine(base, tokenizer, config.param_names)
    examples = _sample_examples(dataset, split, classes, engine, max_texts, seed)
    texts = list(builtin_neutral_texts() if neutral_texts is None else neutral_texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise SearchError("`neutral_texts` must be a non-empty list of strings (default: features.neutral_texts()).")
    texts = evenly_spaced(texts, max_neutral)
    scorer = _Scorer(engine, tokenizer, examples, classes[0], texts, batch_size=batch_size)
    criteria = [BALANCED, *classes]

    base_point = SearchPoint(h=0.0, alpha=0.0, is_base=True)
    best: dict[str, float] = {}

    def need_lm(point: SearchPoint) -> bool:
        return not prune or min_gain is None or any(point.indices[c] > best[c] + min_gain for c in criteria)

    points = {(h, a): SearchPoint(h=h, alpha=a) for h in hs for a in grid_alphas}
    was_training = base.training
    bar = tqdm(total=len(points), desc="decoder search", unit="point", disable=not progress, leave=False)
    patch = ParameterPatch(base, config.param_names, config.param_shapes)
    try:
        base_mass = _score(base_point, scorer, classes, None, None, lambda _: True)
        base_ll = base_point.lm_mean_log_likelihood
        best.update({c: base_point.score(c) for c in criteria})
        def evaluate(point: SearchPoint, update: dict[str, torch.Tensor]) -> None:
            tick = time.perf_counter()
            patch.write([(update, point.alpha)])
            _score(point, scorer, classes, base_mass, base_ll, need_lm)
            point.seconds = time.perf_counter() - tick
            if point.lm_factor is None:
                point.pruned = f"LM factor not scored: no index beats the best score so far by more than {min_gain:g}"
            else:
                for c in criteria:
                    best[c] = max(best[c], point.score(c))
            bar.update(1)
            bar.set_postfix({c[:8]: f"{best[c]:.3f}" for c in criteria}, refresh=False)

        for h in hs:
            with torch.no_grad():
                update = {name: delta.detach() for name, delta in model.decode(h).items()}
            for walk in _walks(grid_alphas):
                _bracket([points[(h, alpha)] for alpha in walk], functools.partial(evaluate, update=update),
                         base_point, best, criteria, prune=prune, stop_below=stop_below, min_gain=min_gain or 0.0,
                         on_prune=bar.update)
    finally:
        patch.restore()
        base.train(was_training)
        bar.close()

    settings = {
        "split": split, "max_texts": max_texts, "num_texts": len(examples), "max_neutral": max_neutral,
        "num_neutral": len(texts), "batch_size": batch_size, "prune": prune, "stop_below": stop_below,
        "min_gain": min_gain, "seed": seed, "h_values": hs, "alphas": grid_alphas, "lm_kind": engine.lm_kind,
        "base_model": config.base_model_name_or_path, "gradiend_model": getattr(model, "name_or_path", None) or None,
        "num_params": len(config.param_names), "num_selected": int(config.num_selected),
        "torch_threads": torch.get_num_threads(), "total_seconds": time.perf_counter() - started,
        "points_scored": sum(p.indices is not None for p in points.values()),
        "points_with_lm": sum(p.lm_factor is not None for p in points.values()),
    }
    records = [{"text": e.text, "factual": e.factual, "counterfactual": e.counterfactual, "label": e.label}
               for e in examples]
    return DecoderSearchResult(feature=getattr(dataset, "name", config.feature_name), classes=classes,
                               base=base_point, points=list(points.values()), settings=settings, examples=records,
                               neutral_texts=texts)


def evaluate_point(
    model: Any,
    base: nn.Module,
    tokenizer,
    dataset: Any,
    h: float,
    alpha: float,
    *,
    split: str = "test",
    max_texts: int = DEFAULT_MAX_TEXTS,
    neutral_texts: Sequence[str] | None = None,
    max_neutral: int = DEFAULT_MAX_NEUTRAL,
    batch_size: int = 16,
    progress: bool = False,
    seed: int = 0,
) -> DecoderSearchResult:
    """Score one point (h*, α) and the base on `split` (default "test"), to report a chosen point honestly.

    The same scores as `search_decoder` (no pruning); `result.points[0]` is the point, `result.base` the base on the
    same texts. Arguments as in `search_decoder`.
    """
    return search_decoder(model, base, tokenizer, dataset, h_values=[h], alphas=[alpha], split=split,
                          max_texts=max_texts, neutral_texts=neutral_texts, max_neutral=max_neutral,
                          batch_size=batch_size, prune=False, progress=progress, seed=seed)


__all__ = [
    "BALANCED",
    "DEFAULT_ALPHAS",
    "DEFAULT_H",
    "DEFAULT_MAX_NEUTRAL",
    "DEFAULT_MAX_TEXTS",
    "FORMULAS",
    "LINEAR_TOLERANCE",
    "MIN_GAIN",
    "STOP_BELOW",
    "DecoderSearchResult",
    "SearchPoint",
    "evaluate_point",
    "search_decoder",
]
