"""Zero-shot downstream accuracy on GLUE-format dev sets a user points at (SST-2, CoLA, RTE), no fine-tuning.

Each example becomes a prompt whose answer is one of two label words; the prediction is the word the LM finds more
likely (causal: the summed log-probability of its tokens after the prompt; masked: the probability at a [MASK] slot,
which needs single-token label words). The dev sets carry no licence, so nothing here ships them: pass the folder
that holds `SST-2/dev.tsv`, `CoLA/dev.tsv` and `RTE/dev.tsv` (GLUE's layout, or the datasets export for RTE).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradiend_hf.benchmarks._data import evenly_spaced
from gradiend_hf.benchmarks._scoring import (
    causal_log_probs,
    infer_lm_kind,
    mask_token_id,
    masked_log_probs,
    pad_id,
    sentence_ids,
)
from gradiend_hf.benchmarks.bootstrap import bootstrap_ci
from gradiend_hf.benchmarks.score import Score
from gradiend_hf.errors import BenchmarkError


@dataclass(frozen=True)
class GlueTask:
    """A GLUE task as a two-word zero-shot prompt."""

    name: str
    folder: str
    words: tuple[str, str]
    """The answer word of label 0 and of label 1 (each with its leading space)."""
    prompt: Callable[[Sequence[str]], str]
    """The prompt for an example's text fields; the answer follows it."""


GLUE_TASKS: dict[str, GlueTask] = {
    "sst2": GlueTask("sst2", "SST-2", (" negative", " positive"),
                     lambda f: f"Review: {f[0].strip()}\nSentiment (positive or negative):"),
    "cola": GlueTask("cola", "CoLA", (" no", " yes"),
                     lambda f: f"Sentence: {f[0].strip()}\nIs this sentence grammatical (yes or no)?"),
    "rte": GlueTask("rte", "RTE", (" True", " False"),
                    lambda f: f"{f[0].strip()}\nQuestion: {f[1].strip()} True or False?\nAnswer:"),
}
"""SST-2 (label 1 positive), CoLA (label 1 acceptable), RTE (label 0 entailment)."""


def load_glue(folder: str | Path, task: str, *, limit: int | None = None) -> list[tuple[tuple[str, ...], int]]:
    """(text fields, label) of a task's `dev.tsv`, `limit` of them spread evenly over the file.

    Raises:
        BenchmarkError: an unknown task, a missing file, or rows in no known layout.
    """
    if task not in GLUE_TASKS:
        raise BenchmarkError(f"Unknown GLUE task {task!r}; expected one of {sorted(GLUE_TASKS)}.")
    path = Path(folder) / GLUE_TASKS[task].folder / "dev.tsv"
    if not path.is_file():
        raise BenchmarkError(f"No {path}; point to a folder of GLUE dev sets ({GLUE_TASKS[task].folder}/dev.tsv).")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    examples: list[tuple[tuple[str, ...], int]] = []
    header = rows[0] if rows else []
    try:
        if task == "sst2":
            examples = [((r[0],), int(r[1])) for r in rows[1:] if r]
        elif task == "cola":  # GLUE's CoLA dev has no header: source, label, original judgement, sentence
            examples = [((r[3],), int(r[1])) for r in rows if r]
        elif "sentence1" in header and header[0] == "sentence1":  # the datasets export: 0 = entailment
            examples = [((r[0], r[1]), int(r[2])) for r in rows[1:] if r]
        else:  # GLUE's own RTE: index, sentence1, sentence2, label as words
            examples = [((r[1], r[2]), 0 if r[3] == "entailment" else 1) for r in rows[1:] if r]
    except (IndexError, ValueError) as error:
        raise BenchmarkError(f"{path} is not in GLUE's {task} layout ({error}); expected GLUE's dev.tsv.") from None
    if not examples:
        raise BenchmarkError(f"{path} holds no examples.")
    return evenly_spaced(examples, limit)


@torch.no_grad()
def glue_zero_shot(model: torch.nn.Module, tokenizer, folder: str | Path, *, tasks: Sequence[str] | None = None,
                   limit: int | None = None, batch_size: int = 16, bootstrap: int = 1000, seed: int = 0,
                   progress: bool = False) -> tuple[dict[str, Score], dict[str, str]]:
    """Zero-shot accuracy (in %) per task with a bootstrap interval, and the tasks skipped with the reason.

    Args:
        model: a causal or masked LM (with any adapter applied).
        tokenizer: its tokenizer.
        folder: the folder of GLUE dev sets.
        tasks: some of `GLUE_TASKS` (default: those whose file exists).
        limit: at most this many examples per task, spread evenly.
        batch_size, bootstrap, seed, progress: as for the other benchmarks.
    """
    kind = infer_lm_kind(model)
    chosen = list(tasks) if tasks is not None else [t for t, spec in GLUE_TASKS.items()
                                                   if (Path(folder) / spec.folder / "dev.tsv").is_file()]
    scores, skipped = {}, {}
    for task in chosen:
        spec = GLUE_TASKS[task]
        examples = load_glue(folder, task, limit=limit)
        words = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in spec.words]
        prompts = [spec.prompt(fields) for fields, _ in examples]
        if kind == "masked":
            if any(len(w) != 1 for w in words):
                skipped[task] = f"its label words {list(spec.words)} are not single tokens for a masked LM"
                continue
            choice = _masked_choice(model, tokenizer, prompts, [w[0] for w in words], batch_size, progress)
        else:
            choice = _causal_choice(model, tokenizer, prompts, words, batch_size, progress)
        correct = (choice == np.array([label for _, label in examples])).astype(np.float64)
        ci = bootstrap_ci(lambda idx, c=correct: 100 * c[idx].mean(), len(correct), resamples=bootstrap, seed=seed)
        scores[task] = Score(100 * float(correct.mean()), ci, len(correct))
    return scores, skipped


def _causal_choice(model, tokenizer, prompts: list[str], words: list[list[int]], batch_size: int,
                   progress: bool) -> np.ndarray:
    """Index of the label word with the higher summed log-probability after each prompt."""
    contexts = sentence_ids(tokenizer, prompts, max_length=512, prepend_bos=True)
    sequences = [context + word for word in words for context in contexts]
    log_probs = causal_log_probs(model, sequences, pad=pad_id(tokenizer), batch_size=batch_size, progress=progress,
                                 desc="GLUE")
    totals = [float(lp[-len(words[i // len(contexts)]):].sum()) for i, lp in enumerate(log_probs)]
    return np.array(totals).reshape(len(words), len(contexts)).argmax(axis=0)


def _masked_choice(model, tokenizer, prompts: list[str], word_ids: list[int], batch_size: int,
                   progress: bool) -> np.ndarray:
    """Index of the label word more likely at a [MASK] after each prompt."""
    mask = mask_token_id(tokenizer)
    inputs = [list(ids) for ids in tokenizer([f"{p} {tokenizer.mask_token}." for p in prompts], truncation=True,
                                             max_length=512)["input_ids"]]
    positions = [[row.index(mask)] * len(word_ids) for row in inputs]
    targets = [list(word_ids) for _ in inputs]
    log_probs, _ = masked_log_probs(model, inputs, positions, targets, pad=pad_id(tokenizer), batch_size=batch_size,
                                    progress=progress, desc="GLUE")
    return np.array([int(torch.argmax(lp)) for lp in log_probs])


__all__ = ["GLUE_TASKS", "GlueTask", "glue_zero_shot", "load_glue"]
