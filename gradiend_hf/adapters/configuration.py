"""`DeltaAdapterConfig`: what a delta adapter changes, what it was made from, and for which base weights."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import AdapterLoadError, GradiendConfigError

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_TYPE = "gradiend_delta"
PEFT_TYPE_REFUSAL = (
    "GRADIEND_DELTA (a gradiend_hf delta adapter, not a PEFT adapter type: load it with "
    "gradiend_hf.DeltaAdapter.from_pretrained, or export it for PEFT with `gradiend export --lora exact`)"
)
"""Written as `peft_type`: PEFT 0.21's `PeftType` enum is closed, so PEFT and transformers refuse the folder with a
KeyError that carries this sentence (instead of misreading the tensors)."""

DIRECTION_PREFIX = "direction/"
OFFSET_PREFIX = "offset/"
"""Tensor keys of a dial adapter: the decoder's direction W_d and offset b_d per base parameter."""


ConfigT = TypeVar("ConfigT")


def config_from_dict(cls: type[ConfigT], data: dict[str, Any]) -> ConfigT:
    """Build a config dataclass from a dict, refusing unknown keys with a "did you mean" hint."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1, cutoff=0.6)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            raise GradiendConfigError(f"{cls.__name__} got an unknown key `{key}`.{hint}")
    return cls(**data)


@dataclass
class DeltaAdapterConfig:
    """Configuration of a [`DeltaAdapter`], saved as `adapter_config.json` next to `adapter_model.safetensors`.

    Args:
        param_names (`list[str]`): base parameters the adapter changes, in file order.
        param_shapes (`list[list[int]]`): their shapes.
        dial (`bool`, defaults to `False`): the file keeps the decoder's direction and offset, so the feature value
            `h` (and strength `alpha`) are chosen when applying; otherwise it stores one fixed update.
        h (`list[float]`, *optional*): the feature value the update was decoded at (dial: the default value).
        alpha (`float`, *optional*): the strength the update was scaled by (dial: the default value).
        latent_size (`int`, defaults to 1): number of feature neurons of the GRADIEND model it came from.
        base_model_name_or_path (`str`, *optional*): base model it was made for (Hub id, path or embedded name).
        base_model_revision (`str`, *optional*): revision of that base model.
        base_model_fingerprint (`str`, *optional*): hash of the base weights of `param_names` (rounded to bf16); a
            base with other weights gets a warning, not a refusal.
        modules (`dict`, *optional*): per parameter, the base module owning it (`module`, `type`, `param`,
            `bias`); what PEFT exports need to know.
        gradiend_model (`str`, *optional*): the GRADIEND model (folder or Hub id) that decoded the update.
        feature (`dict`, *optional*): the feature (`name`, `classes`, `positive_class`, `targets`).
        merged_from (`list[dict]`, *optional*): for merged adapters, the sources with their weights and method.
        results (`dict`, *optional*): measured results (search scores, benchmarks) for the model card.
        description (`str`, *optional*): one line on what the adapter does, for the card.
    """

    param_names: list[str] = field(default_factory=list)
    param_shapes: list[list[int]] = field(default_factory=list)
    dial: bool = False
    h: list[float] | None = None
    alpha: float | None = None
    latent_size: int = 1
    base_model_name_or_path: str | None = None
    base_model_revision: str | None = None
    base_model_fingerprint: str | None = None
    modules: dict[str, dict[str, Any]] | None = None
    gradiend_model: str | None = None
    feature: dict[str, Any] | None = None
    merged_from: list[dict[str, Any]] | None = None
    results: dict[str, Any] | None = None
    description: str | None = None
    adapter_type: str = ADAPTER_TYPE
    peft_type: str = PEFT_TYPE_REFUSAL
    gradiend_hf_version: str | None = None

    def __post_init__(self) -> None:
        if self.gradiend_hf_version is None:
            from .. import __version__

            self.gradiend_hf_version = __version__
        if _is_number(self.h):
            self.h = [float(self.h)]
        self._check_types()
        self.param_names = list(self.param_names)
        self.param_shapes = [list(shape) for shape in self.param_shapes]
        self.validate()

    def _check_types(self) -> None:
        """Each field has its documented type (a config file is user input: it may hold anything)."""
        def fail(name: str, expected: str) -> None:
            raise GradiendConfigError(f"`{name}` must be {expected}, got {getattr(self, name)!r}.")

        if not isinstance(self.param_names, list | tuple) or not all(isinstance(n, str) for n in self.param_names):
            fail("param_names", "a list of parameter names")
        if not isinstance(self.param_shapes, list | tuple) or not all(isinstance(s, list | tuple)
                                                                      for s in self.param_shapes):
            fail("param_shapes", "a list of shapes (lists of integers)")
        if not isinstance(self.dial, bool):
            fail("dial", "true or false")
        if self.h is not None and (not isinstance(self.h, list | tuple) or not all(_is_number(v) for v in self.h)):
            fail("h", "a number or a list of numbers")
        if self.alpha is not None and not _is_number(self.alpha):
            fail("alpha", "a number")
        for name in ("modules", "feature", "results"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                fail(name, "an object (dict)")
        if self.merged_from is not None and not isinstance(self.merged_from, list):
            fail("merged_from", "a list")
        for name in ("base_model_name_or_path", "base_model_revision", "base_model_fingerprint", "gradiend_model",
                     "description", "gradiend_hf_version"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                fail(name, "a string")
        for name in ("adapter_type", "peft_type"):
            if not isinstance(getattr(self, name), str):
                fail(name, "a string")

    def validate(self) -> None:
        """Check that the fields agree with each other; each error says what was expected and found."""
        if self.adapter_type != ADAPTER_TYPE:
            raise GradiendConfigError(f"`adapter_type` must be {ADAPTER_TYPE!r}, got {self.adapter_type!r}.")
        if len(self.param_names) != len(self.param_shapes):
            raise GradiendConfigError(
                f"`param_names` has {len(self.param_names)} entries but `param_shapes` has {len(self.param_shapes)}; "
                f"give one shape per parameter, in the same order."
            )
        if len(set(self.param_names)) != len(self.param_names):
            duplicate = next(n for n in self.param_names if self.param_names.count(n) > 1)
            raise GradiendConfigError(f"`param_names` lists `{duplicate}` twice; each parameter may appear once.")
        for name, shape in zip(self.param_names, self.param_shapes):
            if not shape or any(not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in shape):
                raise GradiendConfigError(f"The shape of `{name}` must be a non-empty list of positive integers, "
                                          f"got {shape!r}.")
        from ..untrusted_files import check_param_modules

        check_param_modules(self.modules, self.param_names, what="delta adapter config",
                            error_class=GradiendConfigError)
        if not isinstance(self.latent_size, int) or isinstance(self.latent_size, bool) or self.latent_size < 1:
            raise GradiendConfigError(f"`latent_size` must be a positive integer, got {self.latent_size!r}.")
        if self.h is not None:
            if len(self.h) != self.latent_size or not all(math.isfinite(float(v)) for v in self.h):
                raise GradiendConfigError(f"`h` must hold {self.latent_size} finite number(s), got {self.h!r}.")
            self.h = [float(v) for v in self.h]
        if self.alpha is not None and not math.isfinite(float(self.alpha)):
            raise GradiendConfigError(f"`alpha` must be a finite number, got {self.alpha!r}.")
        if self.dial and (self.h is None or self.alpha is None):
            raise GradiendConfigError("A dial adapter needs default values for `h` and `alpha`.")

    # -- (de)serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, folder: str | Path) -> Path:
        """Write `adapter_config.json` into `folder` (atomically: the old file or the new one, never half)."""
        from ..atomic_io import atomic_write_text

        return atomic_write_text(Path(folder) / ADAPTER_CONFIG_NAME, self.to_json_string())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeltaAdapterConfig:
        """Build a config from a dict, refusing unknown keys with a "did you mean" hint."""
        return config_from_dict(cls, data)

    @classmethod
    def from_folder(cls, folder: str | Path) -> DeltaAdapterConfig:
        """Read `adapter_config.json`; a PEFT adapter or another file gets an error saying what it is."""
        path = Path(folder) / ADAPTER_CONFIG_NAME
        if not path.is_file():
            raise AdapterLoadError(
                f"`{folder}` holds no delta adapter: `{ADAPTER_CONFIG_NAME}` is missing. Point to a folder written by "
                f"`DeltaAdapter.save_pretrained` (or `gradiend export`)."
            )
        from ..untrusted_files import read_config_json

        data = read_config_json(path, what="delta adapter", error_class=AdapterLoadError)
        if data.get("adapter_type") != ADAPTER_TYPE:
            kind = data.get("peft_type")
            other = data.get("adapter_type")
            advice = (f"it is a PEFT `{kind}` adapter: load it with `peft.PeftModel.from_pretrained(base, path)`"
                      if kind and not other else "it is not a gradiend_hf delta adapter")
            if isinstance(other, str) and other.startswith("gradiend_"):
                advice = f"it is a `{other}` adapter: load it with `gradiend_hf.load_adapter`"
            raise AdapterLoadError(f"`{folder}` cannot be loaded as a delta adapter: {advice}.")
        try:
            return cls.from_dict(data)
        except GradiendConfigError as error:
            raise AdapterLoadError(f"`{path}` is not a valid delta adapter config: {error}") from error

    @property
    def num_entries(self) -> int:
        """Number of base-weight entries the adapter changes."""
        return sum(math.prod(shape) for shape in self.param_shapes)

    def expected_tensors(self) -> dict[str, list[int]]:
        """Tensor key -> shape in `adapter_model.safetensors`."""
        if not self.dial:
            return dict(zip(self.param_names, self.param_shapes))
        out = {}
        for name, shape in zip(self.param_names, self.param_shapes):
            out[DIRECTION_PREFIX + name] = [self.latent_size, *shape]
            out[OFFSET_PREFIX + name] = list(shape)
        return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_TYPE",
    "ADAPTER_WEIGHTS_NAME",
    "DIRECTION_PREFIX",
    "OFFSET_PREFIX",
    "PEFT_TYPE_REFUSAL",
    "DeltaAdapterConfig",
    "config_from_dict",
]
