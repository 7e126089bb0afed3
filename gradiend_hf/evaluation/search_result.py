"""What a decoder search returns: one `SearchPoint` per grid point and the `DecoderSearchResult` that picks the best.

A point's *index* measures the balance (or one class's share) of the rewritten model on held-out texts; its
*LM score* measures language modelling on neutral text. How the two make the point's score is the search's LM
policy (`LM_POLICIES`); the scores are stored on each point, so a saved result picks the same best point again.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_io import atomic_folder, atomic_write_text
from ..errors import SearchError
from .transfer import BALANCED

LM_POLICIES: dict[str, str] = {
    "threshold": "score = index for points whose LM score is at least lm_threshold (0.99) times the base's, else "
                 "the point is no candidate (the authors' newer package)",
    "product": "score = index * LM score, the LM score on an absolute scale (the paper)",
    "relative": "score = index * min(1, exp(l - l0)), l the mean log-likelihood per token of neutral text and l0 "
                "the base's (gradiend-hf before transfer selection)",
}
"""How an index and the LM score make a point's score."""

DEFAULT_LM_THRESHOLD = 0.99
"""The threshold policy keeps points whose LM score is at least this share of the base's. For a causal LM, with
LM score 1/(1 + NLL) and a base NLL near 4 (perplexity ≈ 50), this allows about +5 % perplexity."""

LM_SCORE_FORMULA = ("LM score = 1 / (1 + NLL), NLL the mean negative log-likelihood per token of neutral text "
                    "(causal LMs); the masked-token accuracy on neutral text (masked LMs)")


def paper_lm_score(mean_log_likelihood: float, masked_accuracy: float | None) -> float:
    """The paper's LM score: masked-token accuracy for a masked LM, 1 / (1 + NLL) for a causal LM."""
    if masked_accuracy is not None:
        return float(masked_accuracy)
    return 1.0 / (1.0 + max(0.0, -float(mean_log_likelihood)))


