"""Decoder search: score the rewritten model W + α·dec(h*) over an (h*, α) grid, editing the base model in place.

A GRADIEND decoder turns a feature value h* into a weight update dec(h*) = h*·W_d + b_d; the rewritten model is
W̃ = W + α·dec(h*) on the selected base parameters. Each grid point is scored on held-out texts (an index of
balance, or of one class) and on neutral text (an LM score), combined by an LM policy. The texts are either the
authors' *transfer* task (descriptions of people followed by a first-name or group-word slot: does the edit
carry beyond the training slot?) or the feature's own slot texts. The base model is never copied: one
`ParameterPatch` keeps a copy of the selected parameters, writes W0 + α·dec(h*) for each point and restores W0 bit
for bit when the search ends, also on errors and Ctrl-C.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters.patching import ParameterPatch
from ..benchmarks.lm_score import evenly_spaced, lm_score
from ..errors import SearchError
from ..features import SPLITS
from ..features import neutral_texts as builtin_neutral_texts
from ..features.transfer import TransferSet, builtin_transfer
from ..gradients import GradientEngine
from .search_grid import MIN_GAIN, PRUNING, STOP_BELOW, bracket, check_grid, walks
from .search_result import (
    DEFAULT_LM_THRESHOLD,
    LM_POLICIES,
    LM_SCORE_FORMULA,
    DecoderSearchResult,
    SearchPoint,
    paper_lm_score,
    policy_scores,
)
from .slot_scores import FEATURE_FORMULAS, FeatureScorer, sample_feature_examples
from .transfer import BALANCED
from .transfer import FORMULAS as TRANSFER_FORMULAS
from .transfer import TransferScorer

DEFAULT_H: tuple[float, ...] = (-10.0, -2.0, -1.0, -0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 10.0)
"""The paper's feature factors h*, plus 0 (dec(0) = b_d alone: what the decoder writes for a feature-neutral input)."""

_MAGNITUDES = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5)
DEFAULT_ALPHAS: tuple[float, ...] = tuple(sorted([-m for m in _MAGNITUDES] + list(_MAGNITUDES)))
"""The paper's learning rates α, both signs: 16 values, so the default grid has 15 × 16 = 240 points."""

ON: tuple[str, ...] = ("transfer", "feature")
"""What the points are scored on: the transfer task, or the feature's own slot texts."""

DEFAULT_ON = "transfer"
"""The authors select on the transfer task; README (decoder search) has the evidence for making it the default."""

DEFAULT_LM_POLICY = {"transfer": "threshold", "feature": "relative"}
"""The LM policy each kind of texts uses unless one is given."""

DEFAULT_MAX_TEXTS = {"transfer": 24, "feature": 16}
"""Texts scored per point: transfer texts (spread over templates and description kinds) or feature texts (half per
class). Sized so that the pruned default grid takes a few minutes on 2 CPU cores with Gemma 3 270M; differences
between points are paired (the same texts), so they are less noisy than the indices."""

DEFAULT_MAX_NEUTRAL = 8
"""Neutral sentences for the LM score (≈ 250 tokens; the LM head runs at every token, the costly part on large
vocabularies: on Gemma 3 270M about 3 s, against 2 s for 24 transfer texts)."""


