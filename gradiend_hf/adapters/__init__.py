"""Adapters: delta adapters (a weight update for named base parameters, toggled, merged, combined and exported to
PEFT), representation adapters (an affine map of the body's final hidden states) and SelfDebias adapters (a rescaled
output distribution).

Generic on purpose: a delta adapter is `{base parameter name: ΔW}` (or a decoder direction and offset, for a dial),
a representation adapter a matrix and a bias, each with its config; nothing here imports GRADIEND code or the
debiasers that fit them, so adapters load and apply without either.
"""

from .base_model import describe_modules, resolve_parameters
from .configuration import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_TYPE,
    ADAPTER_WEIGHTS_NAME,
    PEFT_TYPE_REFUSAL,
    DeltaAdapterConfig,
)
from .delta_adapter import DeltaAdapter, decoded_update
from .fingerprints import base_fingerprint, fingerprint
from .hooks import HookHandle
from .loading import Adapter, load_adapter
from .merging import MERGE_METHODS, merge_adapters
from .patching import (
    DeltaHandle,
    ParameterPatch,
    RoundingLoss,
    applied_entries,
    apply_delta,
    original_tensors,
    remove_deltas,
    resolve_changes,
)
from .peft_check import check_peft_folder, load_peft_export
from .peft_export import ExportReport, export_lora
from .representation_adapter import RepresentationAdapter
from .representation_configuration import REPRESENTATION_ADAPTER_TYPE, RepresentationAdapterConfig
from .self_debias_adapter import (
    SELF_DEBIAS_ADAPTER_TYPE,
    SelfDebiasAdapter,
    SelfDebiasConfig,
    self_debias_log_probs,
)
from .shira_export import export_shira

__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_TYPE",
    "ADAPTER_WEIGHTS_NAME",
    "MERGE_METHODS",
    "PEFT_TYPE_REFUSAL",
    "REPRESENTATION_ADAPTER_TYPE",
    "SELF_DEBIAS_ADAPTER_TYPE",
    "Adapter",
    "DeltaAdapter",
    "DeltaAdapterConfig",
    "DeltaHandle",
    "ExportReport",
    "HookHandle",
    "ParameterPatch",
    "RepresentationAdapter",
    "RepresentationAdapterConfig",
    "RoundingLoss",
    "SelfDebiasAdapter",
    "SelfDebiasConfig",
    "applied_entries",
    "apply_delta",
    "base_fingerprint",
    "check_peft_folder",
    "decoded_update",
    "describe_modules",
    "export_lora",
    "export_shira",
    "fingerprint",
    "load_adapter",
    "load_peft_export",
    "merge_adapters",
    "original_tensors",
    "remove_deltas",
    "resolve_changes",
    "resolve_parameters",
    "self_debias_log_probs",
]