# -- one scored point -------------------------------------------------------------------------------------------------
@dataclass
class SearchPoint:
    """The scores of one rewritten model W + α·dec(h*) (or of the base model: `is_base`, h* = α = 0)."""

    h: float
    alpha: float
    indices: dict[str, float] | None = None
    """Index per criterion (`"balanced"` and each class), before the LM policy; None if not scored."""
    lm_factor: float | None = None
    """min(1, exp(ℓ − ℓ0)); None if the LM was not scored (pruned)."""
    lm_mean_log_likelihood: float | None = None
    lm_perplexity: float | None = None
    lm_score: float | None = None
    """The paper's LM score (`LM_SCORE_FORMULA`); None if not scored."""
    scores: dict[str, float | None] | None = None
    """Score per criterion under the search's LM policy (None: no candidate, e.g. below the LM threshold)."""
    bias: float | None = None
    """Feature texts: mean p(factual) − p(counterfactual); transfer texts: mean P_pos − P_neg."""
    pair_mass: float | None = None
    """Mean over texts of the two classes' summed probability (P_pos + P_neg)."""
    mass_kept: float | None = None
    """Mean over texts of min(1, mass / base mass)."""
    association: float | None = None
    """Transfer texts: mean log(P_pos/P_neg) on texts stereotyped for the positive class minus that on texts
    stereotyped for the negative class (0: descriptions make no difference); None without such texts."""
    mean_p: dict[str, dict[str, float]] | None = None
    """`mean_p[text group][class]`: mean probability (mass) of a class on the texts of a group (feature texts: their
    class; transfer texts: their stereotype, "none" for neither)."""
    seconds: float = 0.0
    """Wall time of this point (writing the edit, texts, LM)."""
    lm_seconds: float = 0.0
    pruned: str | None = None
    """Why the point was not (fully) scored or is no candidate; None when it is."""
    is_base: bool = False

    def score(self, criterion: str) -> float | None:
        """The point's score for `criterion`, or None when it was not fully scored or is no candidate."""
        if self.scores is not None:
            return self.scores.get(criterion)
        if self.indices is None or self.lm_factor is None or criterion not in self.indices:
            return None
        return self.indices[criterion] * self.lm_factor  # results saved before LM policies: "relative"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchPoint:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def policy_scores(point: SearchPoint, base: SearchPoint, policy: str, threshold: float) -> dict[str, float | None]:
    """The scores of a fully scored point (its index and LM fields filled) under an LM policy."""
    indices = point.indices or {}
    if policy == "relative":
        return {c: v * point.lm_factor for c, v in indices.items()}
    if policy == "product":
        return {c: v * point.lm_score for c, v in indices.items()}
    if policy == "threshold":
        ok = point.is_base or point.lm_score >= threshold * base.lm_score
        return {c: (v if ok else None) for c, v in indices.items()}
    raise SearchError(f"Unknown LM policy {policy!r}; expected one of {list(LM_POLICIES)}.")


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
    examples: list[dict[str, Any]] = field(default_factory=list)
    """The texts scored (feature texts: text, factual, counterfactual, label; transfer texts: text, group)."""
    neutral_texts: list[str] = field(default_factory=list)
    formulas: dict[str, Any] = field(default_factory=dict)

    JSON_NAME = "search.json"
    CSV_NAME = "search.csv"
    HEATMAP_NAME = "search_heatmap.png"

    def __repr__(self) -> str:
        best = self.best(BALANCED)
        where = "the base" if best.is_base else f"h*={best.h:g}, alpha={best.alpha:g}"
        scored = sum(p.indices is not None for p in self.points)
        return (f"DecoderSearchResult(feature={self.feature!r}, on={self.on!r}, lm_policy={self.lm_policy!r}, "
                f"points={len(self.points)} ({scored} scored), best balanced {best.score(BALANCED):.4g} at {where}, "
                f"base {self.base.score(BALANCED):.4g})")

    @property
    def on(self) -> str:
        """What the points were scored on: "feature" (the feature's own slot texts) or "transfer"."""
        return self.settings.get("on", "feature")

    @property
    def lm_policy(self) -> str:
        return self.settings.get("lm_policy", "relative")

    @property
    def criteria(self) -> list[str]:
        """`"balanced"` and the two class names: what `best` accepts."""
        return [BALANCED, *self.classes]

    def _check_criterion(self, criterion: str) -> None:
        if criterion not in self.criteria:
            raise SearchError(f"Unknown criterion {criterion!r}; expected one of {self.criteria}.")

    def best(self, criterion: str = BALANCED) -> SearchPoint:
        """The candidate point (or the base) with the highest score for `criterion`.

        Ties go to the base model, then to the first point in table order.
        """
        self._check_criterion(criterion)
        candidates = [self.base, *(p for p in self.points if p.score(criterion) is not None)]
        return max(candidates, key=lambda p: p.score(criterion))

    def beats_base(self, criterion: str = BALANCED) -> bool:
        """Whether some edit scores higher than the base model itself."""
        return not self.best(criterion).is_base

    def fallback(self, criterion: str = BALANCED, *, threshold: float = DEFAULT_LM_THRESHOLD) -> SearchPoint | None:
        """When no edit beats the base: the edit (α ≠ 0) with the highest index among those whose LM score was
        scored and is at least `threshold` × the base's (so a fallback never breaks the model); None if none is."""
        self._check_criterion(criterion)
        keep = [p for p in self.points if p.indices is not None and p.alpha != 0.0 and _lm_ok(p, self.base, threshold)]
        return max(keep, key=lambda p: p.indices[criterion], default=None)

    def rows(self) -> list[dict[str, Any]]:
        """Flat table rows (base first), as written to CSV."""
        out = []
        for point in [self.base, *self.points]:
            indices = point.indices or {}
            row: dict[str, Any] = {"row": "base" if point.is_base else "point", "h": point.h, "alpha": point.alpha}
            for c in self.criteria:
                row[f"score_{c}"] = point.score(c)
            for c in self.criteria:
                row[f"index_{c}"] = indices.get(c)
            row.update(lm_score=point.lm_score, lm_factor=point.lm_factor,
                       lm_mean_log_likelihood=point.lm_mean_log_likelihood, lm_perplexity=point.lm_perplexity,
                       bias=point.bias, pair_mass=point.pair_mass, mass_kept=point.mass_kept,
                       association=point.association)
            for group, values in sorted((point.mean_p or {}).items()):
                for word_class in self.classes:
                    row[f"p_{word_class}_on_{group}"] = values.get(word_class)
            row.update(seconds=point.seconds, lm_seconds=point.lm_seconds, pruned=point.pruned or "")
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "gradiend-decoder-search",
            "version": 2,
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
            formulas=data.get("formulas", {}),
        )

    def to_json(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=True))

    @classmethod
    def from_json(cls, path: str | Path) -> DecoderSearchResult:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        rows = self.rows()
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: ("" if row.get(k) is None else row[k]) for k in columns} for row in rows)
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


def _lm_ok(point: SearchPoint, base: SearchPoint, threshold: float) -> bool:
    if point.lm_score is not None and base.lm_score is not None:
        return point.lm_score >= threshold * base.lm_score
    return point.lm_factor is not None and point.lm_factor >= threshold  # saved before the paper's LM score


__all__ = [
    "DEFAULT_LM_THRESHOLD",
    "LM_POLICIES",
    "LM_SCORE_FORMULA",
    "DecoderSearchResult",
    "SearchPoint",
    "paper_lm_score",
    "policy_scores",
]
