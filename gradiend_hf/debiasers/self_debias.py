"""SelfDebias (Schick et al. 2021) for a bias type: the debiasing prefix, checked against the model's prompt format.

The prefixes are those bias-bench uses for StereoSet and CrowS-Pairs ("The following text discriminates against
people because of their gender:"), followed by a newline so that the text starts on a line of its own.
"""

from __future__ import annotations

from torch import nn

from ..adapters import SelfDebiasAdapter, SelfDebiasConfig
from ..adapters._files import whole_model_fingerprint
from ..benchmarks._scoring import infer_lm_kind
from ..errors import AdapterCompatibilityError, BenchmarkError

DEBIASING_PREFIXES: dict[str, str] = {
    "gender": "The following text discriminates against people because of their gender:\n",
    "race": "The following text discriminates against people because of their race/color:\n",
    "religion": "The following text discriminates against people because of their religion:\n",
}
"""One prefix per bias type."""

MIN_CONTEXT = 32
"""Positions a model must have left after the longest prefix (shorter contexts cannot hold a sentence)."""


def self_debias(model: nn.Module, tokenizer, bias_type: str = "gender", *, prefixes: list[str] | None = None,
                decay_constant: float = 50.0, epsilon: float = 0.01) -> SelfDebiasAdapter:
    """A SelfDebias adapter for `model` and its tokenizer.

    Args:
        model: a causal or masked LM with its head.
        tokenizer: its tokenizer (encodes the prefixes; its first special token, BOS or [CLS], stays first).
        bias_type: gender, race or religion (picks the prefix).
        prefixes: your own prefixes instead.
        decay_constant, epsilon: λ and ε of the rescaling.

    Raises:
        AdapterCompatibilityError: the model has no usable prompt format (not a causal/masked LM with a head, no mask
            token for a masked LM, a prefix the tokenizer cannot spell, or too few positions for a prefix).
    """
    if prefixes is None:
        if bias_type not in DEBIASING_PREFIXES:
            raise AdapterCompatibilityError(f"SelfDebias has prefixes for {sorted(DEBIASING_PREFIXES)}, got bias type "
                                            f"{bias_type!r}; pass your own `prefixes`.")
        prefixes = [DEBIASING_PREFIXES[bias_type]]
    try:
        kind = infer_lm_kind(model)
    except BenchmarkError:
        raise AdapterCompatibilityError(
            f"SelfDebias needs a causal or masked LM with its head, got {type(model).__name__}; load the model with "
            f"AutoModelForCausalLM or AutoModelForMaskedLM."
        ) from None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "weight", None) is None:
        raise AdapterCompatibilityError(f"SelfDebias rescales the LM head's distribution, but {type(model).__name__} "
                                        f"has no output embedding; load the model with its LM head.")
    if kind == "masked" and tokenizer.mask_token_id is None:
        raise AdapterCompatibilityError("SelfDebias on a masked LM scores masked slots, but the tokenizer has no mask "
                                        "token; pass the model's own tokenizer.")
    prefix_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prefixes]
    unknown = tokenizer.unk_token_id
    for prefix, ids in zip(prefixes, prefix_ids):
        if not ids or (unknown is not None and sum(i == unknown for i in ids) * 2 > len(ids)):
            raise AdapterCompatibilityError(f"The tokenizer cannot spell the debiasing prefix {prefix.strip()!r} "
                                            f"({len(ids)} tokens, mostly unknown); pass prefixes in its language.")
    limit = getattr(model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config,
                    "max_position_embeddings", None)
    longest = max(len(ids) for ids in prefix_ids)
    if isinstance(limit, int) and limit < longest + MIN_CONTEXT:
        raise AdapterCompatibilityError(f"SelfDebias needs room for a {longest}-token prefix plus {MIN_CONTEXT} tokens "
                                        f"of text, but {type(model).__name__} has {limit} positions; use shorter "
                                        f"prefixes.")
    specials = tokenizer("a")["input_ids"]
    leading = specials[0] if specials and specials[0] in tokenizer.all_special_ids else None
    config = SelfDebiasConfig(prefixes=list(prefixes), prefix_ids=prefix_ids, lm_kind=kind,
                              vocab_size=int(head.weight.shape[0]), leading_token_id=leading,
                              decay_constant=decay_constant, epsilon=epsilon, bias_type=bias_type,
                              base_model_name_or_path=getattr(model, "name_or_path", None) or None,
                              base_model_fingerprint=whole_model_fingerprint(model),
                              description=f"SelfDebias for {bias_type}: damps the tokens the debiasing prefix makes "
                                          f"likelier (Schick et al. 2021).")
    return SelfDebiasAdapter(config)


__all__ = ["DEBIASING_PREFIXES", "MIN_CONTEXT", "self_debias"]
