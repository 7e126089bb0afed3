"""The gradient engine: target slots for masked and causal LMs, parameter selection, and ∇+ ∇− ∇± in one forward.

For a text with one target slot, ∇+ is the gradient of the LM loss of the factual target word w.r.t. the selected
base parameters, ∇− the same for the counterfactual word, and ∇± = ∇+ − ∇−. A masked LM sees the text with the
slot masked and is scored at the mask; a causal LM sees only the prefix before the slot and is scored at its last
position (the next token). Per batch there is one forward pass; the LM head runs only at the scored positions.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .errors import ParameterSelectionError
from .slots import LMKind, SlotBatch, SlotExample, SlotTokenizer, drop_multi_token_examples

SourceMode = Literal["factual", "counterfactual", "diff"]

_LAYER_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


# -- parameter selection --------------------------------------------------------------------------------------------
def layer_index(name: str) -> int | None:
    """The transformer-block index in a parameter name (`model.layers.3.mlp...` -> 3), or None outside blocks."""
    match = _LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def _embedding_names(model: nn.Module) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            names.update(f"{module_name}.{p}" if module_name else p for p, _ in module.named_parameters())
    return names


def _head_names(model: nn.Module) -> set[str]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        return set()
    ids = {id(p) for p in head.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


PARAMETER_PRESETS: dict[str, str] = {
    "blocks": "every transformer-block parameter (names with a block index), not the LM head: the default",
    "paper": "every parameter of the model's body (`base_model`), so everything except the LM head, embeddings "
             "included (the authors' selection); an input embedding tied to the LM head is included, once",
}
"""Named selections that `select_parameters` (and `--params`) accept instead of glob patterns."""


def select_parameters(
    model: nn.Module,
    patterns: Sequence[str] | str | None = None,
    *,
    layers: Sequence[int] | range | None = None,
    include_embeddings: bool = False,
) -> dict[str, nn.Parameter]:
    """Pick base parameters by glob patterns, a preset or block indices, in the model's own order.

    Args:
        model: the base language model.
        patterns: `fnmatch` globs over full parameter names, e.g. `"model.layers.*.mlp.down_proj.weight"` (`*` also
            matches dots, so `"*.output.dense.weight"` matches at any depth), or one preset name of
            `PARAMETER_PRESETS`: `"paper"` (every parameter but the LM head) or `"blocks"`. Default: `"blocks"`,
            every transformer-block parameter (names with a block index), never the LM head.
        layers: keep only block parameters whose block index is in `layers`.
        include_embeddings: with the default selection, also take the embedding tables.

    Raises:
        ParameterSelectionError: a pattern matches nothing, or nothing is left after filtering.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    if isinstance(patterns, str):
        patterns = [patterns]
    preset = patterns[0] if patterns and len(patterns) == 1 and patterns[0] in PARAMETER_PRESETS else None
    if preset == "blocks":
        patterns = None
    if preset == "paper":
        # The LM head is whatever lies outside the model's body (`base_model`): Gemma's / Llama's `lm_head`, BERT's
        # `cls.predictions`. A head weight tied to the input embedding is the embedding: it stays in, once.
        body = getattr(model, "base_model", None) or model
        in_body = {id(p) for p in body.parameters()}
        chosen = {n for n, p in named if id(p) in in_body}
    elif patterns:
        chosen = set()
        for pattern in patterns:
            hits = {n for n, _ in named if fnmatch.fnmatchcase(n, pattern)}
            if not hits:
                examples = ", ".join(n for n, _ in named[:4])
                raise ParameterSelectionError(
                    f"The pattern {pattern!r} matches no parameter of {type(model).__name__}. Parameter names look "
                    f"like: {examples}, ... (use `*` for any part, e.g. 'model.layers.*.mlp.*')."
                )
            chosen |= hits
    else:
        head = _head_names(model)
        embeddings = _embedding_names(model)
        chosen = {n for n, _ in named if layer_index(n) is not None and n not in head}
        if include_embeddings:
            chosen |= embeddings
    if layers is not None:
        wanted = set(layers)
        chosen = {n for n in chosen if layer_index(n) is None or layer_index(n) in wanted}
    selected = {n: p for n, p in named if n in chosen}
    if not selected:
        raise ParameterSelectionError(
            f"No parameter of {type(model).__name__} is selected (patterns={patterns!r}, layers={layers!r}). "
            f"Widen the patterns or the layer range."
        )
    return selected


