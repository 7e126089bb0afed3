"""Load PEFT exports the way users will, with PEFT itself, and check them before anything in them is read.

An export reports its error on logits only after PEFT has loaded the written folder: a wrong export (a tied LM head
left behind, a module PEFT does not target) can then never report 0. The loading happens on a *shared copy* of the
base model, new module objects around the same parameter tensors, so it costs no second copy of the weights; that
PEFT wrote none of those tensors is checked afterwards.

`load_peft_export` offers the same checked loading for exports someone else wrote (a folder or Hub repo).
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._utils import read_safetensors_header
from ..errors import AdapterExportError, AdapterLoadError
from .content_tokens import content_token
from .patching import apply_delta

PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
SUPPORTED_PEFT_TYPES = ("LORA", "SHIRA")
_ADAPTER_LEAVES = {
    "LORA": ("lora_A.weight", "lora_B.weight", "lora_B.bias", "lora_embedding_A", "lora_embedding_B"),
    "SHIRA": ("shira_weight", "shira_indices"),
}
DEFAULT_SAMPLE_TEXTS = (
    "The committee met on Tuesday to discuss the budget for the next year.",
    "After the rain stopped, the children went outside to play in the park.",
    "She said that he would arrive at the station before noon.",
    "Water boils at a lower temperature at high altitude.",
)


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose modules are new objects but whose parameters and buffers are the same tensors."""
    memo: dict[int, Any] = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


# -- checks before loading ------------------------------------------------------------------------------------------
def _targets(config: Mapping[str, Any]) -> tuple[Any, set[str]]:
    targets = config.get("target_modules")
    saved = set(config.get("modules_to_save") or [])
    return targets, saved


def _is_target(module: str, targets: Any) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets or [])


def tied_head_modules(base_model: nn.Module) -> set[str]:
    """Modules whose weight is the input embedding's tensor (the tied LM head), which PEFT's weight tying saves
    next to the embedding."""
    from .base_model import tied_aliases

    embedding = base_model.get_input_embeddings()
    names = [n for n, p in base_model.named_parameters(remove_duplicate=False) if p is embedding.weight]
    aliases = tied_aliases(base_model).get(names[0], []) if names else []
    return {alias.rpartition(".")[0] for alias in aliases} - {n.rpartition(".")[0] for n in names[:1]}


def check_peft_folder(folder: str | os.PathLike, *, base_model: nn.Module | None = None,
                      error_class: type[Exception] = AdapterLoadError) -> dict[str, Any]:
    """Check a PEFT LoRA / SHiRA folder before PEFT reads it; returns its config.

    Refused: no safetensors weights, pickles in the folder, links out of it, a config with remote code
    (`auto_map`) or of another PEFT type, a safetensors header that does not describe its file, and tensors that
    belong to no target module and no `modules_to_save` module (names pointing outside what the config selects),
    or, given `base_model`, to no module of it.

    Raises:
        error_class: naming the file and what is wrong.
    """
    from ..untrusted_files import check_folder, read_config_json

    folder = Path(folder)
    config_path, weights = folder / PEFT_CONFIG_NAME, folder / PEFT_WEIGHTS_NAME
    check_folder(folder, [PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME], what="PEFT export", error_class=error_class)
    if not config_path.is_file() or not weights.is_file():
        raise error_class(f"`{folder}` is not a PEFT export: it needs `{PEFT_CONFIG_NAME}` and `{PEFT_WEIGHTS_NAME}` "
                          f"(safetensors only; pickled `adapter_model.bin` files are never read).")
    config = read_config_json(config_path, what="PEFT export", error_class=error_class)
    parent = (config.get("auto_mapping") or {}).get("parent_library") if isinstance(config.get("auto_mapping"),
                                                                                   dict) else None
    if config.get("auto_mapping") is not None and not (isinstance(parent, str) and parent.startswith("transformers.")):
        raise error_class(f"`{config_path}` has an `auto_mapping` that imports {parent!r}; a PEFT export of a "
                          f"transformers model only names transformers classes, so it is refused.")
    kind = config.get("peft_type")
    if kind not in SUPPORTED_PEFT_TYPES:
        raise error_class(f"`{config_path}` is a PEFT `{kind}` adapter; gradiend_hf checks and loads "
                          f"{' and '.join(SUPPORTED_PEFT_TYPES)} exports only.")
    targets, saved = _targets(config)
    tied = tied_head_modules(base_model) if base_model is not None and config.get("ensure_weight_tying") else set()
    modules = dict(base_model.named_modules()) if base_model is not None else None
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as error:
            raise error_class(f"`{config_path}` has an invalid `target_modules` pattern ({error}).") from error
    for key in read_safetensors_header(weights, error_class):
        if key == "__metadata__":
            continue
        if not key.startswith(PEFT_PREFIX):
            raise error_class(f"`{weights}` holds tensor `{key}`, which does not start with `{PEFT_PREFIX}`; it is not "
                              f"a PEFT export of a whole model.")
        name = key[len(PEFT_PREFIX):]
        leaf = next((leaf for leaf in _ADAPTER_LEAVES[kind] if name.endswith("." + leaf)), None)
        module = name[: -len(leaf) - 1] if leaf is not None else name.rpartition(".")[0]
        if modules is not None and module not in modules:
            raise error_class(f"`{weights}` holds tensor `{key}` for a module `{module}` that the base model "
                              f"{type(base_model).__name__} does not have; the export was made for another model.")
        if leaf is not None and _is_target(module, targets):
            continue
        if leaf is None and any(module == m or module.endswith("." + m) for m in saved | tied):
            continue
        raise error_class(
            f"`{weights}` holds tensor `{key}`, which belongs to no target module and no `modules_to_save` module of "
            f"`{config_path}`; a PEFT loader would write it into the base model. The export is corrupt or hostile."
        )
    return config


