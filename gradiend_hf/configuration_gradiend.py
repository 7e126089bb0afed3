"""`GradiendConfig`: everything needed to rebuild a GRADIEND model and to know what it was made from."""

# No `from __future__ import annotations`: @strict validates against the evaluated type hints.


import difflib
import math
from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .errors import GradiendConfigError

LMKind = Literal["masked", "causal"]
SourceMode = Literal["factual", "counterfactual", "diff"]
Activation = Literal["tanh", "hardtanh", "identity"]

SOURCE_MODES: tuple[str, ...] = ("factual", "counterfactual", "diff")
ACTIVATIONS: tuple[str, ...] = ("tanh", "hardtanh", "identity")

# Keys that transformers itself passes to configs while saving and loading; anything else that is not a field is
# most likely a typo of one of ours and is refused (a v4-style config would accept it silently).
_TRANSFORMERS_KEYS = frozenset(
    {
        "model_type",
        "name_or_path",
        "_name_or_path",
        "_commit_hash",
        "_attn_implementation",
        "_attn_implementation_internal",
        "attn_implementation",
        "_experts_implementation",
        "experts_implementation",
        "output_attentions",
        "torch_dtype",
        "use_cache",
        "tie_word_embeddings",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
    }
)


@strict
class GradiendConfig(PreTrainedConfig):
    r"""Configuration of a [`GradiendModel`]: the base model it reads, the base parameters it spans and the feature.

    A GRADIEND model maps the gradient of the selected base parameters to a feature value
    `h = act(W_e^T g + b_e)` and a feature value back to a weight update `h * W_d + b_d`. The config stores the
    selected parameters by name and shape (in order), so the weights can be laid out per base parameter and the
    decoded update maps straight onto the base model.

    Args:
        base_model_name_or_path (`str`, *optional*):
            Hub id, local path or embedded model name (see `gradiend models`) of the base language model.
        base_model_revision (`str`, *optional*):
            Revision (branch, tag or commit) of the base model on the Hub.
        base_model_type (`str`, *optional*):
            `model_type` of the base model's config (e.g. `"gemma3_text"`), for provenance checks.
        base_model_fingerprint (`str`, *optional*):
            Hash of the base weights of the selected parameters (rounded to bf16), passed on to delta adapters so that
            applying one to other weights warns.
        param_modules (`dict`, *optional*):
            Per selected parameter, the base module that owns it (`module`, `type`, `param`, `bias`); PEFT exports of
            the decoded update need to know Linear layers from other modules.
        lm_kind (`str`, *optional*, defaults to `"causal"`):
            `"masked"` (the target slot is masked) or `"causal"` (the prefix before the slot is fed).
        param_names (`list[str]`):
            Names of the selected base parameters, in the order the weights are laid out.
        param_shapes (`list[list[int]]`):
            Shape of each selected base parameter, in the same order as `param_names`.
        feature_name (`str`, *optional*, defaults to `"feature"`):
            Name of the feature, e.g. `"gender"`.
        feature_classes (`list[str]`, *optional*, defaults to `["positive", "negative"]`):
            The two classes of the feature.
        positive_class (`str`, *optional*):
            The class the encoder maps to `+1`; defaults to `feature_classes[0]`.
        feature_targets (`dict[str, list[str]]`, *optional*):
            Factual target words per class (`{"female": ["she"], "male": ["he"]}`); the counterfactual target of a
            class is the other class's word.
        source (`str`, *optional*, defaults to `"factual"`):
            Which gradient the encoder reads: `"factual"` (the paper's default), `"counterfactual"` or `"diff"`.
            The decoder always reconstructs the difference `factual - counterfactual`.
        activation (`str`, *optional*, defaults to `"tanh"`):
            Encoder activation; odd functions only, so that flipping the sign of the encoder flips the feature.
        latent_size (`int`, *optional*, defaults to 1):
            Number of feature neurons.
        training (`dict`, *optional*):
            Training provenance (steps, seed, data, validation correlation, library versions).
        results (`dict`, *optional*):
            Measured results for the model card: `eval_results` (rows of `huggingface_hub.EvalResult` fields, shown by
            the Hub as `model-index`) and `markdown` (a results section).
        gradiend_hf_version (`str`, *optional*):
            Version of gradiend_hf that wrote the config.

    Example:

    ```python
    >>> from gradiend_hf import GradiendConfig
    >>> config = GradiendConfig(param_names=["model.layers.0.mlp.down_proj.weight"], param_shapes=[[64, 128]])
    >>> config.num_selected
    8192
    ```
    """

    model_type = "gradiend"

    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    base_model_type: str | None = None
    base_model_fingerprint: str | None = None
    param_modules: dict[str, Any] | None = None
    lm_kind: LMKind = "causal"
    param_names: list[str] | None = None
    param_shapes: list[list[int]] | None = None
    feature_name: str = "feature"
    feature_classes: list[str] | None = None
    positive_class: str | None = None
    feature_targets: dict[str, list[str]] | None = None
    source: SourceMode = "factual"
    activation: Activation = "tanh"
    latent_size: int = 1
    training: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    gradiend_hf_version: str | None = None

    def __post_init__(self, **kwargs):
        self._refuse_unknown_keys(kwargs)
        if self.param_names is None:
            self.param_names = []
        if self.param_shapes is None:
            self.param_shapes = []
        self.param_shapes = [list(shape) for shape in self.param_shapes]
        if self.feature_classes is None:
            self.feature_classes = ["positive", "negative"]
        if self.positive_class is None:
            self.positive_class = self.feature_classes[0] if self.feature_classes else None
        if self.feature_targets is None:
            self.feature_targets = {}
        if self.gradiend_hf_version is None:
            from . import __version__

            self.gradiend_hf_version = __version__
        super().__post_init__(**kwargs)

    @classmethod
    def _refuse_unknown_keys(cls, kwargs: dict[str, Any]) -> None:
        fields = set(cls.__dataclass_fields__)
        if "auto_map" in kwargs:
            raise GradiendConfigError(
                "This GradiendConfig has `auto_map`, which points transformers at code shipped with the repository; a "
                "GRADIEND model never needs remote code, so it is refused and nothing was imported or executed."
            )
        for key in kwargs:
            if key in _TRANSFORMERS_KEYS or key.startswith("_") or key in fields:
                continue
            close = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.6)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise GradiendConfigError(
                f"GradiendConfig got an unknown key `{key}`.{hint} Valid keys are the fields listed in the "
                f"GradiendConfig docstring (e.g. param_names, param_shapes, feature_classes, source, activation)."
            )

    # -- strict validators (each runs on construction and on load) ------------------------------------------------
    def validate_parameters(self):
        """Part of `@strict`-powered validation: names and shapes must describe the same parameters."""
        if len(self.param_names) != len(self.param_shapes):
            raise GradiendConfigError(
                f"`param_names` has {len(self.param_names)} entries but `param_shapes` has "
                f"{len(self.param_shapes)}; give one shape per selected parameter, in the same order."
            )
        seen: set[str] = set()
        for name, shape in zip(self.param_names, self.param_shapes):
            if name in seen:
                raise GradiendConfigError(f"`param_names` lists `{name}` twice; each base parameter may appear once.")
            seen.add(name)
            if not shape or any(not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in shape):
                raise GradiendConfigError(
                    f"The shape of `{name}` must be a non-empty list of positive integers, got {shape!r}."
                )
        from .untrusted_files import check_param_modules

        check_param_modules(self.param_modules, self.param_names, what="GRADIEND config",
                            error_class=GradiendConfigError)

    def validate_feature(self):
        """Part of `@strict`-powered validation: two distinct classes, a known positive class, known target keys."""
        classes = self.feature_classes
        if len(classes) != 2 or classes[0] == classes[1]:
            raise GradiendConfigError(
                f"`feature_classes` must name exactly two distinct classes, got {classes!r}."
            )
        if self.positive_class not in classes:
            raise GradiendConfigError(
                f"`positive_class` must be one of {classes!r}, got {self.positive_class!r}."
            )
        unknown = sorted(set(self.feature_targets) - set(classes))
        if unknown:
            raise GradiendConfigError(
                f"`feature_targets` has targets for unknown classes {unknown}; valid classes are {classes!r}."
            )

    def validate_latent_size(self):
        """Part of `@strict`-powered validation: at least one feature neuron."""
        if self.latent_size < 1:
            raise GradiendConfigError(f"`latent_size` must be at least 1, got {self.latent_size}.")

    # -- derived values --------------------------------------------------------------------------------------------
    @property
    def num_selected(self) -> int:
        """n: the number of selected base-parameter entries (the length of one flattened gradient)."""
        return sum(math.prod(shape) for shape in self.param_shapes)

    @property
    def negative_class(self) -> str:
        """The class the encoder maps to -1."""
        return next(c for c in self.feature_classes if c != self.positive_class)


__all__ = ["ACTIVATIONS", "SOURCE_MODES", "GradiendConfig"]
