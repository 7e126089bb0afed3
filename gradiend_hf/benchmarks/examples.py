"""Per-example scores of a benchmark run, kept beside its report so that two runs can be compared *paired*.

A report's headline numbers (SS, CrowS-Pairs, SEAT |d|, perplexity) each rest on many examples. Whether an adapter
moved a number is best judged on the same examples resampled together for both models (`paired.py`), which needs
the per-example scores: StereoSet's three candidate scores, CrowS-Pairs' two sentence scores, SEAT's target-attribute
cosines and the LM score's per-text log-likelihoods. They are saved as `<report>.examples.safetensors` next to the
report's JSON (arrays only; category names as JSON in the file's metadata).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gradiend_hf.errors import BenchmarkError

SUFFIX = ".examples.safetensors"


@dataclass
class SuiteExamples:
    """One suite's per-example arrays (`arrays`) and the names its integer codes stand for (`codes`)."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    codes: dict[str, list[str]] = field(default_factory=dict)

    def decoded(self, name: str) -> list[str]:
        """The category names of the coded array `name` (e.g. each example's bias type)."""
        return [self.codes[name][int(i)] for i in self.arrays[name]]


def _coded(values: list[str]) -> tuple[np.ndarray, list[str]]:
    book = sorted(set(values))
    index = {v: i for i, v in enumerate(book)}
    return np.array([index[v] for v in values], dtype=np.int64), book


def stereoset_examples(result: Any) -> SuiteExamples:
    targets, target_book = _coded(result.targets)
    types, type_book = _coded(result.bias_types)
    return SuiteExamples({"scores": np.asarray(result.candidate_scores, dtype=np.float64), "target": targets,
                          "bias_type": types}, {"target": target_book, "bias_type": type_book})


def crows_examples(result: Any) -> SuiteExamples:
    types, type_book = _coded(result.bias_types)
    return SuiteExamples({"scores": np.asarray(result.pair_scores, dtype=np.float64),
                          "stereo": np.asarray(result.stereo, dtype=np.int64), "bias_type": types},
                         {"bias_type": type_book})


def seat_examples(result: Any) -> SuiteExamples:
    arrays: dict[str, np.ndarray] = {}
    for test in result.tests:
        cos_a, cos_b, n_x = result.similarities[test.name]
        arrays[f"{test.name}/cos_a"] = np.asarray(cos_a, dtype=np.float64)
        arrays[f"{test.name}/cos_b"] = np.asarray(cos_b, dtype=np.float64)
        arrays[f"{test.name}/n_x"] = np.array([n_x], dtype=np.int64)
    return SuiteExamples(arrays, {"test": [t.name for t in result.tests],
                                  "bias_type": [t.bias_type for t in result.tests]})


def lm_examples(result: Any) -> SuiteExamples:
    arrays = {"log_likelihood": np.asarray(result.per_text_log_likelihood, dtype=np.float64),
              "tokens": np.asarray(result.per_text_tokens, dtype=np.float64)}
    if result.per_text_hits is not None:
        arrays["hits"] = np.asarray(result.per_text_hits, dtype=np.float64)
    return SuiteExamples(arrays, {"kind": [result.kind]})


def save_examples(examples: Mapping[str, SuiteExamples], path: Path) -> Path | None:
    """Write every suite's arrays to `path` (one safetensors file); nothing when there are none."""
    if not examples:
        return None
    import torch

    from gradiend_hf.atomic_io import atomic_save_tensors

    tensors = {f"{suite}/{name}": torch.from_numpy(np.ascontiguousarray(array))
               for suite, data in examples.items() for name, array in data.arrays.items()}
    metadata = {"format": "pt", "codes": json.dumps({suite: data.codes for suite, data in examples.items()})}
    return atomic_save_tensors(tensors, path, metadata=metadata)


def load_examples(path: Path) -> dict[str, SuiteExamples]:
    """Read a file written by `save_examples` (safetensors only: nothing is unpickled)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            codes = json.loads((handle.metadata() or {}).get("codes", "{}"))
            out: dict[str, SuiteExamples] = {suite: SuiteExamples(codes=book) for suite, book in codes.items()}
            for key in handle.keys():
                suite, name = key.split("/", 1)
                out.setdefault(suite, SuiteExamples()).arrays[name] = handle.get_tensor(key).numpy()
    except (OSError, ValueError, SafetensorError) as error:
        raise BenchmarkError(f"`{path}` is not a readable per-example file ({error}); rerun the benchmarks.") from error
    return out


__all__ = ["SUFFIX", "SuiteExamples", "crows_examples", "lm_examples", "load_examples", "save_examples",
           "seat_examples", "stereoset_examples"]
