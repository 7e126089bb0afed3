"""Batched log-likelihoods shared by the benchmarks: next-token log-probs (causal) and masked-slot log-probs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from tqdm.auto import tqdm

from gradiend_hf.errors import BenchmarkError

LMKind = Literal["masked", "causal"]
LM_KINDS: tuple[LMKind, ...] = ("masked", "causal")

LOGITS_BUDGET_BYTES = 1 << 30
"""Most bytes of fp32 logits one forward pass may produce (batch × length × vocab × 4).

Gemma 3's 262k vocabulary makes every position's logits 1 MiB, so a batch of 16 sentences of 128 tokens
would hold 2 GiB of logits; batches are cut shorter (never below one text) to stay under this budget."""

CHUNK_BYTES = 1 << 27
"""Most bytes of logits reduced at once by the log-softmax (its temporaries are as large as its input)."""


def infer_lm_kind(model: torch.nn.Module, lm_kind: LMKind | None = None) -> LMKind:
    """Tells a masked LM from a causal LM by its class name or `config.architectures`.

    Args:
        model: A transformers language model with its head.
        lm_kind: An explicit choice; checked and returned as is.

    Returns:
        `"masked"` for `*ForMaskedLM`, `"causal"` for `*ForCausalLM` / `*LMHeadModel`.

    Raises:
        BenchmarkError: `lm_kind` is not one of the two kinds, or the model's kind cannot be told.
    """
    if lm_kind is not None:
        if lm_kind not in LM_KINDS:
            raise BenchmarkError(f"lm_kind must be one of {list(LM_KINDS)}, got {lm_kind!r}.")
        return lm_kind
    config = getattr(model, "config", None)
    names = [type(model).__name__, *(getattr(config, "architectures", None) or [])]
    for name in names:
        if "MaskedLM" in name:
            return "masked"
        if "CausalLM" in name or "LMHeadModel" in name:
            return "causal"
    raise BenchmarkError(
        f"Cannot tell whether {names[0]} (architectures {names[1:]}) is a masked or a causal LM; "
        "pass lm_kind='masked' or lm_kind='causal'."
    )


def vocab_size(model: torch.nn.Module) -> int:
    """Rows of the output embedding (the logits' last dimension), falling back to the config."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.vocab_size)


def pad_id(tokenizer) -> int:
    """The tokenizer's pad id, or 0: padded positions are masked out, so any valid id serves."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) while scoring; a model that was training is put back into training mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def plan_batches(lengths: Sequence[int], *, batch_size: int, vocab: int) -> list[list[int]]:
    """Groups sequence indices into batches of similar length, longest first, within the logits budget.

    Sorting by length keeps padding small; the longest batch comes first, so running out of memory shows at once.
    """
    if batch_size < 1:
        raise BenchmarkError(f"batch_size must be at least 1, got {batch_size}.")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        too_big = (len(current) + 1) * max(longest, 1) * vocab * 4 > LOGITS_BUDGET_BYTES
        if current and (len(current) == batch_size or too_big):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _padded(
    rows: Sequence[Sequence[int]], pad: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and their attention mask."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def gather_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits)[target] and whether the target is the argmax, for rows of logits (n, vocab).

    The log-softmax is never materialised: per chunk of rows, log p = logit[target] − logsumexp(logits).

    Returns:
        Float32 log-probs (n,) and booleans (n,) on the CPU.
    """
    rows = max(1, CHUNK_BYTES // max(1, logits.shape[-1] * 4))
    log_probs, correct = [], []
    for start in range(0, logits.shape[0], rows):
        chunk = logits[start : start + rows].float()
        target = targets[start : start + rows].to(chunk.device)
        picked = chunk.gather(-1, target[:, None]).squeeze(-1)
        log_probs.append((picked - torch.logsumexp(chunk, dim=-1)).cpu())
        correct.append((chunk.argmax(dim=-1) == target).cpu())
    if not log_probs:
        return torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    return torch.cat(log_probs), torch.cat(correct)


@torch.no_grad()
def causal_log_probs(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    *,
    pad: int,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "scoring",
) -> list[torch.Tensor]:
    """log p(token_t | tokens_<t) for t = 1 … n−1 of every token-id sequence (the first token is context).

    Args:
        model: A causal LM; scored in eval mode, its training flag restored afterwards.
        sequences: Token ids per text, including a BOS token if one should be conditioned on.
        pad: Id written at padded positions (masked out by the attention mask).
        batch_size: Most sequences per forward pass (fewer when the logits budget demands).
        progress: Show a tqdm bar over batches.
        desc: Label of the bar.

    Returns:
        One float32 tensor of n−1 log-probs per sequence, in input order (empty for sequences of < 2 tokens).
    """
    device = device_of(model)
    lengths = [len(s) for s in sequences]
    results: list[torch.Tensor] = [torch.zeros(0)] * len(sequences)
    todo = [i for i, n in enumerate(lengths) if n >= 2]
    batches = plan_batches([lengths[i] for i in todo], batch_size=batch_size, vocab=vocab_size(model))
    with eval_mode(model):
        for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
            indices = [todo[b] for b in batch]
            ids, mask = _padded([sequences[i] for i in indices], pad, device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            for row, index in enumerate(indices):
                n = lengths[index]
                # logits[row] is contiguous, so its first n-1 positions are a view, not a copy of the batch
                results[index], _ = gather_log_probs(logits[row, : n - 1], ids[row, 1:n])
            del logits
    return results


def mean_sentence_log_probs(model: torch.nn.Module, tokenizer, sentences: Sequence[str], *, max_length: int,
                            batch_size: int, progress: bool, desc: str) -> list[float]:
    """Mean token log-probability of each whole sentence after a start token (bias-bench's GPT-2 scoring).

    A sentence with no scored token gets −inf.
    """
    ids = sentence_ids(tokenizer, sentences, max_length=max_length, prepend_bos=True)
    log_probs = causal_log_probs(model, ids, pad=pad_id(tokenizer), batch_size=batch_size, progress=progress,
                                 desc=desc)  # fmt: skip
    return [float(lp.double().mean()) if lp.numel() else float("-inf") for lp in log_probs]


@torch.no_grad()
def masked_log_probs(
    model: torch.nn.Module,
    inputs: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    *,
    pad: int,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "scoring",
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """log p of `targets[i][j]` at `positions[i][j]` of the already-masked `inputs[i]`, and argmax hits.

    Only the requested positions go through the log-softmax; every row is one forward pass.

    Args:
        model: A masked LM; scored in eval mode, its training flag restored afterwards.
        inputs: Token ids per row, with the mask token already written at the positions to score.
        positions: Positions to score per row.
        targets: The original token id per scored position.
        pad: Id written at padded positions.
        batch_size: Most rows per forward pass.
        progress: Show a tqdm bar over batches.
        desc: Label of the bar.

    Returns:
        Per row, float32 log-probs and boolean argmax-equals-target, both of length len(positions[i]).
    """
    device = device_of(model)
    lengths = [len(s) for s in inputs]
    log_probs: list[torch.Tensor] = [torch.zeros(0)] * len(inputs)
    hits: list[torch.Tensor] = [torch.zeros(0, dtype=torch.bool)] * len(inputs)
    todo = [i for i in range(len(inputs)) if len(positions[i])]
    batches = plan_batches([lengths[i] for i in todo], batch_size=batch_size, vocab=vocab_size(model))
    with eval_mode(model):
        for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
            indices = [todo[b] for b in batch]
            ids, mask = _padded([inputs[i] for i in indices], pad, device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            rows = torch.cat(
                [torch.full((len(positions[i]),), r, dtype=torch.long) for r, i in enumerate(indices)]
            )
            cols = torch.cat([torch.as_tensor(list(positions[i]), dtype=torch.long) for i in indices])
            wanted = torch.cat([torch.as_tensor(list(targets[i]), dtype=torch.long) for i in indices])
            flat_lp, flat_hit = gather_log_probs(logits[rows.to(device), cols.to(device)], wanted)
            del logits
            start = 0
            for i in indices:
                end = start + len(positions[i])
                log_probs[i], hits[i] = flat_lp[start:end], flat_hit[start:end]
                start = end
    return log_probs, hits


def mask_token_id(tokenizer) -> int:
    """The tokenizer's mask id; a masked LM benchmark needs one."""
    if tokenizer.mask_token_id is None:
        raise BenchmarkError(
            f"The tokenizer {type(tokenizer).__name__} has no mask token, but the model is a masked LM; "
            "pass the model's own tokenizer (or lm_kind='causal' for a causal LM)."
        )
    return int(tokenizer.mask_token_id)


def sentence_ids(tokenizer, texts: Sequence[str], *, max_length: int, prepend_bos: bool) -> list[list[int]]:
    """Token ids of each text with the tokenizer's special tokens, truncated to `max_length`.

    With `prepend_bos`, a causal LM's start token is put first when the tokenizer does not add one (GPT-2
    adds nothing; its start token is `<|endoftext|>`, which is both BOS and EOS), so every word is scored.
    """
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)[
        "input_ids"
    ]
    if not prepend_bos:
        return [list(ids) for ids in encoded]
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise BenchmarkError(
            f"The tokenizer {type(tokenizer).__name__} has neither a BOS nor an EOS token to start a sentence "
            "with; set tokenizer.bos_token before scoring whole sentences."
        )
    return [list(ids) if ids and ids[0] == start else [start, *ids][:max_length] for ids in encoded]
