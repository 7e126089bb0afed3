"""`RepresentationAdapter`: an affine map x ↦ W·x + b on the body's final hidden states, toggled by a forward hook.

Post-processing debiasers (INLP, SentenceDebias, LEACE, RLACE) remove a concept from the representation instead of
changing weights. The map is applied by a forward hook on the model's body (`model.base_model`), so it reaches the
LM head *and* everything that reads the body's states directly (SEAT's pooled sentence embeddings); a pre-hook on
the head would miss SEAT, and folding the map into a tied head would also change the input embeddings.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from .._utils import read_safetensors_header
from ..errors import AdapterCompatibilityError, AdapterLoadError
from ._files import (
    adapter_folder,
    config_json,
    read_adapter_config,
    render_card,
    whole_model_fingerprint,
    write_adapter_folder,
)
from .base_model import resolve_parameters
from .configuration import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from .fingerprints import check_fingerprint, fingerprint
from .hooks import HookAdapter, HookHandle, body_of, hidden_size_of, register_hooks
from .patching import applied_entries
from .representation_configuration import (
    BIAS_KEY,
    REPRESENTATION_ADAPTER_TYPE,
    WEIGHT_KEY,
    RepresentationAdapterConfig,
)


class RepresentationAdapter(HookAdapter):
    """An affine map of the final hidden states, with the toggle, file and Hub contract of `DeltaAdapter`.

    Build one with a debiaser (`gradiend_hf.debiasers.fit_inlp(...)`), or from a matrix with `from_affine`, then:

    ```python
    >>> with adapter.applied(model):          # on inside the block; off afterwards, bit for bit
    ...     model.generate(...)
    >>> with delta.applied(model), adapter.applied(model):   # stacks with delta adapters, in either order
    ...     ...
    >>> adapter.save_pretrained("out/inlp"); RepresentationAdapter.from_pretrained("out/inlp")
    ```

    Args:
        config: a `RepresentationAdapterConfig`.
        tensors: `{"weight": W (d, d), "bias": b (d,)}`; the map is x ↦ x·Wᵀ + b, computed in float32.
    """

    def __init__(self, config: RepresentationAdapterConfig, tensors: Mapping[str, torch.Tensor]):
        expected = config.expected_tensors()
        if set(tensors) != set(expected):
            raise AdapterCompatibilityError(f"A representation adapter needs the tensors {sorted(expected)}, got "
                                            f"{sorted(tensors)}.")
        for key, shape in expected.items():
            tensor = tensors[key]
            if list(tensor.shape) != shape or not tensor.is_floating_point():
                raise AdapterCompatibilityError(f"Tensor `{key}` must be floating point of shape {shape}, got "
                                                f"{tensor.dtype} {list(tensor.shape)}.")
            if not torch.isfinite(tensor).all():
                raise AdapterCompatibilityError(f"Tensor `{key}` holds NaN or infinite values; refit the adapter.")
        self.config = config
        self.tensors = {key: tensors[key].detach().float().cpu() for key in expected}
        self.name_or_path: str | None = None
        self.commit_message = f"Upload {config.method} representation adapter"

    @classmethod
    def from_affine(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                    base_model: nn.Module | None = None, **config_fields: Any) -> RepresentationAdapter:
        """An adapter for the map x ↦ x·Wᵀ + b (a projection P is symmetric, so W = P).

        With `base_model`, the hidden size is checked and its name, type and fingerprint are recorded, together with
        the delta adapters applied to it right now (`fitted_with`).
        """
        weight = weight.detach().float()
        bias = torch.zeros(weight.shape[0]) if bias is None else bias.detach().float()
        config = RepresentationAdapterConfig(hidden_size=int(weight.shape[0]), **config_fields)
        if base_model is not None:
            record_base_model(config, base_model)
        return cls(config, {WEIGHT_KEY: weight, BIAS_KEY: bias})

    # -- the map -------------------------------------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        return self.tensors[WEIGHT_KEY]

    @property
    def bias(self) -> torch.Tensor:
        return self.tensors[BIAS_KEY]

    def transform(self, hidden: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
        """x + scale·((x·Wᵀ + b) − x) over the last dimension, in float32, returned in `hidden`'s dtype."""
        x = hidden.float()
        weight = self.weight.to(x.device)
        mapped = x @ weight.T + self.bias.to(x.device)
        if scale != 1.0:
            mapped = x + float(scale) * (mapped - x)
        return mapped.to(hidden.dtype)

    # -- base model checks ---------------------------------------------------------------------------------------
    def check_base_model(self, model: nn.Module) -> None:
        """Refuse a base with another hidden size; warn when its weights or applied deltas differ from the fit's."""
        found = hidden_size_of(model)
        if found != self.config.hidden_size:
            made_for = self.config.base_model_name_or_path or "another model"
            raise AdapterCompatibilityError(
                f"The representation adapter {self._label()} maps hidden states of size {self.config.hidden_size} "
                f"(fitted on `{made_for}`), but {type(model).__name__} has hidden size {found}; load that base model, "
                f"or fit the adapter again on this one."
            )
        check_fingerprint(model, [n for n, _ in model.named_parameters()], self.config.base_model_fingerprint,
                          what=f"The representation adapter {self._label()}",
                          recorded_base=self.config.base_model_name_or_path)
        fitted = [entry["weights"] for entry in self.config.fitted_with or []]
        if fitted and [entry["weights"] for entry in _current_deltas(model)] != fitted:
            names = [entry["adapter"] for entry in self.config.fitted_with]
            warnings.warn(
                f"The representation adapter {self._label()} was fitted on the base with the delta adapter(s) {names} "
                f"applied, which are not (all) applied now; apply them first, or the projection misses its target.",
                stacklevel=3,
            )

    def _label(self) -> str:
        if self.name_or_path:
            return f"`{self.name_or_path}`"
        return f"({self.config.method}, unsaved)"

    # -- toggling ------------------------------------------------------------------------------------------------
    def enable(self, model: nn.Module, *, scale: float = 1.0) -> HookHandle:
        """Switch the map on (a forward hook on `model.base_model`); `handle.remove()` or `disable` switches it off.

        `scale` interpolates: x + scale·(map(x) − x); 1 is the fitted map, 0 changes nothing.
        """
        if not math.isfinite(float(scale)):
            raise AdapterCompatibilityError(f"`scale` must be a finite number, got {scale!r}.")
        self.check_base_model(model)
        body = body_of(model)
        adapter = self

        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            return _replace_last_hidden_state(output, adapter.transform(_last_hidden_state(output), scale=scale))

        return register_hooks(model, self, [lambda: body.register_forward_hook(hook)],
                              description=f"{self.config.method} {self._label()} scale={scale}")

    # -- save / load / Hub ---------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *, model_card: bool = True) -> Path:
        """Write `adapter_config.json`, `adapter_model.safetensors` and (unless one you wrote exists) our card."""
        return write_adapter_folder(save_directory, config_json=config_json(self.config), tensors=self.tensors,
                                    adapter_type=REPRESENTATION_ADAPTER_TYPE,
                                    card=self.model_card if model_card else None)

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | None = None, token: bool | str | None = None,
                        local_files_only: bool = False, force_download: bool = False) -> RepresentationAdapter:
        """Load from a folder or a Hub repo; names and shapes are checked before any tensor is read."""
        folder = adapter_folder(path_or_repo, [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME],
                                what="a representation adapter", revision=revision, cache_dir=cache_dir, token=token,
                                local_files_only=local_files_only, force_download=force_download)
        config = read_adapter_config(folder, RepresentationAdapterConfig, adapter_type=REPRESENTATION_ADAPTER_TYPE,
                                     what="representation adapter")
        weights = folder / ADAPTER_WEIGHTS_NAME
        if not weights.is_file():
            raise AdapterLoadError(f"`{folder}` has a representation adapter config but no `{ADAPTER_WEIGHTS_NAME}`.")
        header = read_safetensors_header(weights, AdapterLoadError)
        found = {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        if found != config.expected_tensors():
            raise AdapterLoadError(f"`{weights}` holds {found}, but `{ADAPTER_CONFIG_NAME}` expects "
                                   f"{config.expected_tensors()}; the files do not belong together.")
        adapter = cls(config, load_file(str(weights)))
        adapter.name_or_path = str(path_or_repo)
        return adapter

    def model_card(self, repo_id: str | None = None):
        """Our model card rendered from `cards/representation_adapter.md`."""
        return render_card("representation_adapter.md", self.config, repo_id=repo_id,
                           tags=["representation-adapter", f"method:{self.config.method}"])

    def __repr__(self) -> str:
        return (f"RepresentationAdapter({self.config.method}, hidden_size={self.config.hidden_size}, "
                f"removed_rank={self.config.removed_rank}, base={self.config.base_model_name_or_path!r})")


def _last_hidden_state(output: Any) -> torch.Tensor:
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, torch.Tensor):
        return output
    raise AdapterCompatibilityError(f"The model body returned {type(output).__name__}; a representation adapter "
                                    f"needs `last_hidden_state` (a transformers body) or a tensor first.")


