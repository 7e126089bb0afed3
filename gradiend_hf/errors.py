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


class EmbeddedModelError(GradiendError, OSError):
    """An embedded offline model is not installed, or its converted cache is corrupt."""


class TrainingError(GradiendError, RuntimeError):
    """Training cannot start or resume (bad arguments, incompatible checkpoint, existing output)."""


__all__ = [
    "EmbeddedModelError",
    "FeatureDataError",
    "GradiendConfigError",
    "GradiendError",
    "GradiendLoadError",
    "ParameterSelectionError",
    "TargetTokenizationError",
    "TrainingError",
]
