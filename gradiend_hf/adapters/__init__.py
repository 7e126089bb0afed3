"""Delta adapters: a weight update for named base parameters, toggled, merged, combined and exported to PEFT.

Generic on purpose: an adapter is `{base parameter name: ΔW}` (or a decoder direction and offset, for a dial) plus
its config; nothing here imports GRADIEND code, so adapters load and apply without it.
"""

from .base_model import base_fingerprint, describe_modules, fingerprint, resolve_parameters
from .configuration import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_TYPE,
    ADAPTER_WEIGHTS_NAME,
    PEFT_TYPE_REFUSAL,
    DeltaAdapterConfig,
)
from .delta_adapter import DeltaAdapter, decoded_update
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
from .peft_export import ExportReport, export_lora, export_shira

__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_TYPE",
    "ADAPTER_WEIGHTS_NAME",
    "MERGE_METHODS",
    "PEFT_TYPE_REFUSAL",
    "DeltaAdapter",
    "DeltaAdapterConfig",
    "DeltaHandle",
    "ExportReport",
    "ParameterPatch",
    "RoundingLoss",
    "applied_entries",
    "apply_delta",
    "base_fingerprint",
    "check_peft_folder",
    "decoded_update",
    "describe_modules",
    "export_lora",
    "export_shira",
    "fingerprint",
    "load_peft_export",
    "merge_adapters",
    "original_tensors",
    "remove_deltas",
    "resolve_changes",
    "resolve_parameters",
]
