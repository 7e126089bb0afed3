"""Exceptions raised by gradiend_hf; each says what was expected, what was found and what to do."""


class GradiendError(Exception):
    """Base class of every error gradiend_hf raises on purpose."""


class GradiendConfigError(GradiendError, ValueError):
    """A `GradiendConfig` field has a wrong type or value, or fields disagree with each other."""


class GradiendLoadError(GradiendError, OSError):
    """A folder or repository does not hold a loadable GRADIEND model (missing, truncated or mismatched files)."""


class ParameterSelectionError(GradiendError, ValueError):
    """Parameter patterns match nothing, or a base model lacks a parameter a GRADIEND model names."""


class TargetTokenizationError(GradiendError, ValueError):
    """A target word is not exactly one token for the base model's tokenizer."""


class FeatureDataError(GradiendError, ValueError):
    """Feature examples or files are malformed (no slot, unknown class, missing column...)."""


class AdapterCompatibilityError(GradiendError, ValueError):
    """A delta adapter does not fit a base model (missing parameters, other shapes), or adapters cannot combine."""


class AdapterLoadError(GradiendError, OSError):
    """A folder or repository does not hold a loadable delta adapter (missing, truncated or mismatched files)."""


class AdapterExportError(GradiendError, ValueError):
    """A delta adapter cannot be exported in the requested format (unsupported module, bad rank, no base model)."""


class OutputExistsError(GradiendError, FileExistsError):
    """An output folder already holds files; nothing is written over them unless the caller says overwrite."""


class OutputBusyError(GradiendError, OSError):
    """Another process (or thread) is writing the same output folder; its lock file says which process."""


class AdapterStateError(GradiendError, RuntimeError):
    """Applied delta adapters cannot be taken off as recorded: a covered weight was changed in place while they were
    on (an optimiser step, `load_state_dict`), or writing the weights failed and could not be undone."""


class EmbeddedModelError(GradiendError, OSError):
    """An embedded offline model is not installed, or its converted cache is corrupt."""


class TrainingError(GradiendError, RuntimeError):
    """Training cannot start or resume (bad arguments, incompatible checkpoint, existing output)."""


class BenchmarkError(GradiendError, ValueError):
    """A benchmark cannot run as asked (unknown suite or bias type, empty texts, unsupported model, bad data)."""


class SearchError(GradiendError, ValueError):
    """A decoder search cannot run as asked (bad (h*, alpha) grid, unknown criterion, no usable texts)."""


__all__ = [
    "AdapterCompatibilityError",
    "AdapterExportError",
    "AdapterLoadError",
    "AdapterStateError",
    "BenchmarkError",
    "EmbeddedModelError",
    "FeatureDataError",
    "GradiendConfigError",
    "GradiendError",
    "GradiendLoadError",
    "OutputBusyError",
    "OutputExistsError",
    "ParameterSelectionError",
    "SearchError",
    "TargetTokenizationError",
    "TrainingError",
]
