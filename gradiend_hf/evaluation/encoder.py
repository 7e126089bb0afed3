"""How well the encoder reads the feature: h per group of texts (two classes, two h ≈ 0 controls) and its metrics."""

from __future__ import annotations

import json
import logging
import math
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import FeatureDataError, TargetTokenizationError
from ..features.builtin import neutral_texts as builtin_neutral_texts
from ..features.dataset import FeatureExample
from ..gradients import GradientEngine, drop_multi_token_examples
from .controls import NEUTRAL, NON_FEATURE_SLOT, neutral_examples, non_feature_slot_examples

logger = logging.getLogger(__name__)

REPORT_NAME = "encoder_report.json"
"""File `EncoderReport.save` writes the report to."""

PLOT_NAME = "encoder_h_distribution.png"
"""File `EncoderReport.save` draws the h distribution to."""

CONTROL_GROUPS: tuple[str, str] = (NEUTRAL, NON_FEATURE_SLOT)
"""The groups with label 0: texts whose slot target is not a feature word."""


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two 1-d tensors (0.0 when either is constant)."""
    x, y = x.detach().double().flatten(), y.detach().double().flatten()
    x, y = x - x.mean(), y - y.mean()
    denominator = x.norm() * y.norm()
    return float((x @ y) / denominator) if denominator > 0 else 0.0


# -- the quick version the trainer validates with ------------------------------------------------------------------
@dataclass
class EncoderCorrelation:
    """Feature values of labelled texts and how they line up with the classes."""

    pearson_r: float
    """Correlation of h with +1 (positive class) / −1 (negative class)."""
    mean_h: dict[str, float]
    """Mean feature value per class."""
    h: torch.Tensor
    """The feature value of every text, in input order."""
    labels: torch.Tensor
    """+1 / −1 per text."""


def encoder_correlation(model: Any, engine: GradientEngine, examples: Sequence[Any], *, batch_size: int = 16,
                        progress: bool = False) -> EncoderCorrelation:
    """Encode labelled slot examples with a GRADIEND model and correlate h (first neuron) with their class.

    Args:
        model: a `GradiendModel`; its `positive_class` counts as +1, the other class as −1.
        engine: a `GradientEngine` over the model's base model and parameters.
        examples: `FeatureExample`s of the model's two classes.
        batch_size: texts encoded at once.
        progress: show a tqdm bar.
    """
    positive, negative = model.config.positive_class, model.config.negative_class
    unknown = sorted({e.label for e in examples} - {positive, negative})
    if unknown:
        raise ValueError(f"Examples have classes {unknown} that the model does not know ({positive}, {negative}).")
    h = model.encode_examples(engine, examples, batch_size=batch_size, progress=progress)[:, 0]
    labels = torch.tensor([1.0 if e.label == positive else -1.0 for e in examples])
    means = {c: float(h[labels == v].mean()) if bool((labels == v).any()) else float("nan")
             for c, v in ((positive, 1.0), (negative, -1.0))}
    return EncoderCorrelation(pearson(h, labels), means, h, labels)


# -- metrics on given h values ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupStats:
    """Summary of the h values of one group (NaN for an empty group)."""

    count: int
    mean: float
    std: float
    """Population standard deviation (divides by n, so one text gives 0)."""
    median: float
    min: float
    max: float


@dataclass(frozen=True)
class GroupPosition:
    """Where a label-0 group's mean h sits between the two class means.

    With m_g, m₊, m₋ the mean h of the group, the positive and the negative class:
    `distance_to_positive` = |m_g − m₊|, `distance_to_negative` = |m_g − m₋| and
    `normalised_position` = (m_g − m₋) / (m₊ − m₋): 0 at the negative class, 1 at the positive class, 0.5 midway
    (what a feature-blind control group should give); NaN when m₊ = m₋ or a group is empty.
    """

    distance_to_positive: float
    distance_to_negative: float
    normalised_position: float


@dataclass(frozen=True)
class EncoderMetrics:
    """The numbers of an encoder evaluation, computed from h per group by `encoder_metrics`."""

    pearson_r: float
    """Pearson r of h with the label over all groups: +1 positive class, −1 negative class, 0 control groups."""
    pearson_r_classes: float
    """Pearson r of h with the label over the two classes alone (the paper's encoder correlation)."""
    sign_accuracy: float
    """Share of class texts with sign(h) = label (h > 0 ↔ positive class; h = 0 counts as wrong)."""
    groups: dict[str, GroupStats]
    """Statistics of h per group."""
    positions: dict[str, GroupPosition]
    """Position of each label-0 group between the class means."""


def _nan_if_empty(values: Sequence[float], reduce) -> float:
    return float(reduce(values)) if values else math.nan


def encoder_metrics(h: Mapping[str, Sequence[float]], *, positive_class: str,
                    negative_class: str) -> EncoderMetrics:
    """Metrics of given feature values: correlations, sign accuracy, per-group statistics and control positions.

    Every group other than the two classes has label 0. With labels y ∈ {+1, −1, 0}:

    - `pearson_r` = Σ(h − h̄)(y − ȳ) / √(Σ(h − h̄)² Σ(y − ȳ)²) over all texts (0.0 when h or y is constant);
    - `pearson_r_classes`: the same over the texts of the two classes only;
    - `sign_accuracy` = #{class texts with h·y > 0} / #{class texts};
    - per group: count, mean, population std √(Σ(h − h̄)²/n), median, min, max;
    - per label-0 group g: |m_g − m₊|, |m_g − m₋| and (m_g − m₋)/(m₊ − m₋) (see `GroupPosition`).

    Args:
        h: feature values (first neuron) per group name; must include both class names.
        positive_class: the group with label +1.
        negative_class: the group with label −1.
    """
    missing = [c for c in (positive_class, negative_class) if c not in h]
    if missing:
        raise FeatureDataError(f"`h` has no group for class {missing[0]!r}; found groups {sorted(h)}.")
    values = {name: [float(v) for v in group] for name, group in h.items()}
    labels = {name: 1.0 if name == positive_class else -1.0 if name == negative_class else 0.0 for name in values}

    def r(names: Sequence[str]) -> float:
        xs = [v for n in names for v in values[n]]
        ys = [labels[n] for n in names for _ in values[n]]
        if len(xs) < 2:
            return math.nan
        return pearson(torch.tensor(xs, dtype=torch.float64), torch.tensor(ys, dtype=torch.float64))

    classes = [positive_class, negative_class]
    class_pairs = [(v, labels[n]) for n in classes for v in values[n]]
    sign_accuracy = (sum(v * y > 0 for v, y in class_pairs) / len(class_pairs)) if class_pairs else math.nan
    groups = {
        name: GroupStats(
            count=len(group),
            mean=_nan_if_empty(group, statistics.fmean),
            std=_nan_if_empty(group, statistics.pstdev),
            median=_nan_if_empty(group, statistics.median),
            min=_nan_if_empty(group, min),
            max=_nan_if_empty(group, max),
        )
        for name, group in values.items()
    }
    m_pos, m_neg = groups[positive_class].mean, groups[negative_class].mean
    positions = {}
    for name in values:
        if name in classes:
            continue
        m = groups[name].mean
        span = m_pos - m_neg
        positions[name] = GroupPosition(
            distance_to_positive=abs(m - m_pos),
            distance_to_negative=abs(m - m_neg),
            normalised_position=(m - m_neg) / span if span != 0 else math.nan,
        )
    return EncoderMetrics(r(list(values)), r(classes), sign_accuracy, groups, positions)


# -- the report ------------------------------------------------------------------------------------------------------
def _json_safe(value: Any) -> Any:
    """NaN / inf become None (JSON has no NaN); containers are converted recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class EncoderReport:
    """Feature values of four groups of texts, their metrics, and where the texts came from.

    Groups, in this order: the positive class (label +1), the negative class (−1), `"neutral"` (0) and
    `"non_feature_slot"` (0); see `evaluate_encoder`. `examples[g][i]` encodes to `h[g][i]`.
    """

    feature: str
    """Name of the feature (e.g. "gender")."""
    classes: tuple[str, str]
    """(positive class, negative class): the classes with label +1 and −1."""
    split: str
    """Split of the feature the class texts come from."""
    metrics: EncoderMetrics
    h: dict[str, list[float]]
    """h (first neuron) per group, in the order of `examples`."""
    examples: dict[str, list[FeatureExample]]
    """The slot examples encoded, per group."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Examples dropped per group because a target word is not one token for the base tokenizer."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Texts per control group that gave no example (a feature word in a neutral text, no usable ordinary word)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Provenance and settings: base model, source mode, LM kind, latent size, seed, timings."""
    notes: list[str] = field(default_factory=list)
    """Caveats, e.g. that only the first of several neurons was evaluated."""

    @property
    def labels(self) -> dict[str, float]:
        """Label per group: +1, −1 or 0."""
        positive, negative = self.classes
        return {g: 1.0 if g == positive else -1.0 if g == negative else 0.0 for g in self.h}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN as None): metrics, h and slot examples per group, drop counts, provenance."""
        metrics = {
            "pearson_r": self.metrics.pearson_r,
            "pearson_r_classes": self.metrics.pearson_r_classes,
            "sign_accuracy": self.metrics.sign_accuracy,
            "groups": {g: vars(s) for g, s in self.metrics.groups.items()},
            "positions": {g: vars(p) for g, p in self.metrics.positions.items()},
        }
        groups = {
            g: {
                "label": self.labels[g],
                "h": list(self.h[g]),
                "examples": [{"text": e.text, "factual": e.factual, "counterfactual": e.counterfactual,
                              "label": e.label, "meta": dict(e.meta)} for e in self.examples.get(g, [])],
            }
            for g in self.h
        }
        return _json_safe({
            "feature": self.feature,
            "positive_class": self.classes[0],
            "negative_class": self.classes[1],
            "split": self.split,
            "metrics": metrics,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "info": self.info,
            "notes": self.notes,
            "groups": groups,
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderReport:
        """Rebuild a report from `to_dict()` output (metrics are recomputed from the stored h values)."""
        classes = (data["positive_class"], data["negative_class"])
        h = {g: [math.nan if v is None else float(v) for v in group["h"]] for g, group in data["groups"].items()}
        examples = {
            g: [FeatureExample(e["text"], e["factual"], e["counterfactual"], e["label"], e.get("meta", {}))
                for e in group["examples"]]
            for g, group in data["groups"].items()
        }
        return cls(
            feature=data["feature"], classes=classes, split=data["split"],
            metrics=encoder_metrics(h, positive_class=classes[0], negative_class=classes[1]),
            h=h, examples=examples, dropped=dict(data.get("dropped", {})), skipped=dict(data.get("skipped", {})),
            info=dict(data.get("info", {})), notes=list(data.get("notes", [])),
        )

    @classmethod
    def load(cls, directory: str | Path) -> EncoderReport:
        """Read `encoder_report.json` from a folder written by `save`."""
        return cls.from_dict(json.loads((Path(directory) / REPORT_NAME).read_text(encoding="utf-8")))

    def save(self, directory: str | Path) -> list[Path]:
        """Write `encoder_report.json` and the plot `encoder_h_distribution.png` to `directory`; return both paths."""
        from .plots import plot_h_distribution

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        report_path = directory / REPORT_NAME
        report_path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return [report_path, plot_h_distribution(self, directory / PLOT_NAME)]

    def summary(self) -> str:
        """A short plain-text table: h per group and the headline metrics."""

        def fmt(x: float, signed: bool = True) -> str:
            return "nan" if not math.isfinite(x) else (f"{x:+.3f}" if signed else f"{x:.3f}")

        width = max(18, *(len(g) + 2 for g in self.h))
        lines = [f"{'group':<{width}}{'label':>6}{'n':>6}{'mean':>9}{'std':>8}{'median':>9}{'dropped':>9}"]
        for g in self.h:
            s = self.metrics.groups[g]
            label = {1.0: "+1", -1.0: "-1"}.get(self.labels[g], "0")
            lines.append(f"{g:<{width}}{label:>6}{s.count:>6}{fmt(s.mean):>9}{fmt(s.std, False):>8}"
                         f"{fmt(s.median):>9}{self.dropped.get(g, 0):>9}")
        m = self.metrics
        lines.append(f"Pearson r, all groups (labels +1/-1/0): {fmt(m.pearson_r)}")
        lines.append(f"Pearson r, the two classes:             {fmt(m.pearson_r_classes)}")
        lines.append(f"sign accuracy on the two classes:       {fmt(m.sign_accuracy, False)}")
        for g, p in m.positions.items():
            lines.append(f"{g}: position {fmt(p.normalised_position)} between {self.classes[1]} (0) and "
                         f"{self.classes[0]} (1); |Δmean| to {self.classes[0]} {fmt(p.distance_to_positive, False)}, "
                         f"to {self.classes[1]} {fmt(p.distance_to_negative, False)}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


# -- the evaluation --------------------------------------------------------------------------------------------------
def _sample(examples: list[FeatureExample], limit: int | None, seed: int) -> list[FeatureExample]:
    """A seeded sample of at most `limit` examples, in their original order."""
    if limit is None or len(examples) <= limit:
        return examples
    chosen = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in chosen]


def _feature_words(config: Any, dataset: Any) -> set[str]:
    """Every target word of the feature: the model's recorded targets and the dataset's factual/counterfactuals."""
    words = {w for targets in (config.feature_targets or {}).values() for w in targets}
    for split in ("train", "validation", "test"):
        for example in getattr(dataset, split, []):
            words.update((example.factual, example.counterfactual))
    return {w.lower() for w in words}


def _check_classes(config: Any, dataset: Any) -> tuple[str, str]:
    positive, negative = config.positive_class, config.negative_class
    if set(dataset.classes) != {positive, negative}:
        raise FeatureDataError(
            f"The feature {dataset.name!r} has classes {list(dataset.classes)}, but the GRADIEND model was trained on "
            f"{[positive, negative]}. Evaluate with the feature the model was trained on."
        )
    clash = sorted({positive, negative} & set(CONTROL_GROUPS))
    if clash:
        raise FeatureDataError(
            f"A class is named {clash[0]!r}, which is the name of a control group of the encoder evaluation "
            f"{list(CONTROL_GROUPS)}; rename the class in the feature data."
        )
    return positive, negative


def evaluate_encoder(
    model: Any,
    base: torch.nn.Module,
    tokenizer: Any,
    dataset: Any,
    *,
    split: str = "test",
    max_per_group: int | None = 200,
    neutral_texts: Sequence[str] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    max_length: int = 256,
    progress: bool = True,
) -> EncoderReport:
    """Encode four groups of texts with a GRADIEND model and measure how h tracks the feature.

    Groups and their labels:

    - the two classes: the `split` texts of each class, +1 for `config.positive_class`, −1 for the other;
    - `"neutral"` (0): texts with no feature word, the slot on an ordinary word (see `evaluation.controls`),
      the counterfactual being the true slot word of another neutral text;
    - `"non_feature_slot"` (0): the class texts above with the feature word filled in and the slot moved to an
      ordinary word, factual = the word there.

    Examples whose targets are not single tokens are dropped (counted in `report.dropped`); control slots are
    drawn among single-token words first, so few of them are. A masked LM sees the slot masked, a causal LM the
    text before it. All groups are encoded together, batched, by `GradiendModel.encode_examples` (one JVP pass per
    batch, no per-text backward). Metrics are those of `encoder_metrics`, on the first neuron.

    Args:
        model: a `GradiendModel`.
        base: the base language model it was trained on.
        tokenizer: the base model's tokenizer.
        dataset: the `FeatureDataset` the model was trained on (its classes must be the model's).
        split: the split the class texts come from.
        max_per_group: at most this many texts per group (a seeded sample; None: all).
        neutral_texts: texts without feature words; default `gradiend_hf.features.neutral_texts()` (WikiText-2).
        batch_size: texts per JVP pass.
        seed: seed of the samples and of the control slot choice.
        max_length: longest input in tokens (as in `GradientEngine`).
        progress: show a tqdm bar while encoding.

    Returns:
        An `EncoderReport`; `report.save(folder)` writes its JSON and the h-distribution plot.

    Raises:
        FeatureDataError: the dataset's classes differ from the model's, or a class has no usable `split` text.
        ParameterSelectionError: `base` lacks a parameter the model spans.

    Example:

    ```python
    >>> report = gh.evaluate_encoder(model, base, tok, gh.features.gender())
    >>> print(report.summary()); report.save("out/gender/evaluation")
    ```
    """
    config = model.config
    positive, negative = _check_classes(config, dataset)
    model.check_base_model(base)
    engine = GradientEngine(base, tokenizer, config.param_names, max_length=max_length)
    feature_words = _feature_words(config, dataset)

    def single_token(prefix: str, word: str) -> bool:
        try:
            engine.slots.target_id(prefix, word)
        except TargetTokenizationError:
            return False
        return True

    examples: dict[str, list[FeatureExample]] = {}
    dropped: dict[str, int] = {}
    skipped: dict[str, int] = {}
    by_class = dataset.by_class(split)
    for cls in (positive, negative):
        kept, dropped[cls] = drop_multi_token_examples(by_class[cls], engine.slots)
        if not kept:
            raise FeatureDataError(
                f"The {split} split of {dataset.name!r} has no usable text of class {cls!r} ({len(by_class[cls])} "
                f"texts, {dropped[cls]} dropped because a target word is not one token for this tokenizer)."
            )
        examples[cls] = _sample(kept, max_per_group, seed)
    texts = builtin_neutral_texts() if neutral_texts is None else list(neutral_texts)
    neutral, skipped[NEUTRAL] = neutral_examples(texts, feature_words=feature_words, limit=max_per_group, seed=seed,
                                                 accept=single_token)
    examples[NEUTRAL], dropped[NEUTRAL] = drop_multi_token_examples(neutral, engine.slots)
    moved, skipped[NON_FEATURE_SLOT] = non_feature_slot_examples(examples[positive] + examples[negative],
                                                                 feature_words=feature_words, seed=seed,
                                                                 accept=single_token)
    moved, dropped[NON_FEATURE_SLOT] = drop_multi_token_examples(moved, engine.slots)
    examples[NON_FEATURE_SLOT] = _sample(moved, max_per_group, seed)

    everything = [e for group in examples.values() for e in group]
    started = time.perf_counter()
    encoded = model.encode_examples(engine, everything, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - started
    h: dict[str, list[float]] = {}
    offset = 0
    for name, group in examples.items():
        h[name] = [float(v) for v in encoded[offset: offset + len(group), 0]]
        offset += len(group)

    notes = []
    if config.latent_size > 1:
        notes.append(f"The model has {config.latent_size} neurons; only the first (index 0) is evaluated.")
    for name in CONTROL_GROUPS:
        if not examples[name]:
            notes.append(f"The {name!r} group is empty ({skipped[name]} texts skipped, {dropped[name]} dropped).")
    for note in notes:
        logger.warning(note)
    info = {
        "base_model": config.base_model_name_or_path,
        "lm_kind": engine.lm_kind,
        "source": config.source,
        "latent_size": config.latent_size,
        "neuron": 0,
        "max_per_group": max_per_group,
        "seed": seed,
        "batch_size": batch_size,
        "neutral_texts": "gradiend_hf.features.neutral_texts()" if neutral_texts is None else f"{len(texts)} given",
        "encode_seconds": round(seconds, 3),
        "texts_per_second": round(len(everything) / seconds, 2) if seconds > 0 else None,
    }
    return EncoderReport(
        feature=dataset.name, classes=(positive, negative), split=split,
        metrics=encoder_metrics(h, positive_class=positive, negative_class=negative),
        h=h, examples=examples, dropped=dropped, skipped=skipped, info=info, notes=notes,
    )


__all__ = [
    "CONTROL_GROUPS",
    "PLOT_NAME",
    "REPORT_NAME",
    "EncoderCorrelation",
    "EncoderMetrics",
    "EncoderReport",
    "GroupPosition",
    "GroupStats",
    "encoder_correlation",
    "encoder_metrics",
    "evaluate_encoder",
    "pearson",
]
