"""`SelfDebiasAdapter` (Schick et al. 2021): rescale the next-token (or masked-token) distribution of an LM.

For each input the model also reads the input after *debiasing prefixes* ("The following text discriminates against
people because of their gender:"), which make biased continuations likelier. A token w whose probability rises under
a prefix is damped: with Δ(w) = p(w | x) − max_prefix p(w | prefix, x),

    p̃(w | x) ∝ α(Δ(w)) · p(w | x),   α(Δ) = 1 if Δ ≥ 0, else max(ε, exp(λ·Δ)),

with λ = 50 and ε = 0.01 (the values of Schick et al. and bias-bench). The adapter is a forward hook on the LM that
replaces its logits by log p̃ at every real position, so every scorer that reads `model(...).logits` sees it.
It changes no hidden state: SEAT (which reads `model.base_model`) cannot measure it, and while it is on, calling the
body directly is refused with an error instead of silently measuring the base model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AdapterCompatibilityError, GradiendConfigError
from ._files import adapter_folder, config_json, read_adapter_config, render_card, write_adapter_folder
from .configuration import ADAPTER_CONFIG_NAME
from .fingerprints import check_fingerprint
from .hooks import HookAdapter, HookHandle, body_of, register_hooks

SELF_DEBIAS_ADAPTER_TYPE = "gradiend_self_debias"
SELF_DEBIAS_PEFT_REFUSAL = (
    "GRADIEND_SELF_DEBIAS (a gradiend_hf SelfDebias adapter, not a PEFT adapter type: load it with "
    "gradiend_hf.SelfDebiasAdapter.from_pretrained or gradiend_hf.load_adapter)"
)
CHUNK_BYTES = 1 << 27
"""Most bytes of float32 probabilities rescaled at once (a 262k vocabulary makes every position 1 MiB)."""


@dataclass
class SelfDebiasConfig:
    """Configuration of a [`SelfDebiasAdapter`], saved as `adapter_config.json` (there are no weights).

    Args:
        prefixes (`list[str]`): the debiasing prefixes, as text.
        prefix_ids (`list[list[int]]`): their token ids for the base's tokenizer (no special tokens).
        lm_kind (`str`): `"causal"` (every position's next-token distribution) or `"masked"`.
        vocab_size (`int`): rows of the base's output embedding; another vocabulary is refused.
        leading_token_id (`int`, *optional*): the special token the tokenizer puts first (BOS, [CLS]); prefixes go
            after it.
        decay_constant (`float`, defaults to 50): λ in α(Δ) = exp(λ·Δ).
        epsilon (`float`, defaults to 0.01): the floor ε of α.
        bias_type (`str`, *optional*): the bias the prefixes name (gender, race, religion).
        base_model_name_or_path, base_model_fingerprint: the base it was made for (another base gets a warning).
        feature, results, description: as in the other adapter configs.
    """

    prefixes: list[str] = field(default_factory=list)
    prefix_ids: list[list[int]] = field(default_factory=list)
    lm_kind: str = "causal"
    vocab_size: int = 0
    leading_token_id: int | None = None
    decay_constant: float = 50.0
    epsilon: float = 0.01
    bias_type: str | None = None
    base_model_name_or_path: str | None = None
    base_model_fingerprint: str | None = None
    feature: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    description: str | None = None
    adapter_type: str = SELF_DEBIAS_ADAPTER_TYPE
    peft_type: str = SELF_DEBIAS_PEFT_REFUSAL
    gradiend_hf_version: str | None = None

    def __post_init__(self) -> None:
        if self.gradiend_hf_version is None:
            from .. import __version__

            self.gradiend_hf_version = __version__
        if self.adapter_type != SELF_DEBIAS_ADAPTER_TYPE:
            raise GradiendConfigError(f"`adapter_type` must be {SELF_DEBIAS_ADAPTER_TYPE!r}, got "
                                      f"{self.adapter_type!r}.")
        if not self.prefixes or len(self.prefixes) != len(self.prefix_ids):
            raise GradiendConfigError(f"Give one or more prefixes, each with its token ids; got {len(self.prefixes)} "
                                      f"prefix(es) and {len(self.prefix_ids)} id list(s).")
        if any(not ids for ids in self.prefix_ids):
            raise GradiendConfigError("Every debiasing prefix needs at least one token id, got an empty list.")
        if self.lm_kind not in ("causal", "masked"):
            raise GradiendConfigError(f"`lm_kind` must be 'causal' or 'masked', got {self.lm_kind!r}.")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 1:
            raise GradiendConfigError(f"`vocab_size` must be a positive integer, got {self.vocab_size!r}.")
        if not (math.isfinite(self.decay_constant) and self.decay_constant > 0 and 0 <= self.epsilon <= 1):
            raise GradiendConfigError(f"Expected decay_constant > 0 and 0 <= epsilon <= 1, got "
                                      f"{self.decay_constant!r} and {self.epsilon!r}.")


def self_debias_log_probs(logits: torch.Tensor, prefixed_logits: Sequence[torch.Tensor], *,
                          decay_constant: float = 50.0, epsilon: float = 0.01) -> torch.Tensor:
    """log p̃ over the last dimension, from the logits without and with each debiasing prefix (same shape).

    Δ = p − max_prefix p_prefix; α = 1 where Δ ≥ 0, else max(ε, exp(λ·Δ)); p̃ = α·p / Σ α·p. Float32.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    biased = torch.stack([torch.softmax(p.float(), dim=-1) for p in prefixed_logits]).amax(dim=0)
    delta = probs - biased
    alpha = torch.where(delta >= 0, torch.ones_like(delta), torch.exp(decay_constant * delta).clamp_min(epsilon))
    rescaled = alpha * probs
    return torch.log(rescaled / rescaled.sum(dim=-1, keepdim=True))


class SelfDebiasAdapter(HookAdapter):
    """SelfDebias as an output-level adapter, with the toggle, file and Hub contract of the other adapters.

    Build one with `gradiend_hf.debiasers.self_debias(model, tokenizer, bias_type="gender")`, then
    `with adapter.applied(model): ...`. Each forward pass costs one more pass per prefix.
    """

    commit_message = "Upload SelfDebias adapter"

    def __init__(self, config: SelfDebiasConfig):
        self.config = config
        self.name_or_path: str | None = None

    # -- base model checks ---------------------------------------------------------------------------------------
    def check_base_model(self, model: nn.Module) -> None:
        """Refuse a model whose vocabulary differs from the tokenizer the prefixes were encoded with."""
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        found = int(head.weight.shape[0]) if getattr(head, "weight", None) is not None else None
        if found != self.config.vocab_size:
            raise AdapterCompatibilityError(
                f"The SelfDebias adapter {self._label()} was made for an LM with a {self.config.vocab_size}-token "
                f"vocabulary, but {type(model).__name__} has {'no LM head' if found is None else found}; make it "
                f"again with this model and its tokenizer (gradiend_hf.debiasers.self_debias)."
            )
        check_fingerprint(model, [n for n, _ in model.named_parameters()], self.config.base_model_fingerprint,
                          what=f"The SelfDebias adapter {self._label()}",
                          recorded_base=self.config.base_model_name_or_path)

    def _label(self) -> str:
        return f"`{self.name_or_path}`" if self.name_or_path else f"({self.config.bias_type or 'custom'}, unsaved)"

    # -- toggling ------------------------------------------------------------------------------------------------
    def enable(self, model: nn.Module) -> HookHandle:
        """Switch SelfDebias on; `handle.remove()` or `disable` switches it off (the original forward again)."""
        self.check_base_model(model)
        state = {"depth": 0, "busy": False}
        config = self.config
        body = body_of(model)
        prefixes = [torch.tensor(ids, dtype=torch.long) for ids in config.prefix_ids]

        def enter(module: nn.Module, args: Any) -> None:
            state["depth"] += 1

        def leave(module: nn.Module, args: Any, output: Any) -> None:
            state["depth"] -= 1

        def guard_body(module: nn.Module, args: Any) -> None:
            if state["depth"] == 0:
                raise AdapterCompatibilityError(
                    "SelfDebias rescales the LM's output distribution and leaves hidden states unchanged, so "
                    "`model.base_model` (SEAT's sentence embeddings, representation fitting) cannot see it; leave SEAT "
                    "out for this adapter (gradiend compare does) or switch the adapter off first."
                )

        def debias(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if state["busy"]:
                return output
            state["busy"] = True
            try:
                return _debiased_output(module, args, kwargs, output, prefixes, config)
            finally:
                state["busy"] = False

        registrations = [
            lambda: model.register_forward_pre_hook(enter),
            lambda: model.register_forward_hook(debias, with_kwargs=True),
            lambda: model.register_forward_hook(leave, always_call=True),
        ]
        if body is not model:
            registrations.append(lambda: body.register_forward_pre_hook(guard_body))
        return register_hooks(model, self, registrations, description=f"SelfDebias {self._label()}")

    # -- save / load / Hub ---------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *, model_card: bool = True) -> Path:
        """Write `adapter_config.json` and (unless one you wrote exists) our card; there are no weights."""
        return write_adapter_folder(save_directory, config_json=config_json(self.config), tensors=None,
                                    adapter_type=SELF_DEBIAS_ADAPTER_TYPE,
                                    card=self.model_card if model_card else None)

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | None = None, token: bool | str | None = None,
                        local_files_only: bool = False, force_download: bool = False) -> SelfDebiasAdapter:
        """Load from a folder or a Hub repo (JSON only)."""
        folder = adapter_folder(path_or_repo, [ADAPTER_CONFIG_NAME], what="a SelfDebias adapter", revision=revision,
                                cache_dir=cache_dir, token=token, local_files_only=local_files_only,
                                force_download=force_download)
        adapter = cls(read_adapter_config(folder, SelfDebiasConfig, adapter_type=SELF_DEBIAS_ADAPTER_TYPE,
                                          what="SelfDebias adapter"))
        adapter.name_or_path = str(path_or_repo)
        return adapter

    def model_card(self, repo_id: str | None = None):
        """Our model card rendered from `cards/self_debias_adapter.md`."""
        return render_card("self_debias_adapter.md", self.config, repo_id=repo_id, tags=["self-debias"])

    def __repr__(self) -> str:
        return (f"SelfDebiasAdapter({self.config.bias_type}, {len(self.config.prefixes)} prefix(es), "
                f"{self.config.lm_kind}, λ={self.config.decay_constant}, ε={self.config.epsilon})")


def _debiased_output(model: nn.Module, args: tuple, kwargs: dict, output: Any, prefixes: list[torch.Tensor],
                     config: SelfDebiasConfig) -> Any:
    """Run the model once per prefix and replace `output.logits` by log p̃ at every real position."""
    inputs = dict(kwargs)
    if args:
        inputs["input_ids"] = args[0]
    ids = inputs.get("input_ids")
    if ids is None or inputs.get("inputs_embeds") is not None or inputs.get("position_ids") is not None:
        raise AdapterCompatibilityError("SelfDebias needs `input_ids` (not inputs_embeds or explicit position_ids), "
                                        "so that it can put the debiasing prefixes in front of them.")
    if inputs.get("labels") is not None:
        raise AdapterCompatibilityError("SelfDebias rescales logits after the forward pass, so a loss from `labels` "
                                        "would ignore it; compute the loss from `output.logits` instead.")
    past = inputs.get("past_key_values")
    if past is not None and (not hasattr(past, "get_seq_length") or past.get_seq_length() > 0):
        raise AdapterCompatibilityError("SelfDebias scores whole sequences; call the model with use_cache=False.")
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask
    if (mask[:, 1:] > mask[:, :-1]).any():
        raise AdapterCompatibilityError("SelfDebias needs right-padded batches (padding after the text); set "
                                        "tokenizer.padding_side = 'right'.")
    lead = int(config.leading_token_id is not None and bool((ids[:, 0] == config.leading_token_id).all()))
    real = mask.bool()
    logits = output.logits
    regular = logits[real]
    biased = []
    for prefix in prefixes:
        width = len(prefix)
        new_ids = torch.cat([ids[:, :lead], prefix.to(ids.device).expand(len(ids), width), ids[:, lead:]], dim=1)
        new_mask = torch.cat([mask[:, :lead], torch.ones_like(ids[:, :1]).expand(-1, width), mask[:, lead:]], dim=1)
        extra = {"use_cache": False} if config.lm_kind == "causal" else {}
        if inputs.get("token_type_ids") is not None:
            types = inputs["token_type_ids"]
            extra["token_type_ids"] = torch.cat([types[:, :lead], torch.zeros_like(ids[:, :1]).expand(-1, width),
                                                 types[:, lead:]], dim=1)
        prefixed = model(input_ids=new_ids, attention_mask=new_mask, **extra).logits
        # position j of the input sits at j + width after the prefix; a causal LM's position 0 (BOS) predicts the
        # first word, which after the prefix is predicted at the prefix's last token, also 0 + width.
        index = torch.arange(ids.shape[1], device=ids.device) + width
        if lead and config.lm_kind == "masked":
            index[0] = 0
        biased.append(prefixed[:, index][real])
    rows = max(1, CHUNK_BYTES // max(1, regular.shape[-1] * 4))
    debiased = torch.cat([self_debias_log_probs(regular[i:i + rows], [b[i:i + rows] for b in biased],
                                                decay_constant=config.decay_constant, epsilon=config.epsilon)
                          for i in range(0, regular.shape[0], rows)])
    new_logits = logits.clone() if logits.requires_grad else logits
    new_logits[real] = debiased.to(new_logits.dtype)
    output["logits"] = new_logits
    return output


__all__ = ["SELF_DEBIAS_ADAPTER_TYPE", "SelfDebiasAdapter", "SelfDebiasConfig", "self_debias_log_probs"]
