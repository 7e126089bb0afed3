"""Dropout debiasing (Webster et al. 2020): further pre-training with raised dropout, as a delta adapter.

Dropout is raised to 0.2 on hidden states and 0.15 on attention probabilities (Webster et al.'s BERT values): every
`nn.Dropout` is set (attention-probability dropouts by name: `*.self.dropout`, `*attn_dropout`), every attention
module's float `attention_dropout` too. A model without hidden-state dropout modules (Llama, Gemma) gets it where BERT
and GPT-2 have it, by forward hooks while training: on what each sublayer adds to the residual stream (the attention
and MLP outputs; Gemma's post-attention and post-feed-forward norms), never on the residual stream itself, which
dropout at every block would wreck. Everything is restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from ..adapters import DeltaAdapter
from ..adapters.hooks import body_of
from ..errors import TrainingError
from ..features import FeatureDataset
from .cda import pretraining_texts
from .pretraining import PretrainingArguments, further_pretrain

HIDDEN_DROPOUT = 0.2
ATTENTION_DROPOUT = 0.15


def _is_attention_dropout(name: str) -> bool:
    return name.endswith((".self.dropout", "attn_dropout"))


def _blocks(model: nn.Module) -> nn.ModuleList | None:
    """The body's list of transformer blocks: its longest `nn.ModuleList`."""
    lists = [m for m in body_of(model).modules() if isinstance(m, nn.ModuleList)]
    return max(lists, key=len) if lists else None


_SANDWICH_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm")  # Gemma 2/3: output norms of sublayers
_SUBLAYERS = ("self_attn", "attn", "attention", "self_attention", "mlp", "feed_forward", "ffn")


def residual_writers(block: nn.Module) -> list[nn.Module]:
    """The modules whose outputs a block adds to its residual stream (where BERT / GPT-2 apply hidden dropout).

    Raises:
        TrainingError: the block has none of the known sublayer names.
    """
    children = dict(block.named_children())
    names = _SANDWICH_NORMS if all(n in children for n in _SANDWICH_NORMS) else \
        [n for n in _SUBLAYERS if n in children]
    if not names:
        raise TrainingError(f"Cannot place hidden dropout in {type(block).__name__}: expected sublayers named one "
                            f"of {list(_SUBLAYERS)}, found {sorted(children)}. Add dropout modules to the model "
                            f"instead.")
    return [children[n] for n in names]


@contextlib.contextmanager
def raised_dropout(model: nn.Module, *, hidden: float = HIDDEN_DROPOUT,
                   attention: float = ATTENTION_DROPOUT) -> Iterator[dict[str, Any]]:
    """Raise the model's dropout while the block runs; yields what was changed (for the record)."""
    changed: list[tuple[Any, str, Any]] = []
    handles = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.Dropout):
                changed.append((module, "p", module.p))
                module.p = attention if _is_attention_dropout(name) else hidden
            if isinstance(getattr(module, "attention_dropout", None), float):
                changed.append((module, "attention_dropout", module.attention_dropout))
                module.attention_dropout = attention
        hidden_modules = sum(1 for m, attr, _ in changed if attr == "p")
        blocks = _blocks(model) if hidden_modules == 0 else None
        for block in blocks or []:
            for writer in residual_writers(block):
                handles.append(writer.register_forward_hook(_output_dropout(hidden)))
        yield {"dropout_modules": hidden_modules, "attention_modules": len(changed) - hidden_modules,
               "sublayer_output_hooks": len(handles), "hidden": hidden, "attention": attention}
    finally:
        for handle in handles:
            handle.remove()
        for module, attr, value in changed:
            setattr(module, attr, value)


def _output_dropout(p: float):
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if not module.training:
            return output
        if isinstance(output, tuple):
            return (nn.functional.dropout(output[0], p, True), *output[1:])
        return nn.functional.dropout(output, p, True)

    return hook


def train_dropout(model: nn.Module, tokenizer, feature: FeatureDataset, out_dir: str | Path,
                  args: PretrainingArguments | None = None, *, hidden: float = HIDDEN_DROPOUT,
                  attention: float = ATTENTION_DROPOUT, texts: list[str] | None = None) -> DeltaAdapter:
    """Further pre-train with raised dropout on the same (unswapped) text as CDA and return ΔW (cached, resumable)."""
    args = args or PretrainingArguments()
    source = texts if texts is not None else pretraining_texts(feature)
    description = (f"Dropout baseline: the base further pre-trained for {args.steps} step(s) of {args.batch_size} "
                   f"texts (lr {args.learning_rate}) on {len(source)} texts ({feature.name} feature texts and neutral "
                   f"WikiText) with dropout raised to {hidden} (hidden) / {attention} (attention); ΔW = weights after "
                   f"− before.")
    return further_pretrain(model, tokenizer, source, out_dir, args, method="dropout", description=description,
                            feature=feature.spec(),
                            context=lambda m: raised_dropout(m, hidden=hidden, attention=attention))


__all__ = ["ATTENTION_DROPOUT", "HIDDEN_DROPOUT", "raised_dropout", "residual_writers", "train_dropout"]
