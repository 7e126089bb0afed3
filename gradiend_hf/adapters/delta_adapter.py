"""`DeltaAdapter`: a weight update for named base parameters that loads, toggles, merges and ships like an adapter.

The adapter is generic: it holds `{base parameter name: ΔW}` (or, as a *dial*, the decoder's direction W_d and offset
b_d, so that ΔW = α·(h·W_d + b_d) is chosen when applying) and knows nothing about how the update was found.
Applying it edits the base parameters in place and keeps their originals, so that switching it off or unmerging
restores them bit for bit (see `patching.py`).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from .._utils import read_safetensors_header
from ..errors import AdapterCompatibilityError, AdapterLoadError
from .base_model import describe_modules, resolve_parameters
from .configuration import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    DIRECTION_PREFIX,
    OFFSET_PREFIX,
    DeltaAdapterConfig,
)
from .fingerprints import base_fingerprint, check_fingerprint
from .patching import DeltaHandle, OnChange, applied_entries, apply_delta, remove_deltas

MODEL_CARD_NAME = "README.md"


def decoded_update(direction: torch.Tensor, offset: torch.Tensor, h: Sequence[float], alpha: float) -> torch.Tensor:
    """ΔW = α·(h·W_d + b_d) for one base parameter, in float32 (`direction` has a leading latent dimension)."""
    latent = direction.shape[0]
    h_row = torch.tensor([list(h)], dtype=torch.float32, device=direction.device)
    update = (h_row @ direction.float().reshape(latent, -1)).reshape(offset.shape) + offset.float()
    return float(alpha) * update


class DeltaAdapter:
    """A weight update for named base parameters, with PEFT-style files and exact toggling.

    Build one with `GradiendModel.to_adapter(h=..., alpha=...)` (or `DeltaAdapter.from_deltas({name: ΔW})`), then:

    ```python
    >>> with adapter.applied(base, scale=1.0):      # on inside the block, exactly off afterwards
    ...     base.generate(...)
    >>> adapter.merge(base); adapter.unmerge(base)  # unmerge restores the original weights bit for bit
    >>> adapter.save_pretrained("out/debias"); DeltaAdapter.from_pretrained("out/debias")
    >>> adapter.export_lora("out/debias-lora", rank="exact")   # stock PEFT LoRA
    ```

    Args:
        config: a `DeltaAdapterConfig`.
        tensors: `{name: ΔW}` for a fixed adapter; `{"direction/name": W_d, "offset/name": b_d}` for a dial.
    """

    def __init__(self, config: DeltaAdapterConfig, tensors: Mapping[str, torch.Tensor]):
        expected = config.expected_tensors()
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise AdapterCompatibilityError(
                f"The tensors do not match the adapter config: missing {missing[:3]}, unexpected {extra[:3]}."
            )
        for key, shape in expected.items():
            if list(tensors[key].shape) != shape:
                raise AdapterCompatibilityError(f"Tensor `{key}` has shape {list(tensors[key].shape)}, the config "
                                                f"says {shape}.")
            if not tensors[key].is_floating_point():
                raise AdapterCompatibilityError(f"Tensor `{key}` must be floating point, got {tensors[key].dtype}.")
        self.config = config
        self.tensors = {key: tensors[key] for key in expected}
        self.name_or_path: str | None = None

    # -- construction --------------------------------------------------------------------------------------------
    @classmethod
    def from_deltas(cls, deltas: Mapping[str, torch.Tensor], *, base_model: nn.Module | None = None,
                    **config_fields: Any) -> DeltaAdapter:
        """A fixed adapter from plain `{base parameter name: ΔW}`.

        With `base_model`, the adapter is checked against it and records its fingerprint and module types.
        """
        deltas = {name: tensor.detach() for name, tensor in deltas.items()}
        config = DeltaAdapterConfig(param_names=list(deltas), param_shapes=[list(t.shape) for t in deltas.values()],
                                    **config_fields)
        if base_model is not None:
            record_base_model(config, base_model)
        return cls(config, deltas)

    @classmethod
    def from_decoder(cls, directions: Mapping[str, torch.Tensor], offsets: Mapping[str, torch.Tensor], *,
                     h: float | Sequence[float], alpha: float, dial: bool = False,
                     base_model: nn.Module | None = None, **config_fields: Any) -> DeltaAdapter:
        """An adapter from a decoder's direction W_d (`(latent, *shape)`) and offset b_d per base parameter.

        A dial keeps both, so `h` and `alpha` stay knobs; otherwise the update α·(h·W_d + b_d) is stored. Both use
        the same arithmetic, so a dial applied at `h` equals the fixed adapter made at `h`, bit for bit.
        """
        names = list(offsets)
        latent = next(iter(directions.values())).shape[0]
        config = DeltaAdapterConfig(param_names=names, param_shapes=[list(offsets[n].shape) for n in names],
                                    dial=dial, h=[float(h)] if isinstance(h, int | float) else list(h),
                                    alpha=float(alpha), latent_size=latent, **config_fields)
        if base_model is not None:
            record_base_model(config, base_model)
        dial_tensors = {}
        for name in names:
            dial_tensors[DIRECTION_PREFIX + name] = directions[name].detach().float().clone()
            dial_tensors[OFFSET_PREFIX + name] = offsets[name].detach().float().clone()
        if dial:
            return cls(config, dial_tensors)
        fixed = {name: decoded_update(dial_tensors[DIRECTION_PREFIX + name], dial_tensors[OFFSET_PREFIX + name],
                                      config.h, alpha) for name in names}
        return cls(config, fixed)

    # -- the update ----------------------------------------------------------------------------------------------
    @property
    def param_names(self) -> list[str]:
        return list(self.config.param_names)

    @property
    def is_dial(self) -> bool:
        return self.config.dial

    def delta(self, *, h: float | Sequence[float] | None = None, alpha: float | None = None,
              scale: float = 1.0) -> dict[str, torch.Tensor]:
        """The update `scale·ΔW` per base parameter (a dial decodes it at `h` and `alpha`, by default its own)."""
        if not self.config.dial:
            if h is not None or alpha is not None:
                raise AdapterCompatibilityError(
                    "This adapter stores one fixed update (made at h="
                    f"{self.config.h}, alpha={self.config.alpha}); `h` and `alpha` are knobs only of a dial adapter. "
                    f"Use `scale`, or export a dial with `to_adapter(..., dial=True)` (CLI: --dial)."
                )
            tensors = {name: self.tensors[name] for name in self.config.param_names}
        else:
            h_values = self.config.h if h is None else ([float(h)] if isinstance(h, int | float) else list(h))
            if len(h_values) != self.config.latent_size:
                raise AdapterCompatibilityError(f"`h` must hold {self.config.latent_size} value(s), got {h_values}.")
            strength = self.config.alpha if alpha is None else float(alpha)
            tensors = {name: decoded_update(self.tensors[DIRECTION_PREFIX + name], self.tensors[OFFSET_PREFIX + name],
                                            h_values, strength) for name in self.config.param_names}
        if scale == 1.0:
            return dict(tensors)
        return {name: float(scale) * tensor.float() for name, tensor in tensors.items()}

    def norm(self, **knobs: Any) -> float:
        """Frobenius norm of the whole update (handy to compare adapters and strengths)."""
        return math.sqrt(sum(float(t.double().pow(2).sum()) for t in self.delta(**knobs).values()))

    # -- base model checks ---------------------------------------------------------------------------------------
    def check_base_model(self, base_model: nn.Module) -> dict[str, nn.Parameter]:
        """The base parameters this adapter changes; an error lists every missing or mis-shaped one, and other
        weights than the recorded fingerprint get a warning."""
        params = resolve_parameters(base_model, self.config.param_names, self.config.param_shapes,
                                    what=f"The delta adapter {self._label()}",
                                    recorded_base=self.config.base_model_name_or_path)
        check_fingerprint(base_model, self.config.param_names, self.config.base_model_fingerprint,
                          what=f"The delta adapter {self._label()}", recorded_base=self.config.base_model_name_or_path)
        return params

    def _label(self) -> str:
        if self.name_or_path:
            return f"`{self.name_or_path}`"
        feature = (self.config.feature or {}).get("name")
        return f"for feature {feature!r}" if feature else "(unsaved)"

    # -- toggling and merging ------------------------------------------------------------------------------------
    def enable(self, base_model: nn.Module, *, scale: float = 1.0, h: float | Sequence[float] | None = None,
               alpha: float | None = None) -> DeltaHandle:
        """Switch the adapter on: W ← W + scale·ΔW in place, originals kept. Returns a handle; `handle.remove()` or
        `disable(base_model)` switches it off again, restoring the weights bit for bit."""
        return self._apply(base_model, scale=scale, h=h, alpha=alpha, merged=False)

    def disable(self, base_model: nn.Module, *, on_change: OnChange = "raise") -> int:
        """Switch off every `enable`d application of this adapter on `base_model`; returns how many there were.

        A covered weight changed in place while the adapter was on raises `AdapterStateError` unless `on_change`
        says to keep (`"keep"`) or drop (`"discard"`) that change."""
        return remove_deltas(base_model, lambda entry: entry.owner is self and not entry.merged, on_change=on_change)

    @contextlib.contextmanager
    def applied(self, base_model: nn.Module, *, scale: float = 1.0, h: float | Sequence[float] | None = None,
                alpha: float | None = None) -> Iterator[nn.Module]:
        """Context manager: the adapter is on inside the block and off afterwards, also after an exception.

        The handle is acquired before the `try`, so a failure while applying leaves nothing half-applied either
        (applying is all-or-nothing).
        """
        handle = self.enable(base_model, scale=scale, h=h, alpha=alpha)
        try:
            yield base_model
        finally:
            handle.remove()

    def merge(self, base_model: nn.Module, *, scale: float = 1.0, h: float | Sequence[float] | None = None,
              alpha: float | None = None) -> DeltaHandle:
        """Merge the update into the base weights (in place). Unlike PEFT's subtract-to-unmerge, the originals are
        kept, so `unmerge` restores them exactly. Save a standalone merged model with `merge_and_save`."""
        return self._apply(base_model, scale=scale, h=h, alpha=alpha, merged=True)

    def unmerge(self, base_model: nn.Module, *, on_change: OnChange = "raise") -> int:
        """Undo every `merge` of this adapter on `base_model` exactly; returns how many merges were undone (see
        `disable` for `on_change`)."""
        return remove_deltas(base_model, lambda entry: entry.owner is self and entry.merged, on_change=on_change)

    def is_applied(self, base_model: nn.Module) -> bool:
        """Whether this adapter is currently enabled or merged on `base_model`."""
        return any(entry.owner is self for entry in applied_entries(base_model))

    def _apply(self, base_model: nn.Module, *, scale: float, h, alpha, merged: bool) -> DeltaHandle:
        if not math.isfinite(float(scale)):
            raise AdapterCompatibilityError(f"`scale` must be a finite number, got {scale!r}.")
        self.check_base_model(base_model)
        deltas = self.delta(h=h, alpha=alpha, scale=scale)
        description = f"{self._label()} scale={scale}" + (f" h={h} alpha={alpha}" if self.is_dial else "")
        return apply_delta(base_model, deltas, owner=self, merged=merged, description=description)

    def merge_and_save(self, base_model: nn.Module, save_directory: str | os.PathLike, *, tokenizer: Any = None,
                       scale: float = 1.0, h: float | Sequence[float] | None = None, alpha: float | None = None,
                       overwrite: bool = False, **save_kwargs: Any) -> Path:
        """Write the base model with the update merged as a plain transformers folder (loads without gradiend_hf).

        The base model itself is left as it was. An existing non-empty folder is refused unless `overwrite` (and
        then replaced only if it holds gradiend_hf's outputs alone); the new folder is swapped in when complete.
        """
        from ..atomic_io import atomic_folder, check_output_dir

        folder = check_output_dir(save_directory, overwrite=overwrite, what="merged model")
        with atomic_folder(folder, what="merged model", replace=True) as staging:
            with self.applied(base_model, scale=scale, h=h, alpha=alpha):
                base_model.save_pretrained(staging, **save_kwargs)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
        return folder

    # -- save / load / Hub ---------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *, model_card: bool = True) -> Path:
        """Write `adapter_config.json`, `adapter_model.safetensors` and (unless one you wrote exists) our card.

        Crash-safe: the files are staged in a hidden sibling folder and swapped into place together, so a process
        killed mid-save leaves the previous save as it was; other files in the folder are kept.
        """
        from ..atomic_io import atomic_folder, atomic_save_tensors
        from ..hub import CARD_MARKER

        folder = Path(save_directory)
        card_path = folder / MODEL_CARD_NAME
        ours = not card_path.exists() or CARD_MARKER in card_path.read_text(encoding="utf-8", errors="replace")
        with atomic_folder(folder, what="delta adapter") as staging:
            atomic_save_tensors(self.tensors, staging / ADAPTER_WEIGHTS_NAME,
                                metadata={"format": "pt", "adapter_type": self.config.adapter_type})
            self.config.save(staging)
            if model_card and ours:
                self.model_card().save(staging / MODEL_CARD_NAME)
        return folder

    @classmethod
    def from_pretrained(cls, path_or_repo: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | None = None, token: bool | str | None = None,
                        local_files_only: bool = False, force_download: bool = False) -> DeltaAdapter:
        """Load a delta adapter from a folder or a Hub repo (offline from the HF cache too).

        The files are checked before any tensor is read; only JSON and safetensors are read, nothing is unpickled.
        """
        source = str(path_or_repo)
        if os.path.isdir(source):
            folder = Path(source)
        else:
            from ..hub import download_repo_files

            folder = download_repo_files(source, [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME],
                                         error_class=AdapterLoadError, what="a delta adapter", revision=revision,
                                         cache_dir=cache_dir, token=token, local_files_only=local_files_only,
                                         force_download=force_download)
        from ..untrusted_files import check_folder

        check_folder(folder, [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME], what="delta adapter",
                     error_class=AdapterLoadError)
        config = DeltaAdapterConfig.from_folder(folder)
        weights = folder / ADAPTER_WEIGHTS_NAME
        if not weights.is_file():
            raise AdapterLoadError(f"`{folder}` has an adapter config but no `{ADAPTER_WEIGHTS_NAME}`.")
        header = read_safetensors_header(weights, AdapterLoadError)
        expected = config.expected_tensors()
        found = {k: v for k, v in header.items() if k != "__metadata__"}
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        if missing or extra:
            raise AdapterLoadError(
                f"`{weights}` does not match `{ADAPTER_CONFIG_NAME}`: {len(missing)} tensor(s) missing "
                f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}). The files do not belong together."
            )
        for key, shape in expected.items():
            if list(found[key]["shape"]) != shape:
                raise AdapterLoadError(f"`{weights}`: tensor `{key}` has shape {found[key]['shape']}, the config "
                                       f"says {shape}.")
        adapter = cls(config, load_file(str(weights)))
        adapter.name_or_path = source
        return adapter

    def model_card(self, repo_id: str | None = None):
        """Our model card (`huggingface_hub.ModelCard`) rendered from `cards/delta_adapter.md`."""
        from ..hub import render_adapter_card
        from ..zoo import EMBEDDED_MODELS, hub_id_for

        base = self.config.base_model_name_or_path
        embedded = EMBEDDED_MODELS.get(base or "")
        return render_adapter_card(self.config, repo_id=repo_id, base_model_id=hub_id_for(base),
                                   license=embedded.license if embedded else None,
                                   license_note=embedded.license_note if embedded else None)

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: bool | str | None = None, revision: str | None = None, create_pr: bool = False) -> Any:
        """Upload config, weights and our card to a Hub repo (a README on the Hub that you wrote is kept)."""
        from ..hub import push_folder_with_card

        return push_folder_with_card(
            save=lambda folder: self.save_pretrained(folder, model_card=False),
            card=self.model_card(repo_id=repo_id), repo_id=repo_id,
            commit_message=commit_message or "Upload GRADIEND delta adapter", private=private, token=token,
            revision=revision, create_pr=create_pr,
        )

    # -- PEFT exports --------------------------------------------------------------------------------------------
    def export_lora(self, save_directory: str | os.PathLike, *, rank: str | int | float = "exact",
                    pure: bool = False, base_model: nn.Module | None = None, tokenizer: Any = None,
                    sample_texts: Sequence[str] | None = None, scale: float = 1.0,
                    h: float | Sequence[float] | None = None, alpha: float | None = None, overwrite: bool = False):
        """Write a stock PEFT LoRA adapter of this update (see `gradiend_hf.adapters.peft_export.export_lora`)."""
        from .peft_export import export_lora

        return export_lora(self, save_directory, rank=rank, pure=pure, base_model=base_model, tokenizer=tokenizer,
                           sample_texts=sample_texts, scale=scale, h=h, alpha=alpha, overwrite=overwrite)

    def export_shira(self, save_directory: str | os.PathLike, *, r: int = 32, pure: bool = False,
                     base_model: nn.Module | None = None, tokenizer: Any = None,
                     sample_texts: Sequence[str] | None = None, scale: float = 1.0,
                     h: float | Sequence[float] | None = None, alpha: float | None = None, overwrite: bool = False):
        """Write a stock PEFT SHiRA adapter (sparse, high rank; see `gradiend_hf.adapters.shira_export`)."""
        from .shira_export import export_shira

        return export_shira(self, save_directory, r=r, pure=pure, base_model=base_model, tokenizer=tokenizer,
                            sample_texts=sample_texts, scale=scale, h=h, alpha=alpha, overwrite=overwrite)

    def __repr__(self) -> str:
        kind = "dial" if self.is_dial else "fixed"
        return (f"DeltaAdapter({kind}, {len(self.config.param_names)} parameters, n={self.config.num_entries:,}, "
                f"h={self.config.h}, alpha={self.config.alpha}, base={self.config.base_model_name_or_path!r})")


def record_base_model(config: DeltaAdapterConfig, base_model: nn.Module) -> None:
    """Check the adapter's parameters against `base_model` and record its fingerprint and module types."""
    resolve_parameters(base_model, config.param_names, config.param_shapes, what="The delta adapter")
    config.base_model_fingerprint = base_fingerprint(base_model, config.param_names)
    config.modules = describe_modules(base_model, config.param_names)
    if config.base_model_name_or_path is None:
        config.base_model_name_or_path = getattr(base_model, "name_or_path", None) or None


__all__ = ["DeltaAdapter", "decoded_update", "record_base_model"]
