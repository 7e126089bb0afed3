"""Language-modelling ability: perplexity of a causal LM, masked-token accuracy of a masked LM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from gradiend_hf.benchmarks._data import data_file, evenly_spaced
from gradiend_hf.benchmarks._scoring import (
    LMKind,
    causal_log_probs,
    infer_lm_kind,
    mask_token_id,
    masked_log_probs,
    pad_id,
    sentence_ids,
)
from gradiend_hf.benchmarks.bootstrap import ratio_ci
from gradiend_hf.errors import BenchmarkError

LM_TEXTS_FILE = "lm_texts.txt"
"""Shipped WikiText-2 test sentences (none of them in `features.neutral_texts()`)."""

MASK_EVERY = 7
"""Masked LMs: pass p masks the non-special tokens j with j % 7 == p, so in 7 passes every token is masked
exactly once while each pass masks ≈ 14 % of the text (close to BERT's 15 %), always with the mask token."""


@dataclass
class LMScoreResult:
    """How well a model predicts neutral text; `score` is the headline number."""

    kind: Literal["perplexity", "masked_accuracy"]
    score: float
    """Causal: perplexity (lower is better); masked: masked-token accuracy in [0, 1]."""
    mean_log_likelihood: float
    """Mean log p of the scored tokens (causal: every next token; masked: every masked token)."""
    num_tokens: int
    ci: tuple[float, float] | None
    """Bootstrap 95 % interval of `score` over texts (None when bootstrap=0)."""
    per_text_log_likelihood: list[float]
    """Summed log p per text; with `per_text_tokens`, callers can re-aggregate over any subset."""
    per_text_tokens: list[int]
    per_text_hits: list[float] | None = None
    """Masked LMs: per text, how many masked tokens were predicted right (None for causal LMs)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the interval as a list)."""
        data = asdict(self)
        data["ci"] = list(self.ci) if self.ci is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LMScoreResult:
        fields = dict(data)
        fields["ci"] = tuple(fields["ci"]) if fields.get("ci") is not None else None
        return cls(**fields)


def default_lm_texts(limit: int | None = None) -> list[str]:
    """The shipped LM-score text: WikiText-2 test sentences, one per line (CC BY-SA 3.0).

    Args:
        limit: Take this many sentences spread evenly over the file (deterministic), or all when None.

    Returns:
        The sentences, in file order.
    """
    return evenly_spaced(data_file(LM_TEXTS_FILE).read_text(encoding="utf-8").splitlines(), limit)


def lm_score(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    lm_kind: LMKind | None = None,
    batch_size: int = 16,
    max_length: int = 128,
    bootstrap: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> LMScoreResult:
    """Scores a model's language modelling on `texts` (e.g. `default_lm_texts()`), batched under no_grad.

    Causal LMs: log p of every token given its prefix; the first token is conditioned on BOS when the tokenizer
    adds one, and is not scored otherwise. Perplexity = exp(−Σ log p / Σ tokens). Masked LMs: every
    non-special token is masked once (`MASK_EVERY` passes); accuracy = share of masked tokens whose argmax is
    the original token.

    Args:
        model: A transformers masked or causal LM (base, with an adapter applied, or merged).
        tokenizer: Its tokenizer.
        texts: The texts to score.
        lm_kind: "masked" or "causal"; inferred from the model class when None.
        batch_size: Texts (causal) or masked copies (masked) per forward pass.
        max_length: Longer texts are truncated to this many tokens.
        bootstrap: Bootstrap resamples of texts for `ci`; 0 skips it (fastest, for repeated calls).
        seed: Seed of the bootstrap.
        progress: Show a tqdm bar.

    Returns:
        The score with its per-text parts.

    Raises:
        BenchmarkError: No texts, or no token could be scored.
    """
    texts = list(texts)
    if not texts:
        raise BenchmarkError("lm_score needs at least one text, got none; pass e.g. default_lm_texts().")
    kind = infer_lm_kind(model, lm_kind)
    if kind == "causal":
        ids = sentence_ids(tokenizer, texts, max_length=max_length, prepend_bos=False)
        per_token = causal_log_probs(model, ids, pad=pad_id(tokenizer), batch_size=batch_size, progress=progress,
                                     desc="perplexity")  # fmt: skip
        sums = np.array([float(t.double().sum()) for t in per_token])
        counts = np.array([t.numel() for t in per_token])
        hits = None
    else:
        sums, counts, hits = _masked_parts(model, tokenizer, texts, max_length, batch_size, progress)
    total = int(counts.sum())
    if total == 0:
        raise BenchmarkError(
            f"None of the {len(texts)} texts has a token to score (causal LMs need 2 tokens including BOS); "
            "pass longer texts."
        )
    mean_ll = float(sums.sum() / total)
    if kind == "causal":
        score = float(np.exp(-mean_ll))
        ci = ratio_ci(sums, counts, resamples=bootstrap, seed=seed, transform=lambda r: np.exp(-r))
    else:
        score = float(hits.sum() / total)
        ci = ratio_ci(hits, counts, resamples=bootstrap, seed=seed)
    return LMScoreResult(
        kind="perplexity" if kind == "causal" else "masked_accuracy",
        score=score,
        mean_log_likelihood=mean_ll,
        num_tokens=total,
        ci=ci,
        per_text_log_likelihood=sums.tolist(),
        per_text_tokens=counts.tolist(),
        per_text_hits=None if hits is None else hits.tolist(),
    )


def _masked_parts(
    model: torch.nn.Module, tokenizer, texts: list[str], max_length: int, batch_size: int, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per text: summed log p of its masked tokens, their number, and argmax hits."""
    mask_id = mask_token_id(tokenizer)
    encoded = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length,
                        return_special_tokens_mask=True)  # fmt: skip
    inputs, positions, targets, owner = [], [], [], []
    for text_index, (ids, special) in enumerate(zip(encoded["input_ids"], encoded["special_tokens_mask"])):
        scored = [j for j, is_special in enumerate(special) if not is_special]
        for offset in range(MASK_EVERY):
            chosen = scored[offset::MASK_EVERY]
            if not chosen:
                continue
            masked = list(ids)
            for j in chosen:
                masked[j] = mask_id
            inputs.append(masked)
            positions.append(chosen)
            targets.append([ids[j] for j in chosen])
            owner.append(text_index)
    log_probs, hits = masked_log_probs(model, inputs, positions, targets, pad=pad_id(tokenizer),
                                       batch_size=batch_size, progress=progress, desc="masked accuracy")  # fmt: skip
    sums, counts, correct = np.zeros(len(texts)), np.zeros(len(texts), dtype=np.int64), np.zeros(len(texts))
    for text_index, lp, hit in zip(owner, log_probs, hits):
        sums[text_index] += float(lp.double().sum())
        counts[text_index] += lp.numel()
        correct[text_index] += float(hit.sum())
    return sums, counts, correct