def parse_layers(spec: str | None) -> list[int] | None:
    """Parse `"0-5,8"` into `[0, 1, 2, 3, 4, 5, 8]` (for the command line)."""
    if not spec:
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if re.fullmatch(r"\d+-\d+", part):
            lo, hi = (int(x) for x in part.split("-"))
            out.extend(range(lo, hi + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ValueError(f"Layer spec {spec!r} is not like '0-5,8': bad part {part!r}.")
    return out


# -- the engine -----------------------------------------------------------------------------------------------------
@dataclass
class GradientPair:
    """Per-parameter gradients of one batch: what the encoder reads (`source`) and what the decoder learns (`target`).

    `target` is always ∇± = ∇+ − ∇−. With `source="diff"` both fields hold the same (never mutated) tensors.
    """

    source: dict[str, torch.Tensor]
    target: dict[str, torch.Tensor]
    factual_logprob: torch.Tensor
    counterfactual_logprob: torch.Tensor


def _unscaled(gradients: Sequence[torch.Tensor], scale: float) -> list[torch.Tensor]:
    """Gradients in fp32, divided by the loss scale, checked for overflow."""
    out = [g.float() / scale if scale != 1.0 else g.float() for g in gradients]
    if scale != 1.0 and not all(bool(torch.isfinite(g).all()) for g in out):
        raise FloatingPointError(
            f"A gradient overflowed with loss scale {scale}; use bf16 mixed precision or a smaller scale."
        )
    return out


@contextlib.contextmanager
def _scored_positions_only(model: nn.Module, positions: torch.Tensor) -> Iterator[dict[str, bool]]:
    """Run the LM head only on the hidden state of one position per row (a 262k-word head is expensive)."""
    state = {"fired": False}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None

    def gather(module, args, kwargs):
        hidden = args[0]
        if hidden.dim() != 3 or hidden.shape[0] != positions.shape[0]:
            return None
        state["fired"] = True
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return (hidden[rows, positions.to(hidden.device)].unsqueeze(1), *args[1:]), kwargs

    handle = head.register_forward_pre_hook(gather, with_kwargs=True) if head is not None else None
    try:
        yield state
    finally:
        if handle is not None:
            handle.remove()


class GradientEngine:
    """Computes ∇+ / ∇− / ∇± of selected base parameters for batches of slot examples.

    Only the selected parameters require grad while the engine runs (backward stops at the lowest selected layer);
    the model runs in eval mode (no dropout); both are restored afterwards.

    Args:
        model: a transformers masked or causal LM.
        tokenizer: its tokenizer.
        params: names of the parameters to differentiate (e.g. `gradiend.config.param_names`) or a mapping.
        lm_kind: `"masked"` or `"causal"`; inferred from the model class when omitted.
        max_length: longest input in tokens (causal prefixes keep their end; masked texts a window at the mask).
    """

    def __init__(self, model: nn.Module, tokenizer, params: Sequence[str] | Mapping[str, nn.Parameter], *,
                 lm_kind: LMKind | None = None, max_length: int = 256):
        self.model = model
        available = dict(model.named_parameters())
        names = list(params)
        missing = [n for n in names if n not in available]
        if missing:
            raise ParameterSelectionError(
                f"The base model ({type(model).__name__}) has no parameter `{missing[0]}`"
                f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}. Use the base model the "
                f"GRADIEND model was built for."
            )
        self.params = {n: available[n] for n in names}
        if lm_kind is None:
            names_ = [type(model).__name__, *(getattr(model.config, "architectures", None) or [])]
            lm_kind = "masked" if any("MaskedLM" in n for n in names_) else "causal"
        self.lm_kind: LMKind = lm_kind
        self.slots = SlotTokenizer(tokenizer, lm_kind, max_length=max_length)

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    @contextlib.contextmanager
    def _prepared(self) -> Iterator[None]:
        flags = {n: p.requires_grad for n, p in self.model.named_parameters()}
        selected = {id(p) for p in self.params.values()}
        was_training = self.model.training
        for p in self.model.parameters():
            p.requires_grad_(id(p) in selected)
        self.model.eval()
        try:
            yield
        finally:
            for n, p in self.model.named_parameters():
                p.requires_grad_(flags.get(n, p.requires_grad))
            self.model.train(was_training)

    @torch.no_grad()
    def slot_log_probs(self, batch: SlotBatch) -> torch.Tensor:
        """log p of every vocabulary token at each row's slot, for the model as it is now: shape (batch, vocab).

        One forward pass in eval mode with the LM head run only at the scored positions, exactly as `gradients`
        sees the texts (used to score transfer texts over many words, e.g. every first name).
        """
        with self._prepared():
            return self._scored_logprobs(batch.to(self.device))

    def _scored_logprobs(self, batch: SlotBatch, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if self.lm_kind == "causal":
            kwargs["use_cache"] = False
        with _scored_positions_only(self.model, batch.positions) as state:
            if params is None:
                logits = self.model(**kwargs).logits
            else:
                logits = torch.func.functional_call(self.model, dict(params), args=(), kwargs=kwargs, strict=False)
                logits = logits.logits
        if state["fired"]:
            scored = logits[:, 0]
        else:  # a model that bypasses its output-embedding module: fall back to gathering the full logits
            scored = logits[torch.arange(logits.shape[0], device=logits.device), batch.positions.to(logits.device)]
        return scored.float().log_softmax(-1)

    def tokenize(self, examples: Sequence[SlotExample]) -> SlotBatch:
        return self.slots(examples).to(self.device)

    @torch.no_grad()
    def target_logprobs(self, examples: Sequence[SlotExample] | SlotBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """log p(factual) and log p(counterfactual) at each example's slot: one forward pass, no gradients.

        Scores the model as it is now (e.g. with a weight edit written in place), in eval mode, with the LM head run
        only at the scored positions, exactly as `gradients` sees the texts.

        Returns:
            Two float32 tensors of shape `(batch,)`.
        """
        batch = examples if isinstance(examples, SlotBatch) else self.tokenize(examples)
        with self._prepared():
            logprobs = self._scored_logprobs(batch)
        rows = torch.arange(logprobs.shape[0], device=logprobs.device)
        return logprobs[rows, batch.factual_ids], logprobs[rows, batch.counterfactual_ids]

    def gradients(self, examples: Sequence[SlotExample] | SlotBatch, *, source: SourceMode = "factual",
                  autocast: contextlib.AbstractContextManager | None = None, grad_scale: float = 1.0) -> GradientPair:
        """∇ of the mean LM loss over the batch: `source` (∇+, ∇− or ∇±) and the target ∇±, from one forward pass.

        Args:
            examples: slot examples (usually all of one class) or an already tokenised batch.
            source: `"factual"` (∇+), `"counterfactual"` (∇−) or `"diff"` (∇±).
            autocast: optional context manager for mixed precision (e.g. `torch.autocast("cuda", torch.bfloat16)`).
            grad_scale: differentiate `grad_scale * loss` and divide the gradients by it again, so that fp16
                gradients do not underflow; the result is the gradient of the loss itself.

        Raises:
            FloatingPointError: a gradient is not finite (fp16 overflow: use bf16 or a smaller `grad_scale`).
        """
        if source not in ("factual", "counterfactual", "diff"):
            raise ValueError(f"`source` must be 'factual', 'counterfactual' or 'diff', got {source!r}.")
        batch = examples if isinstance(examples, SlotBatch) else self.tokenize(examples)
        names, tensors = list(self.params), list(self.params.values())
        with self._prepared(), torch.enable_grad():
            with autocast or contextlib.nullcontext():
                logprobs = self._scored_logprobs(batch)
            rows = torch.arange(logprobs.shape[0], device=logprobs.device)
            lp_f = logprobs[rows, batch.factual_ids]
            lp_c = logprobs[rows, batch.counterfactual_ids]
            loss_f, loss_c = -lp_f.mean(), -lp_c.mean()
            if source == "diff":
                diff = _unscaled(torch.autograd.grad((loss_f - loss_c) * grad_scale, tensors), grad_scale)
                src = tgt = dict(zip(names, diff))
            else:
                g_f = _unscaled(torch.autograd.grad(loss_f * grad_scale, tensors, retain_graph=True), grad_scale)
                g_c = _unscaled(torch.autograd.grad(loss_c * grad_scale, tensors), grad_scale)
                tgt = {n: f - c for n, f, c in zip(names, g_f, g_c)}
                src = dict(zip(names, g_f if source == "factual" else g_c))
        return GradientPair(src, tgt, lp_f.detach(), lp_c.detach())

    def per_example_losses(self, batch: SlotBatch, source: SourceMode,
                           params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Loss per row whose gradient is the encoder's input: −log p(factual), −log p(counterfactual) or their
        difference."""
        logprobs = self._scored_logprobs(batch, params)
        rows = torch.arange(logprobs.shape[0], device=logprobs.device)
        lp_f = logprobs[rows, batch.factual_ids]
        lp_c = logprobs[rows, batch.counterfactual_ids]
        if source == "factual":
            return -lp_f
        if source == "counterfactual":
            return -lp_c
        return lp_c - lp_f

    def directional_derivatives(self, examples: Sequence[SlotExample] | SlotBatch,
                                directions: Sequence[Mapping[str, torch.Tensor]], *,
                                source: SourceMode = "factual") -> torch.Tensor:
        """<∇ loss_i, d_k> for every example i and direction k, without forming per-example gradients.

        This is how a batch of texts is encoded at once: the encoder's pre-activation for example i is
        <W_e, ∇_i> + b_e, a directional derivative, which one forward-mode (JVP) pass gives for the whole batch.

        Returns:
            A tensor of shape `(batch, len(directions))`.
        """
        from torch.nn.attention import SDPBackend, sdpa_kernel

        batch = examples if isinstance(examples, SlotBatch) else self.tokenize(examples)
        names = list(self.params)
        primals = {n: self.params[n].detach() for n in names}
        columns = []
        with self._prepared(), torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            # Fused attention kernels have no forward-mode derivative; the math kernel computes the same function.
            for direction in directions:
                tangents = {n: direction[n].to(primals[n].dtype).to(primals[n].device) for n in names}
                _, jvp_out = torch.func.jvp(
                    lambda p: self.per_example_losses(batch, source, p), (primals,), (tangents,)
                )
                columns.append(jvp_out)
        return torch.stack(columns, dim=1)


__all__ = [
    "PARAMETER_PRESETS",
    "GradientEngine",
    "GradientPair",
    "SlotBatch",
    "SlotTokenizer",
    "drop_multi_token_examples",
    "layer_index",
    "parse_layers",
    "select_parameters",
]