def search_decoder(
    model: Any,
    base: nn.Module,
    tokenizer,
    dataset: Any,
    *,
    on: str = DEFAULT_ON,
    transfer: TransferSet | None = None,
    lm_policy: str | None = None,
    lm_threshold: float = DEFAULT_LM_THRESHOLD,
    h_values: Sequence[float] | None = None,
    alphas: Sequence[float] | None = None,
    split: str = "validation",
    max_texts: int | None = None,
    neutral_texts: Sequence[str] | None = None,
    max_neutral: int = DEFAULT_MAX_NEUTRAL,
    batch_size: int = 16,
    prune: bool = True,
    stop_below: float = STOP_BELOW,
    min_gain: float | None = MIN_GAIN,
    progress: bool = True,
    seed: int = 0,
) -> DecoderSearchResult:
    """Score W + α·dec(h*) over an (h*, α) grid on held-out texts and neutral text, editing `base` in place.

    **Texts** (`on`):

    - `"transfer"` (default): the authors' selection task. Descriptions of people end where a first name (gender)
      or a group word (race, religion) comes next; P_c(t) is class c's mass at the slot (`features.transfer`).
      Gender uses the paper's BPI = mean (1 − clip(|P_neg − P_pos|, 0, 1))·(P_pos + P_neg) and per class
      FPI / MPI = mean (1 − P_other)·P_c; race and religion mean (1 − (max_g p_g − min_g p_g))·min_g p_g.
    - `"feature"`: the feature's own slot texts (the pronoun after a name), with relative indices
      (`slot_scores.FEATURE_FORMULAS`): each class's share of the pair, the pair's mass relative to the base.

    **LM policy** (`lm_policy`, default "threshold" on transfer texts, "relative" on feature texts): "threshold"
    keeps the points whose LM score (1/(1 + NLL) for a causal LM, masked-token accuracy for a masked LM, on neutral
    text) is at least `lm_threshold` × the base's and takes the best index among them; "product" multiplies the
    index by that LM score (the paper); "relative" by min(1, exp(ℓ − ℓ0)).

    Criteria: `"balanced"` and each class name; `result.best(criterion)` is the highest score, the base model
    included. The base model is never copied: one `ParameterPatch` saves the selected parameters once and writes
    W0 + α·dec(h*) per point; on exit (also on errors and Ctrl-C) every parameter is restored bit for bit.
    Pruning (`prune=True`) skips points that provably cannot win (`search_grid.PRUNING`); `prune=False` scores all.

    Args:
        model: a trained `GradiendModel` (latent size 1).
        base: the base model it was trained on; edited in place during the search and restored afterwards.
        tokenizer: the base model's tokenizer.
        dataset: the `FeatureDataset` of the model's feature (its texts for `on="feature"`; its name picks the
            built-in transfer set).
        on: "transfer" or "feature".
        transfer: your own `TransferSet` (default: the built-in one of the feature: gender, race, religion).
        lm_policy: "threshold", "product" or "relative" (see above).
        lm_threshold: the share of the base's LM score a point must keep under the threshold policy.
        h_values: the feature factors h* (default `DEFAULT_H`).
        alphas: the learning rates α (default `DEFAULT_ALPHAS`); α = 0 is allowed (it equals the base).
        split: texts to score on ("validation"; use `evaluate_point` on "test" to report a choice).
        max_texts: at most this many texts (default `DEFAULT_MAX_TEXTS`; seeded sample).
        neutral_texts: texts for the LM score (default `features.neutral_texts()`, evenly spread).
        max_neutral: at most this many neutral texts.
        batch_size: texts per forward pass.
        prune: skip points that cannot win; False scores every point fully.
        stop_below: the LM factor / kept mass below which a point counts as broken (pruning).
        min_gain: the margin an index must beat the best score by before its LM is scored; None scores the LM of
            every point that is scored at all.
        progress: show a tqdm bar over the grid points.
        seed: seed of the text sample.

    Returns:
        A `DecoderSearchResult`: base scores, one `SearchPoint` per grid point, `best(criterion)`, save methods.

    Raises:
        SearchError: a bad grid or option, classes that differ from the model's, no usable texts.
        ParameterSelectionError: `base` lacks a parameter the GRADIEND model spans.

    Example:

    ```python
    >>> result = search_decoder(model, base, tokenizer, gh.features.gender())      # on the transfer task
    >>> best = result.best("balanced")
    >>> adapter = model.to_adapter(h=best.h, alpha=best.alpha)
    >>> result.save("out/search")          # search.json, search.csv, search_heatmap.png
    ```
    """
    from tqdm.auto import tqdm

    hs = check_grid(h_values, DEFAULT_H, "h_values")
    grid_alphas = check_grid(alphas, DEFAULT_ALPHAS, "alphas")
    policy = _check_policy(on, lm_policy, lm_threshold)
    max_texts = DEFAULT_MAX_TEXTS[on] if max_texts is None else max_texts
    classes = _check_inputs(model, base, dataset, split, max_texts, max_neutral, batch_size, stop_below, min_gain)
    started = time.perf_counter()
    config = model.config
    engine = GradientEngine(base, tokenizer, config.param_names)
    scorer, transfer_info = _scorer(on, engine, dataset, transfer, classes, split, max_texts, batch_size, seed)
    texts = list(builtin_neutral_texts() if neutral_texts is None else neutral_texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise SearchError("`neutral_texts` must be a non-empty list of strings (default: features.neutral_texts()).")
    texts = evenly_spaced(texts, max_neutral)
    criteria = [BALANCED, *classes]

    base_point = SearchPoint(h=0.0, alpha=0.0, is_base=True)
    best: dict[str, float] = {}

    def need_lm(point: SearchPoint) -> bool:
        return not prune or min_gain is None or any(point.indices[c] > best[c] + min_gain for c in criteria)

    points = {(h, a): SearchPoint(h=h, alpha=a) for h in hs for a in grid_alphas}
    was_training = base.training
    bar = tqdm(total=len(points), desc=f"decoder search ({on})", unit="point", disable=not progress, leave=False)
    patch = ParameterPatch(base, config.param_names, config.param_shapes)
    lm = functools.partial(lm_score, base, tokenizer, texts, lm_kind=engine.lm_kind, batch_size=batch_size,
                           bootstrap=0)
    try:
        base_p = _score(base_point, scorer, None, None, lm, lambda _: True)
        base_point.scores = policy_scores(base_point, base_point, policy, lm_threshold)
        best.update({c: base_point.score(c) for c in criteria})
        lm_floor = lm_threshold * base_point.lm_score if policy == "threshold" else None

        def evaluate(point: SearchPoint, update: dict[str, torch.Tensor]) -> None:
            tick = time.perf_counter()
            patch.write([(update, point.alpha)])
            _score(point, scorer, base_p, base_point, lm, need_lm)
            point.seconds = time.perf_counter() - tick
            if point.lm_score is None:
                point.pruned = f"LM not scored: no index beats the best score so far by more than {min_gain:g}"
            else:
                point.scores = policy_scores(point, base_point, policy, lm_threshold)
                if all(v is None for v in point.scores.values()):
                    point.pruned = f"no candidate: LM score below {lm_threshold:g} × the base's"
                for c in criteria:
                    if point.scores[c] is not None:
                        best[c] = max(best[c], point.scores[c])
            bar.update(1)
            bar.set_postfix({c[:8]: f"{best[c]:.3g}" for c in criteria}, refresh=False)

        for h in hs:
            with torch.no_grad():
                update = {name: delta.detach() for name, delta in model.decode(h).items()}
            for walk in walks(grid_alphas):
                bracket([points[(h, alpha)] for alpha in walk], functools.partial(evaluate, update=update),
                        base_point, best, criteria, prune=prune, stop_below=stop_below, min_gain=min_gain or 0.0,
                        on_prune=bar.update, lm_floor=lm_floor)
            del update
    finally:
        patch.restore()
        base.train(was_training)
        bar.close()

    settings = {
        "on": on, "lm_policy": policy, "lm_threshold": lm_threshold, **transfer_info,
        "split": split, "max_texts": max_texts, "num_texts": len(scorer.groups), "max_neutral": max_neutral,
        "num_neutral": len(texts), "batch_size": batch_size, "prune": prune, "stop_below": stop_below,
        "min_gain": min_gain, "seed": seed, "h_values": hs, "alphas": grid_alphas, "lm_kind": engine.lm_kind,
        "base_model": config.base_model_name_or_path, "gradiend_model": getattr(model, "name_or_path", None) or None,
        "num_params": len(config.param_names), "num_selected": int(config.num_selected),
        "torch_threads": torch.get_num_threads(), "total_seconds": time.perf_counter() - started,
        "points_scored": sum(p.indices is not None for p in points.values()),
        "points_with_lm": sum(p.lm_score is not None for p in points.values()),
    }
    formulas = {"indices": FEATURE_FORMULAS if on == "feature" else TRANSFER_FORMULAS[transfer_info["formula"]],
                "lm_score": LM_SCORE_FORMULA, "lm_policy": LM_POLICIES[policy], "pruning": PRUNING}
    return DecoderSearchResult(feature=getattr(dataset, "name", config.feature_name), classes=classes,
                               base=base_point, points=list(points.values()), settings=settings,
                               examples=scorer.records(), neutral_texts=texts, formulas=formulas)


def evaluate_point(model: Any, base: nn.Module, tokenizer, dataset: Any, h: float, alpha: float, *,
                   split: str = "test", **options: Any) -> DecoderSearchResult:
    """Score one point (h*, α) and the base on `split` (default "test"), to report a chosen point honestly.

    The same scores as `search_decoder` (no pruning; options as there); `result.points[0]` is the point,
    `result.base` the base on the same texts.
    """
    options.setdefault("progress", False)
    return search_decoder(model, base, tokenizer, dataset, h_values=[h], alphas=[alpha], split=split, prune=False,
                          **options)


# -- scoring one point ------------------------------------------------------------------------------------------------
@torch.no_grad()
def _score(point: SearchPoint, scorer: Any, base_p: np.ndarray | None, base: SearchPoint | None, lm,
           need_lm) -> np.ndarray:
    """Fill `point` with the scores of the model as it is now; return the per-text masses (texts × 2)."""
    started = time.perf_counter()
    p = scorer.masses()
    mass = p.sum(1)
    tiny = np.finfo(np.float64).tiny
    point.indices = scorer.indices(p, base_p)
    point.mass_kept = float(np.minimum(1.0, mass / np.maximum(mass if base_p is None else base_p.sum(1), tiny))
                            .mean())
    point.bias = scorer.bias(p)
    point.pair_mass = float(mass.mean())
    point.association = scorer.association(p)
    groups = np.asarray(scorer.groups)
    point.mean_p = {group: {c: float(p[groups == group, k].mean()) for k, c in enumerate(scorer.classes)}
                    for group in dict.fromkeys(scorer.groups)}
    if need_lm(point):
        lm_started = time.perf_counter()
        result = lm()
        point.lm_seconds = time.perf_counter() - lm_started
        ll = result.mean_log_likelihood
        point.lm_mean_log_likelihood = ll
        point.lm_perplexity = float(math.exp(-ll))
        point.lm_score = paper_lm_score(ll, result.score if result.kind == "masked_accuracy" else None)
        point.lm_factor = 1.0 if base is None else float(min(1.0, math.exp(ll - base.lm_mean_log_likelihood)))
    point.seconds = time.perf_counter() - started
    return p


def _scorer(on: str, engine: GradientEngine, dataset: Any, transfer: TransferSet | None, classes: tuple[str, str],
            split: str, max_texts: int, batch_size: int, seed: int) -> tuple[Any, dict[str, Any]]:
    if on == "feature":
        examples = sample_feature_examples(dataset, split, classes, engine, max_texts, seed)
        return FeatureScorer(engine, examples, classes, batch_size=batch_size), {"formula": "relative"}
    strict = transfer is not None
    if transfer is None:
        transfer = builtin_transfer(getattr(dataset, "name", ""), classes)
    elif not isinstance(transfer, TransferSet):
        raise SearchError(f"`transfer` must be a features.transfer.TransferSet, got {type(transfer).__name__}.")
    missing = [c for c in classes if c not in transfer.words]
    if missing:
        raise SearchError(f"The transfer set {transfer.name!r} has no words for class(es) {missing} of the GRADIEND "
                          f"model (it has {transfer.groups}); pass words for the model's classes {list(classes)}.")
    texts = sample_transfer_texts(transfer.split(split), max_texts, seed)
    if not texts:
        raise SearchError(f"The {split} split of the transfer set {transfer.name!r} is empty; use another split.")
    scorer = TransferScorer(engine, texts, {c: transfer.words[c] for c in classes}, formula=transfer.formula,
                            batch_size=batch_size, strict=strict)
    return scorer, {"transfer": transfer.name, "formula": transfer.formula, "words_used": scorer.words_used}


def sample_transfer_texts(texts: Sequence[Any], max_texts: int, seed: int) -> list[Any]:
    """At most `max_texts` texts, seeded, taken in turn from each (template, stereotype) stratum so that every
    template and every kind of description is represented."""
    strata: dict[tuple[str, str], list[Any]] = {}
    for text in texts:
        key = (text.meta.get("template", ""), text.group or "none")
        strata.setdefault(key, []).append(text)
    rng = random.Random(seed)
    for members in strata.values():
        rng.shuffle(members)
    chosen: list[Any] = []
    queues = [strata[key] for key in sorted(strata)]
    while len(chosen) < max_texts and any(queues):
        for queue in queues:
            if queue and len(chosen) < max_texts:
                chosen.append(queue.pop())
    return chosen


# -- validation -------------------------------------------------------------------------------------------------------
def _check_policy(on: str, lm_policy: str | None, lm_threshold: float) -> str:
    if on not in ON:
        raise SearchError(f"`on` must be one of {list(ON)}, got {on!r}: 'transfer' scores descriptions of people "
                          f"followed by a name or group-word slot, 'feature' the feature's own slot texts.")
    policy = DEFAULT_LM_POLICY[on] if lm_policy is None else lm_policy
    if policy not in LM_POLICIES:
        raise SearchError(f"`lm_policy` must be one of {list(LM_POLICIES)}, got {lm_policy!r}.")
    if isinstance(lm_threshold, bool) or not isinstance(lm_threshold, int | float) or not 0 < lm_threshold <= 1:
        raise SearchError(f"`lm_threshold` must be a number in (0, 1], e.g. 0.99, got {lm_threshold!r}.")
    return policy


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


__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_H",
    "DEFAULT_LM_POLICY",
    "DEFAULT_MAX_NEUTRAL",
    "DEFAULT_MAX_TEXTS",
    "DEFAULT_ON",
    "ON",
    "evaluate_point",
    "sample_transfer_texts",
    "search_decoder",
]
