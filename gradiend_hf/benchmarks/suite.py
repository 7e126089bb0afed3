"""Runs several benchmarks on one model into a `BenchmarkReport` that serialises to JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradiend_hf.benchmarks._scoring import infer_lm_kind
from gradiend_hf.benchmarks.crows_pairs import CROWS_BIAS_TYPES, crows_pairs_score
from gradiend_hf.benchmarks.examples import (
    SUFFIX,
    SuiteExamples,
    crows_examples,
    lm_examples,
    load_examples,
    save_examples,
    seat_examples,
    stereoset_examples,
)
from gradiend_hf.benchmarks.lm_score import default_lm_texts, lm_score
from gradiend_hf.benchmarks.score import Score, ScoreTable, table_from_dict, table_to_dict
from gradiend_hf.benchmarks.seat import SEAT_BIAS_TYPES, seat_score
from gradiend_hf.benchmarks.stereoset import STEREOSET_BIAS_TYPES, stereoset_score
from gradiend_hf.errors import BenchmarkError

LM_SCORE = "lm_score"
"""The suite of language-modelling ability on neutral text (perplexity / masked accuracy); not StereoSet's LMS."""

SUITES = ("stereoset", "crows", "seat", LM_SCORE)
"""StereoSet intrasentence, CrowS-Pairs, SEAT, and the LM score (perplexity / masked accuracy)."""

_RENAMED_SUITES = {"lms": LM_SCORE}
"""Suite names of earlier releases (the LM score was called "lms", easily confused with StereoSet's LMS)."""

BIAS_TYPES = ("gender", "race", "religion", "profession")
"""Suite-wide bias type names; each benchmark runs those it has (CrowS "race" = race-color)."""

SUPPORTED: dict[str, tuple[str, ...]] = {
    "stereoset": STEREOSET_BIAS_TYPES,
    "crows": tuple("race" if b == "race-color" else b for b in CROWS_BIAS_TYPES),
    "seat": SEAT_BIAS_TYPES,
}
"""Bias types per benchmark; the LM score has none (it measures language modelling on neutral text)."""

REPORT_VERSION = 2
"""2: the LM-score suite is "lm_score" (1 called it "lms"); version-1 reports are read with that renaming."""


@dataclass
class BenchmarkReport:
    """Scores of one model on several benchmarks; `results[suite][group][metric]` is a `Score`."""

    model: str
    """The model's `name_or_path` (or class name)."""
    lm_kind: str
    results: dict[str, ScoreTable]
    details: dict[str, Any] = field(default_factory=dict)
    """Per suite, extra numbers: SEAT per-test results, LM-score token counts."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds per suite."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The arguments the suites ran with (limit, seed, bias types, bootstrap)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Suites that were asked for but had nothing to run, with the reason."""
    examples: dict[str, SuiteExamples] = field(default_factory=dict, repr=False, compare=False)
    """Per suite, the per-example scores (for paired comparisons, `paired_differences`); saved beside the JSON as
    `<name>.examples.safetensors`."""

    def score(self, suite: str, group: str, metric: str) -> Score:
        """One score, with an error naming what exists when it is missing."""
        try:
            return self.results[suite][group][metric]
        except KeyError:
            available = [
                f"{s}/{g}/{m}" for s, table in self.results.items() for g, ms in table.items() for m in ms
            ]
            raise BenchmarkError(f"No score {suite}/{group}/{metric}; the report has {available}.") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (`json.dumps(report.to_dict())`)."""
        return {
            "version": REPORT_VERSION, "model": self.model, "lm_kind": self.lm_kind,
            "results": {suite: table_to_dict(table) for suite, table in self.results.items()},
            "details": self.details, "seconds": self.seconds, "settings": self.settings, "skipped": self.skipped,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkReport:
        if data.get("version") not in (1, REPORT_VERSION):
            raise BenchmarkError(
                f"Benchmark report version {data.get('version')!r} is not supported; expected {REPORT_VERSION}."
            )

        def renamed(table: dict[str, Any]) -> dict[str, Any]:
            return {_RENAMED_SUITES.get(k, k) if data["version"] == 1 else k: v for k, v in table.items()}

        return cls(
            model=data["model"], lm_kind=data["lm_kind"],
            results={suite: table_from_dict(table) for suite, table in renamed(data["results"]).items()},
            details=renamed(data.get("details", {})), seconds=renamed(data.get("seconds", {})),
            settings=data.get("settings", {}), skipped=renamed(data.get("skipped", {})),
        )  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Writes the report as indented JSON, and its per-example scores beside it (`<stem>.examples.safetensors`),
        each atomically: a killed save leaves the previous file."""
        from ..atomic_io import atomic_write_text

        path = Path(path)
        save_examples(self.examples, examples_path(path))
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> BenchmarkReport:
        """Reads a saved report, with its per-example scores when their file is beside it."""
        report = cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        if examples_path(Path(path)).is_file():
            report.examples = load_examples(examples_path(Path(path)))
        return report