def _replace_last_hidden_state(output: Any, hidden: torch.Tensor) -> Any:
    if hasattr(output, "last_hidden_state"):
        output["last_hidden_state"] = hidden  # a ModelOutput keeps the key and the attribute in step
        return output
    if isinstance(output, torch.Tensor):
        return hidden
    return type(output)((hidden, *output[1:]))


def _current_deltas(model: nn.Module) -> list[dict[str, Any]]:
    """The delta adapters applied to `model` now, each with a fingerprint of the weights it changes."""
    described = []
    for entry in applied_entries(model):
        names = sorted(entry.deltas)
        params = resolve_parameters(model, names)
        label = getattr(entry.owner, "name_or_path", None) or type(entry.owner).__name__
        described.append({"adapter": str(label), "weights": fingerprint([params[n] for n in names])})
    return described


def record_base_model(config: RepresentationAdapterConfig, model: nn.Module) -> None:
    """Check the hidden size and record the base's name, type, fingerprint and currently applied delta adapters."""
    found = hidden_size_of(model)
    if found != config.hidden_size:
        raise AdapterCompatibilityError(f"The map is {config.hidden_size} wide but {type(model).__name__} has hidden "
                                        f"size {found}; fit it on this model's hidden states.")
    config.base_model_fingerprint = whole_model_fingerprint(model)
    config.base_model_type = getattr(getattr(model, "config", None), "model_type", None)
    config.fitted_with = _current_deltas(model) or None
    if config.base_model_name_or_path is None:
        config.base_model_name_or_path = getattr(model, "name_or_path", None) or None


__all__ = ["RepresentationAdapter", "record_base_model"]
