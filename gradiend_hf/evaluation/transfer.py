"""Scoring a model on transfer texts: each group's probability mass at the slot, the paper's indices, association.

For a transfer text t (a description of a person followed by a first-name or group-word slot) and a group g, the
group's mass is p_g(t) = Σ_w weight(w, g)·p(w | t) over the group's words that are one token for the model's
tokenizer. From the masses of the GRADIEND's two classes the paper's indices follow (`transfer_indices`), and the
association of descriptions with groups (`association`) says how much a description, rather than the template,
moves the model toward one group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SearchError, TargetTokenizationError
from ..gradients import GradientEngine

BALANCED = "balanced"
"""The criterion name of every balance index; the class indices are named by their class."""

FORMULAS: dict[str, dict[str, str]] = {
    "bpi": {
        "apd": "APD(t) = clip(|P_neg(t) - P_pos(t)|, 0, 1)",
        "balanced": "BPI = mean over texts t of (1 - APD(t)) * (P_pos(t) + P_neg(t))",
        "class": "for class c with other class o: mean over texts of (1 - P_o(t)) * P_c(t) (FPI, MPI)",
    },
    "min": {
        "balanced": "mean over texts t of (1 - (max_g p_g(t) - min_g p_g(t))) * min_g p_g(t)",
        "class": "for class c: mean over texts of (1 - max_{g != c} p_g(t)) * p_c(t)",
    },
}
"""The paper's transfer indices; P_c(t) is class c's mass at the slot of text t."""


def transfer_indices(p: np.ndarray, classes: Sequence[str], formula: str) -> dict[str, float]:
    """The balance index and one index per class from per-text class masses `p` (texts × classes).

    `formula` "bpi" is the paper's gender form (two classes: BPI, FPI, MPI); "min" its race/religion form.
    """
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(classes) or len(classes) < 2:
        raise SearchError(f"Expected masses of shape (texts, {len(classes)}) for classes {list(classes)}, "
                          f"got {p.shape}.")
    out: dict[str, float] = {}
    if formula == "bpi":
        if len(classes) != 2:
            raise SearchError(f"The BPI formula is for two classes, got {list(classes)}; use formula 'min'.")
        apd = np.clip(np.abs(p[:, 1] - p[:, 0]), 0.0, 1.0)
        out[BALANCED] = float(((1.0 - apd) * (p[:, 0] + p[:, 1])).mean())
        out[classes[0]] = float(((1.0 - p[:, 1]) * p[:, 0]).mean())
        out[classes[1]] = float(((1.0 - p[:, 0]) * p[:, 1]).mean())
    elif formula == "min":
        spread = p.max(1) - p.min(1)
        out[BALANCED] = float(((1.0 - spread) * p.min(1)).mean())
        for k, c in enumerate(classes):
            others = np.delete(p, k, axis=1).max(1)
            out[c] = float(((1.0 - others) * p[:, k]).mean())
    else:
        raise SearchError(f"Unknown transfer formula {formula!r}; expected 'bpi' or 'min'.")
    return out


def association(p: np.ndarray, groups: Sequence[str | None], classes: Sequence[str]) -> float | None:
    """How strongly descriptions pull toward their stereotyped group: the mean of log(p_pos/p_neg) over texts
    associated with the positive class minus the same over texts associated with the negative class.

    0 when a description's stereotype makes no difference to the odds; None without texts of both kinds.
    """
    p = np.asarray(p, dtype=np.float64)
    tiny = np.finfo(np.float64).tiny
    log_odds = np.log(np.maximum(p[:, 0], tiny)) - np.log(np.maximum(p[:, 1], tiny))
    groups = np.asarray([g if g is not None else "" for g in groups])
    pos, neg = groups == classes[0], groups == classes[1]
    if not pos.any() or not neg.any():
        return None
    return float(log_odds[pos].mean() - log_odds[neg].mean())


@dataclass
class WordTable:
    """Per distinct slot context, the token ids of the single-token words and their weight per class."""

    token_ids: torch.Tensor
    """(words,) token ids."""
    weights: torch.Tensor
    """(words, classes) weight of each word for each class."""


class TransferScorer:
    """Scores transfer texts on the model as it is now: per text, the mass of each class's words at the slot.

    Texts are tokenised once. A word counts only where it is one token for the tokenizer after the text's context
    (with the whitespace before the slot); `strict=True` (your own word lists) refuses words that never are, the
    built-in name list just leaves them out (`words_used` tells how many count).

    Args:
        engine: a `GradientEngine` over the base model (it runs the LM head only at the slot).
        texts: `TransferText`s (anything with `prefix`, `suffix`).
        words: class -> {word: weight}, for the classes in the order the masses are returned.
        batch_size: texts per forward pass.
        strict: refuse words that are not single tokens instead of leaving them out.
    """

    def __init__(self, engine: GradientEngine, texts: Sequence, words: Mapping[str, Mapping[str, float]], *,
                 formula: str = "bpi", batch_size: int = 16, strict: bool = False):
        if not texts:
            raise SearchError("No transfer texts to score; the split is empty.")
        if formula not in FORMULAS:
            raise SearchError(f"Unknown transfer formula {formula!r}; expected one of {list(FORMULAS)}.")
        self.engine = engine
        self.classes = list(words)
        self.formula = formula
        self.texts = list(texts)
        self.groups = [getattr(t, "group", None) or "none" for t in self.texts]
        """Per text, the group its description is stereotyped for ("none" for neither); masses are averaged per
        group in the search's `mean_p`."""
        self.tables: dict[str, WordTable] = {}
        self.table_of: list[str] = []
        skipped: set[str] = set()
        for text in self.texts:
            key = _context_key(text.prefix)
            if key not in self.tables:
                self.tables[key], missing = self._table(key, words)
                skipped |= missing
            self.table_of.append(key)
        if strict and skipped:
            raise TargetTokenizationError(
                f"{len(skipped)} word(s) of the transfer word list are not one token for this tokenizer, e.g. "
                f"{sorted(skipped)[:5]}; the slot is scored one token at a time. Remove them or use single-token "
                "spellings."
            )
        self.words_used = {c: int(max((t.weights[:, k] > 0).sum() for t in self.tables.values()))
                           for k, c in enumerate(self.classes)}
        empty = [c for c, n in self.words_used.items() if n == 0]
        if empty:
            raise TargetTokenizationError(f"No word of class {empty[0]!r} is one token for this tokenizer at the "
                                          "transfer slot; the class's mass would always be 0. Give other words.")
        full = engine.slots.contexts(self.texts)
        lengths = full.attention_mask.sum(1)
        order = sorted(range(len(self.texts)), key=lambda i: int(lengths[i]))
        self.order = torch.tensor(order)
        self.batches = [full.rows(self.order[s: s + batch_size], int(lengths[self.order[s: s + batch_size]].max()))
                        for s in range(0, len(order), batch_size)]

    def _table(self, context: str, words: Mapping[str, Mapping[str, float]]) -> tuple[WordTable, set[str]]:
        vocabulary = sorted({w for entries in words.values() for w in entries})
        ids, rows, missing = [], [], set()
        for word in vocabulary:
            try:
                token = self.engine.slots.target_id(context, word)
            except TargetTokenizationError:
                missing.add(word)
                continue
            ids.append(token)
            rows.append([float(words[c].get(word, 0.0)) for c in self.classes])
        if not ids:
            return WordTable(torch.zeros(0, dtype=torch.long), torch.zeros(0, len(self.classes))), missing
        token_ids = torch.tensor(ids, dtype=torch.long)
        weights = torch.tensor(rows, dtype=torch.float64)
        # two words with the same token (e.g. "Asian" and "asian" for an uncased tokenizer) count once per class
        unique, inverse = torch.unique(token_ids, return_inverse=True)
        merged = torch.zeros(len(unique), len(self.classes), dtype=torch.float64).scatter_reduce_(
            0, inverse[:, None].expand_as(weights), weights, "amax", include_self=False)
        return WordTable(unique, merged), missing

    def indices(self, p: np.ndarray, base_p: np.ndarray | None = None) -> dict[str, float]:
        """The paper's indices of masses `p` (absolute: the base's masses do not enter)."""
        return transfer_indices(p, self.classes, self.formula)

    def bias(self, p: np.ndarray) -> float:
        """Mean P_pos − P_neg: which class the texts lean toward on average."""
        return float((p[:, 0] - p[:, 1]).mean())

    def association(self, p: np.ndarray) -> float | None:
        return association(p, [g if g != "none" else None for g in self.groups], self.classes)

    def records(self) -> list[dict[str, str | None]]:
        return [{"text": t.text, "group": getattr(t, "group", None)} for t in self.texts]

    @torch.no_grad()
    def masses(self) -> np.ndarray:
        """Per text (input order), the mass of each class: an array (texts, classes) of float64."""
        out = np.empty((len(self.texts), len(self.classes)))
        done = 0
        for batch in self.batches:
            log_probs = self.engine.slot_log_probs(batch).double()
            rows = self.order[done: done + log_probs.shape[0]].tolist()
            for r, index in enumerate(rows):
                table = self.tables[self.table_of[index]]
                probs = log_probs[r, table.token_ids.to(log_probs.device)].exp().cpu()
                out[index] = (probs[:, None] * table.weights).sum(0).numpy()
            done += log_probs.shape[0]
        return out


def _context_key(prefix: str) -> str:
    """What a slot word's tokenisation depends on: the last word before the slot and the whitespace after it."""
    stripped = prefix.rstrip()
    space = prefix[len(stripped):]
    last = stripped.rsplit(None, 1)[-1] if stripped.split() else stripped
    return last[-12:] + space


__all__ = ["BALANCED", "FORMULAS", "TransferScorer", "WordTable", "association", "transfer_indices"]
