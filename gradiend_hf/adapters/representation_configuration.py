"""`RepresentationAdapterConfig`: which affine map of the final hidden states, fitted how, on which base."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import GradiendConfigError

REPRESENTATION_ADAPTER_TYPE = "gradiend_representation"
REPRESENTATION_PEFT_REFUSAL = (
    "GRADIEND_REPRESENTATION (a gradiend_hf representation adapter, not a PEFT adapter type: load it with "
    "gradiend_hf.RepresentationAdapter.from_pretrained or gradiend_hf.load_adapter)"
)
"""Written as `peft_type`, so that PEFT refuses the folder with a KeyError carrying this sentence."""

WEIGHT_KEY = "weight"
BIAS_KEY = "bias"
"""Tensor keys in `adapter_model.safetensors`: the map is x ↦ x·Wᵀ + b (an `nn.Linear` over the hidden size)."""

METHODS = ("inlp", "sentence_debias", "leace", "rlace", "custom")
"""Fitting methods the library knows (`custom`: a matrix you built yourself)."""


@dataclass
class RepresentationAdapterConfig:
    """Configuration of a [`RepresentationAdapter`], saved as `adapter_config.json`.

    Args:
        hidden_size (`int`): size of the hidden states the map acts on (the base's `hidden_size`).
        method (`str`, defaults to `"custom"`): how the map was fitted, one of `METHODS`.
        removed_rank (`int`, *optional*): number of directions the map removes (projections), when known.
        base_model_name_or_path (`str`, *optional*): base model it was fitted on.
        base_model_revision (`str`, *optional*): revision of that base model.
        base_model_type (`str`, *optional*): the base's `config.model_type` (e.g. `gemma3_text`).
        base_model_fingerprint (`str`, *optional*): hash of every base parameter (rounded to bf16), taken without any
            delta adapter applied; another base gets a warning.
        fitted_with (`list[dict]`, *optional*): delta adapters that were applied while fitting (a projection refitted
            on a weight-changed model belongs with that change): `{"adapter", "weights"}` per adapter, `weights` a
            fingerprint of the changed parameters.
        feature (`dict`, *optional*): the feature the data came from (`name`, `classes`, `targets`).
        fit (`dict`, *optional*): how it was fitted: data sizes, settings and probe accuracies before and after.
        results (`dict`, *optional*): measured results (benchmarks) for the model card.
        description (`str`, *optional*): one line on what the adapter does, for the card.
    """

    hidden_size: int = 0
    method: str = "custom"
    removed_rank: int | None = None
    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    base_model_type: str | None = None
    base_model_fingerprint: str | None = None
    fitted_with: list[dict[str, Any]] | None = None
    feature: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    description: str | None = None
    adapter_type: str = REPRESENTATION_ADAPTER_TYPE
    peft_type: str = REPRESENTATION_PEFT_REFUSAL
    gradiend_hf_version: str | None = None

    def __post_init__(self) -> None:
        if self.gradiend_hf_version is None:
            from .. import __version__

            self.gradiend_hf_version = __version__
        self.validate()

    def validate(self) -> None:
        """Each error says what was expected and what was found."""
        if self.adapter_type != REPRESENTATION_ADAPTER_TYPE:
            raise GradiendConfigError(f"`adapter_type` must be {REPRESENTATION_ADAPTER_TYPE!r}, got "
                                      f"{self.adapter_type!r}.")
        if not isinstance(self.hidden_size, int) or isinstance(self.hidden_size, bool) or self.hidden_size < 1:
            raise GradiendConfigError(f"`hidden_size` must be a positive integer, got {self.hidden_size!r}.")
        if self.method not in METHODS:
            raise GradiendConfigError(f"`method` must be one of {list(METHODS)}, got {self.method!r}.")
        if self.removed_rank is not None and not 0 <= self.removed_rank <= self.hidden_size:
            raise GradiendConfigError(f"`removed_rank` must lie in [0, hidden_size={self.hidden_size}], got "
                                      f"{self.removed_rank!r}.")

    def expected_tensors(self) -> dict[str, list[int]]:
        """Tensor key -> shape in `adapter_model.safetensors`."""
        return {WEIGHT_KEY: [self.hidden_size, self.hidden_size], BIAS_KEY: [self.hidden_size]}


__all__ = [
    "BIAS_KEY",
    "METHODS",
    "REPRESENTATION_ADAPTER_TYPE",
    "REPRESENTATION_PEFT_REFUSAL",
    "WEIGHT_KEY",
    "RepresentationAdapterConfig",
]
