"""Slot texts as model inputs: where the scored position is (masked or causal LM) and which token each target is.

A text with one target slot becomes, for a masked LM, the text with the slot masked and scored at the mask; for a
causal LM, the prefix before the slot scored at its last position (the next token). A target word is tokenised after
its context, with the whitespace before it, and must be exactly one token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from .errors import TargetTokenizationError

LMKind = Literal["masked", "causal"]


class SlotExample(Protocol):
    """What the engine needs of an example: a text split at its slot, and the two target words."""

    prefix: str
    suffix: str
    factual: str
    counterfactual: str


@dataclass
class SlotBatch:
    """A tokenised batch: inputs, the scored position per row, and the factual / counterfactual token ids (None
    for texts without target words, e.g. transfer texts whose slot is scored over many words)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
    factual_ids: torch.Tensor | None = None
    counterfactual_ids: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> SlotBatch:
        return SlotBatch(*(None if t is None else t.to(device) for t in (
            self.input_ids, self.attention_mask, self.positions, self.factual_ids, self.counterfactual_ids)))

    def rows(self, index: torch.Tensor, width: int | None = None) -> SlotBatch:
        """The rows `index` (cut to `width` columns, e.g. after sorting by length)."""
        width = self.input_ids.shape[1] if width is None else width
        return SlotBatch(self.input_ids[index, :width], self.attention_mask[index, :width], self.positions[index],
                         *(None if t is None else t[index] for t in (self.factual_ids, self.counterfactual_ids)))


def _split_context(prefix: str) -> tuple[str, str]:
    context = prefix.rstrip()
    return context, prefix[len(context):]


class SlotTokenizer:
    """Turns slot examples into model inputs, tokenising target words the way the model sees them in context.

    A target word is tokenised after its context, with the whitespace that precedes it in the text (so `" she"`
    for BPE/SentencePiece models), and must be exactly one token.
    """

    def __init__(self, tokenizer, lm_kind: LMKind, *, max_length: int = 256):
        self.tokenizer = tokenizer
        self.lm_kind = lm_kind
        self.max_length = max_length
        if lm_kind == "masked" and tokenizer.mask_token_id is None:
            raise TargetTokenizationError(
                f"A masked LM needs a tokenizer with a mask token; {type(tokenizer).__name__} has none."
            )
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self._target_cache: dict[tuple[str, str, str], int] = {}

    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def target_id(self, prefix: str, word: str) -> int:
        """The single token id of `word` at the end of `prefix`, as the model would see it in the text."""
        context, space = _split_context(prefix)
        tail_context = context[-40:]  # tokenisation of the word only depends on what is right before it
        key = (tail_context, space, word)
        if key in self._target_cache:
            return self._target_cache[key]
        if tail_context:
            before = self._ids(tail_context, special=False)
            full = self._ids(tail_context + space + word, special=False)
            tokens = full[len(before):] if full[: len(before)] == before else None
        else:
            tokens = self._ids(space + word, special=False)
        if tokens is None or len(tokens) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(self._ids(space + word, special=False))
            raise TargetTokenizationError(
                f"The target word {word!r} after {tail_context[-20:]!r} is not exactly one token for this tokenizer "
                f"(it is {pieces}). GRADIEND scores one token per slot: choose single-token target words, or drop "
                f"such examples with `drop_multi_token_examples(...)`."
            )
        self._target_cache[key] = tokens[0]
        return tokens[0]

    def _causal_ids(self, prefix: str) -> list[int]:
        context, _ = _split_context(prefix)
        plain = self._ids(context, special=False) if context else []
        with_special = self._ids(context, special=True)
        # Keep special tokens the tokenizer puts before the text (BOS), drop any it appends after it (EOS).
        ids = plain if plain else with_special
        for start in range(len(with_special) - len(plain) + 1 if plain else 0):
            if with_special[start: start + len(plain)] == plain:
                ids = with_special[: start + len(plain)]
                break
        if not ids:
            raise TargetTokenizationError(
                "The slot is at the very start of the text and the tokenizer adds no BOS token, so a causal LM has "
                "nothing to predict from. Give examples at least one word before the slot."
            )
        return ids[-self.max_length:]

    def _masked_ids(self, prefix: str, suffix: str) -> tuple[list[int], int]:
        mask = self.tokenizer.mask_token
        ids = self._ids(prefix + mask + suffix, special=True)
        hits = [i for i, t in enumerate(ids) if t == self.tokenizer.mask_token_id]
        if len(hits) != 1:
            raise TargetTokenizationError(
                f"Expected exactly one mask token in the masked text, found {len(hits)}: "
                f"{(prefix + mask + suffix)[:80]!r}. Texts must not contain the mask token themselves."
            )
        position = hits[0]
        if len(ids) > self.max_length:
            # Keep a window around the mask, with the special tokens at both ends.
            half = (self.max_length - 2) // 2
            start = max(1, min(position - half, len(ids) - 1 - (self.max_length - 2)))
            window = ids[start: start + self.max_length - 2]
            ids = [ids[0], *window, ids[-1]]
            position = position - start + 1
        return ids, position

    def context_ids(self, prefix: str, suffix: str) -> tuple[list[int], int]:
        """Model input of a text split at its slot, and the position scored for the slot: a causal LM reads the
        prefix and predicts the next token at its last position; a masked LM reads the text with the slot masked."""
        if self.lm_kind == "causal":
            ids = self._causal_ids(prefix)
            return ids, len(ids) - 1
        return self._masked_ids(prefix, suffix)

    def contexts(self, texts: Sequence[Any]) -> SlotBatch:
        """A right-padded batch of slot texts (anything with `prefix` and `suffix`), without target words."""
        rows, positions = zip(*(self.context_ids(t.prefix, t.suffix) for t in texts)) if texts else ((), ())
        width = max((len(r) for r in rows), default=1)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):  # right padding: the scored position never moves
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention_mask[i, : len(ids)] = 1
        return SlotBatch(input_ids, attention_mask, torch.tensor(positions, dtype=torch.long))

    def __call__(self, examples: Sequence[SlotExample]) -> SlotBatch:
        batch = self.contexts(examples)
        batch.factual_ids = torch.tensor([self.target_id(e.prefix, e.factual) for e in examples], dtype=torch.long)
        batch.counterfactual_ids = torch.tensor([self.target_id(e.prefix, e.counterfactual) for e in examples],
                                                dtype=torch.long)
        return batch


def drop_multi_token_examples(examples: Sequence[SlotExample], slot_tokenizer: SlotTokenizer) -> tuple[list, int]:
    """Keep the examples whose target words are single tokens; return them and how many were dropped."""
    kept = []
    for example in examples:
        try:
            slot_tokenizer.target_id(example.prefix, example.factual)
            slot_tokenizer.target_id(example.prefix, example.counterfactual)
        except TargetTokenizationError:
            continue
        kept.append(example)
    return kept, len(examples) - len(kept)



__all__ = ["SlotBatch", "SlotExample", "SlotTokenizer", "drop_multi_token_examples"]
