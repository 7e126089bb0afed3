"""Further pre-training of selected base parameters, returned as a delta adapter (weights after minus before).

CDA and Dropout (Webster et al. 2020) are weight-changing baselines: continue the LM objective (masked tokens for a
masked LM, next tokens for a causal LM) on some text, then ship ΔW = W_after − W_before as an ordinary `DeltaAdapter`.
The base model is changed only while training and is restored bit for bit afterwards (also after an error or
Ctrl-C). Batches depend only on (seed, step), and a checkpoint (safetensors + JSON, nothing pickled) is written every
`checkpoint_every` steps, so an interrupted run resumes where it stopped; a finished adapter is reused (cached).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..adapters import DeltaAdapter, applied_entries
from ..benchmarks._scoring import infer_lm_kind, pad_id
from ..errors import TrainingError
from ..gradients import select_parameters

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoint"
RECORD_NAME = "pretraining.json"


@dataclass
class PretrainingArguments:
    """How long and on what the weights are trained further (defaults: minutes on 2 CPU cores for a 270M model).

    Args:
        steps: optimiser steps.
        batch_size: texts per step.
        learning_rate: AdamW learning rate (weight decay `weight_decay`).
        max_length: longer texts are truncated (tokens).
        params: glob patterns of the trained parameters; default every transformer-block parameter (no embeddings,
            no LM head, so a tied head is left alone too).
        mask_probability: share of tokens masked for a masked LM (all replaced by the mask token).
        seed: seed of the batches and masks.
        checkpoint_every: steps between checkpoints.
        progress: show a progress bar.
    """

    steps: int = 200
    batch_size: int = 8
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    max_length: int = 64
    params: list[str] | None = None
    mask_probability: float = 0.15
    seed: int = 0
    checkpoint_every: int = 25
    progress: bool = True

    def settings(self) -> dict[str, Any]:
        """What decides the result (a resumed or cached run must match it)."""
        data = dataclasses.asdict(self)
        data.pop("progress")
        data.pop("checkpoint_every")
        return data


def _batch_loss(model: nn.Module, tokenizer, texts: Sequence[str], kind: str, args: PretrainingArguments,
                generator: torch.Generator) -> torch.Tensor:
    encoded = tokenizer(list(texts), truncation=True, max_length=args.max_length)["input_ids"]
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, tokens in enumerate(encoded):  # right padding
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    if kind == "masked":
        special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in ids.tolist()])
        chosen = (torch.rand(ids.shape, generator=generator) < args.mask_probability) & (mask == 1) & ~special
        if not chosen.any():  # at least one masked token per batch, so the loss is defined
            candidates = ((mask == 1) & ~special).nonzero()
            if len(candidates):
                row, col = candidates[torch.randint(len(candidates), (1,), generator=generator)][0]
                chosen[row, col] = True
        labels = labels.masked_fill(~chosen, -100)
        ids = ids.masked_fill(chosen, tokenizer.mask_token_id)
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss


@contextlib.contextmanager
def _training_only(model: nn.Module, params: dict[str, nn.Parameter]) -> Iterator[dict[str, torch.Tensor]]:
    """Train mode with gradients only for `params`; yields their originals and restores everything on exit."""
    originals = {name: param.detach().clone() for name, param in params.items()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    for name, param in model.named_parameters():
        param.requires_grad_(name in params)
    model.train()
    try:
        yield originals
    finally:
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(originals[name])
        for name, param in model.named_parameters():
            param.requires_grad_(flags[name])
        model.train(was_training)


def further_pretrain(model: nn.Module, tokenizer, texts: Sequence[str], out_dir: str | Path,
                     args: PretrainingArguments | None = None, *, method: str, description: str,
                     feature: dict[str, Any] | None = None,
                     context: Callable[[nn.Module], contextlib.AbstractContextManager] | None = None) -> DeltaAdapter:
    """Train `args.params` of `model` on `texts` and return ΔW as a delta adapter saved in `out_dir/adapter`.

    Args:
        model: the base LM; it is the same, bit for bit, when this returns.
        tokenizer: its tokenizer.
        texts: the training texts (already augmented, e.g. two-sided CDA).
        out_dir: folder for the checkpoint, `pretraining.json` (settings, data, loss curve) and the adapter.
        args: the training settings.
        method: a short name recorded with the run ("cda", "dropout").
        description: the adapter's one-line description (what was trained, on what, how long).
        feature: the feature spec recorded in the adapter.
        context: a context manager factory entered around training (e.g. raised dropout).

    Raises:
        TrainingError: no texts, or `out_dir` holds a run with other settings.
    """
    args = args or PretrainingArguments()
    out = Path(out_dir)
    if not texts:
        raise TrainingError(f"Further pre-training ({method}) needs texts, got none.")
    settings = {"method": method, "description": description, **args.settings(), "texts": len(texts),
                "texts_sha": _text_digest(texts), "model": getattr(model, "name_or_path", None)}
    record = out / RECORD_NAME
    if (out / ADAPTER_DIR).is_dir() and record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved.get("settings") == settings:
            return DeltaAdapter.from_pretrained(out / ADAPTER_DIR)
    if applied_entries(model):
        raise TrainingError(f"{len(applied_entries(model))} delta adapter(s) are applied to the model; further "
                            f"pre-training measures ΔW against the base weights, so switch them off first.")
    kind = infer_lm_kind(model)
    if kind == "masked" and tokenizer.mask_token_id is None:
        raise TrainingError(f"{type(model).__name__} is a masked LM but its tokenizer has no mask token; pass the "
                            f"model's own tokenizer.")
    params = select_parameters(model, args.params)
    optimizer = torch.optim.AdamW(params.values(), lr=args.learning_rate, weight_decay=args.weight_decay)
    with _training_only(model, params) as originals, (context(model) if context else contextlib.nullcontext()), \
            torch.random.fork_rng():
        start, losses = _resume(out / CHECKPOINT_DIR, settings, params, optimizer)
        started = time.time()
        for step in tqdm(range(start + 1, args.steps + 1), desc=f"{method} pre-training", disable=not args.progress,
                         initial=start, total=args.steps):
            batch = random.Random(args.seed * 1_000_003 + step).sample(list(texts), min(args.batch_size, len(texts)))
            generator = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
            torch.manual_seed(args.seed * 1_000_003 + step)  # dropout masks: a resumed run draws the same ones
            loss = _batch_loss(model, tokenizer, batch, kind, args, generator)
            if not math.isfinite(float(loss.detach())):
                raise TrainingError(f"The {method} loss became {float(loss.detach())} at step {step}; lower the "
                                    f"learning rate.")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(round(float(loss.detach()), 4))
            if step % args.checkpoint_every == 0 or step == args.steps:
                _save_checkpoint(out / CHECKPOINT_DIR, settings, params, optimizer, step, losses)
        deltas = {name: (param.detach().float() - originals[name].float()) for name, param in params.items()}
    adapter = DeltaAdapter.from_deltas(deltas, base_model=model, description=description, feature=feature)
    adapter.save_pretrained(out / ADAPTER_DIR)
    record.write_text(json.dumps({"settings": settings, "losses": losses, "seconds": round(time.time() - started, 1),
                                  "trained_parameters": len(params),
                                  "trained_entries": sum(p.numel() for p in params.values())},
                                 indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return adapter


def _text_digest(texts: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]


def _save_checkpoint(folder: Path, settings: dict[str, Any], params: dict[str, nn.Parameter],
                     optimizer: torch.optim.Optimizer, step: int, losses: list[float]) -> None:
    """Trained values and AdamW moments as safetensors, step and settings as JSON; written last, so a checkpoint
    with a `state.json` is always complete."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").unlink(missing_ok=True)
    save_file({name: p.detach().contiguous() for name, p in params.items()}, str(folder / "trained.safetensors"))
    moments = {}
    for name, param in params.items():
        for key, value in optimizer.state.get(param, {}).items():
            moments[f"{name}::{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    save_file(moments, str(folder / "optimizer.safetensors"))
    state = {"settings": settings, "step": step, "losses": losses}
    (folder / "state.json").write_text(json.dumps(state, sort_keys=True), encoding="utf-8")


def _resume(folder: Path, settings: dict[str, Any], params: dict[str, nn.Parameter],
            optimizer: torch.optim.Optimizer) -> tuple[int, list[float]]:
    """The step to continue after (0: from the start); a checkpoint of other settings is refused."""
    state_path = folder / "state.json"
    if not state_path.is_file():
        return 0, []
    state = json.loads(state_path.read_text(encoding="utf-8"))
    if state["settings"] != settings:
        raise TrainingError(f"`{folder}` holds a checkpoint of other settings ({state['settings']}); delete it or "
                            f"choose another output folder.")
    trained = load_file(str(folder / "trained.safetensors"))
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(trained[name])
    moments = load_file(str(folder / "optimizer.safetensors"))
    for name, param in params.items():
        entries = {key.split("::", 1)[1]: value for key, value in moments.items() if key.split("::", 1)[0] == name}
        if entries:
            optimizer.state[param] = entries
    return int(state["step"]), list(state["losses"])


__all__ = ["PretrainingArguments", "further_pretrain"]