def examples_path(report_path: Path) -> Path:
    """Where the per-example scores of the report saved at `report_path` go."""
    return report_path.with_name(report_path.stem + SUFFIX)


def _check_suites(suites: Iterable[str]) -> list[str]:
    suites = [suites] if isinstance(suites, str) else list(suites)
    renamed = [s for s in suites if s in _RENAMED_SUITES]
    if renamed:
        raise BenchmarkError(f"The suite {renamed[0]!r} is now called {_RENAMED_SUITES[renamed[0]]!r} (so that it is "
                             f"not mistaken for StereoSet's LMS); expected some of {list(SUITES)}.")
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise BenchmarkError(f"Unknown or no suites {unknown or suites}; expected some of {list(SUITES)}.")
    return list(dict.fromkeys(suites))


def _check_bias_types(bias_types: Iterable[str] | None) -> list[str] | None:
    if bias_types is None:
        return None
    chosen = [bias_types] if isinstance(bias_types, str) else list(bias_types)
    aliases = {"race-color": "race"}
    chosen = [aliases.get(b, b) for b in chosen]
    unknown = [b for b in chosen if b not in BIAS_TYPES]
    if unknown or not chosen:
        raise BenchmarkError(
            f"Unknown or no bias types {unknown or chosen}; expected some of {list(BIAS_TYPES)}."
        )
    return list(dict.fromkeys(chosen))


def run_benchmarks(
    model: torch.nn.Module,
    tokenizer,
    *,
    suites: Sequence[str] = SUITES,
    bias_types: Iterable[str] | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    seed: int = 0,
    bootstrap: int = 1000,
    lm_kind: str | None = None,
    lm_texts: Sequence[str] | None = None,
) -> BenchmarkReport:
    """Runs the chosen benchmarks on one model (base, adapted in place, or merged) and collects the scores.

    Args:
        model: A transformers masked or causal LM.
        tokenizer: Its tokenizer.
        suites: Some of "stereoset", "crows", "seat", "lm_score".
        bias_types: Some of gender, race, religion, profession; each suite runs those it has. All when None.
        limit: Quick runs: at most this many examples per bias type (StereoSet, CrowS), sentences per SEAT set,
            and texts for the LM score; deterministic and balanced. None runs everything.
        batch_size: Sequences per forward pass.
        progress: Show tqdm bars.
        seed: Seed of bootstraps and sampled p-values.
        bootstrap: Bootstrap resamples for every interval (0: no intervals).
        lm_kind: "masked" or "causal"; inferred when None.
        lm_texts: Texts for the LM score instead of `default_lm_texts(limit)`.

    Returns:
        The report; `compare_reports` and `plot_reports` present several side by side.

    Raises:
        BenchmarkError: An unknown suite or bias type.
    """
    suites = _check_suites(suites)
    chosen = _check_bias_types(bias_types)
    kind = infer_lm_kind(model, lm_kind)
    name = getattr(getattr(model, "config", None), "name_or_path", "") or type(model).__name__
    report = BenchmarkReport(model=name, lm_kind=kind, results={}, settings={
        "suites": suites, "bias_types": chosen, "limit": limit, "batch_size": batch_size, "seed": seed,
        "bootstrap": bootstrap,
    })  # fmt: skip
    common = {"batch_size": batch_size, "bootstrap": bootstrap, "seed": seed, "progress": progress}
    for suite in suites:
        types = None
        if suite in SUPPORTED and chosen is not None:
            types = [b for b in chosen if b in SUPPORTED[suite]]
            if not types:
                report.skipped[suite] = (
                    f"has none of the bias types {chosen} (it has {list(SUPPORTED[suite])})"
                )
                continue
        start = time.perf_counter()
        if suite == "stereoset":
            result = stereoset_score(model, tokenizer, bias_types=types, limit=limit, lm_kind=kind, **common)
            report.results[suite] = result.scores
            report.examples[suite] = stereoset_examples(result)
        elif suite == "crows":
            result = crows_pairs_score(
                model, tokenizer, bias_types=types, limit=limit, lm_kind=kind, **common
            )
            report.results[suite] = result.scores
            report.examples[suite] = crows_examples(result)
        elif suite == "seat":
            result = seat_score(model, tokenizer, bias_types=types, limit=limit, **common)
            report.results[suite] = result.scores
            report.details[suite] = {"tests": [t.to_dict() for t in result.tests]}
            report.examples[suite] = seat_examples(result)
        else:
            texts = list(lm_texts) if lm_texts is not None else default_lm_texts(limit)
            result = lm_score(model, tokenizer, texts, lm_kind=kind, **common)
            report.results[suite] = {"overall": {result.kind: Score(result.score, result.ci, len(texts))}}
            report.details[suite] = {"num_texts": len(texts), "num_tokens": result.num_tokens,
                                     "mean_log_likelihood": result.mean_log_likelihood}  # fmt: skip
            report.examples[suite] = lm_examples(result)
        report.seconds[suite] = time.perf_counter() - start
    return report