# -- logits through PEFT ----------------------------------------------------------------------------------------------
@dataclass
class LogitCheck:
    """The PEFT-loaded export against the delta adapter applied exactly, on the same inputs."""

    relative_error: float
    """‖logits(PEFT) − logits(ours)‖ / ‖logits(ours) − logits(base)‖: the share of the update's effect lost."""
    max_abs_error: float
    tolerance: float
    """The largest ‖logits(PEFT) − logits(ours)‖ an exact export may show (float round-off of the unmerged LoRA
    forward): 1e-3 of the effect, or 16 machine epsilons (of the base's dtype) of the logits' norm."""
    lost: float
    inputs: str

    @property
    def exact(self) -> bool:
        return self.lost <= self.tolerance


def _inputs(base_model: nn.Module, tokenizer: Any, texts: Sequence[str] | None) -> tuple[list[dict], str]:
    device = next(base_model.parameters()).device
    if tokenizer is not None:
        texts = list(texts or DEFAULT_SAMPLE_TEXTS)
        return [dict(tokenizer(t, return_tensors="pt").to(device)) for t in texts], f"{len(texts)} sample texts"
    vocab = base_model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(vocab, (2, 12), generator=torch.Generator().manual_seed(0)).to(device)
    return [{"input_ids": ids}], "2 × 12 random token ids (no tokenizer given)"


def _logits(model: nn.Module, inputs: Sequence[dict]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(**batch).logits.float().cpu() for batch in inputs]


def _peft_model(base_model: nn.Module, folder: Path) -> nn.Module:
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's advice about tied layers and deprecations; the logits decide
        return PeftModel.from_pretrained(shared_copy(base_model), str(folder)).eval()


def check_export_logits(base_model: nn.Module, folder: str | os.PathLike, deltas: Mapping[str, torch.Tensor], *,
                        tokenizer: Any = None, texts: Sequence[str] | None = None) -> LogitCheck:
    """Load the export in `folder` with `PeftModel.from_pretrained` and compare its logits with `deltas` applied
    exactly to `base_model` (which is left as it was).

    Raises:
        AdapterExportError: PEFT cannot load the folder, or loading it changed a base weight.
    """
    folder = Path(folder)
    check_peft_folder(folder, base_model=base_model, error_class=AdapterExportError)
    inputs, described = _inputs(base_model, tokenizer, texts)
    params = list(base_model.parameters())
    before = [content_token(p) for p in params]
    try:
        peft_model = _peft_model(base_model, folder)
    except Exception as error:  # noqa: BLE001 - any failure of PEFT's loader means the export is unusable
        raise AdapterExportError(f"PEFT could not load the written export ({type(error).__name__}: {error}); "
                                 f"nothing was written.") from error
    if [content_token(p) for p in params] != before:
        raise AdapterExportError("Loading the export with PEFT wrote into the base model's weights; the export is "
                                 "not usable as written and nothing was written.")
    exported = _logits(peft_model, inputs)
    del peft_model
    base = _logits(base_model, inputs)
    handle = apply_delta(base_model, deltas, description="export check")
    try:
        exact = _logits(base_model, inputs)
    finally:
        handle.remove()
    effect = math.sqrt(sum(float((e - b).double().pow(2).sum()) for e, b in zip(exact, base)))
    lost = math.sqrt(sum(float((x - e).double().pow(2).sum()) for x, e in zip(exported, exact)))
    scale = math.sqrt(sum(float(e.double().pow(2).sum()) for e in exact))
    eps = torch.finfo(params[0].dtype if params[0].is_floating_point() else torch.float32).eps
    return LogitCheck(relative_error=lost / effect if effect > 0 else (0.0 if lost == 0 else math.inf),
                      max_abs_error=max(float((x - e).abs().max()) for x, e in zip(exported, exact)),
                      tolerance=max(1e-3 * effect, 16 * eps * scale), lost=lost, inputs=described)


def load_peft_export(base_model: nn.Module, path_or_repo: str | os.PathLike, *, revision: str | None = None,
                     cache_dir: str | None = None, token: bool | str | None = None,
                     local_files_only: bool = False, adapter_name: str = "default") -> nn.Module:
    """`PeftModel.from_pretrained(base_model, path_or_repo)`, after checking the folder (see `check_peft_folder`).

    From the Hub only `adapter_config.json` and `adapter_model.safetensors` are downloaded, and a repository that
    ships pickles is refused before that.

    Raises:
        AdapterLoadError: the folder or repository is refused or cannot be fetched.
    """
    from peft import PeftModel

    source = str(path_or_repo)
    if os.path.isdir(source):
        folder = Path(source)
    else:
        from ..hub import download_repo_files

        folder = download_repo_files(source, [PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME], error_class=AdapterLoadError,
                                     what="a PEFT export", revision=revision, cache_dir=cache_dir, token=token,
                                     local_files_only=local_files_only)
    check_peft_folder(folder, base_model=base_model)
    return PeftModel.from_pretrained(base_model, str(folder), adapter_name=adapter_name)


__all__ = [
    "DEFAULT_SAMPLE_TEXTS",
    "PEFT_CONFIG_NAME",
    "PEFT_PREFIX",
    "PEFT_WEIGHTS_NAME",
    "LogitCheck",
    "check_export_logits",
    "check_peft_folder",
    "load_peft_export",
    "shared_copy",
    "tied_head_modules",
]
