"""gradiend-hf: GRADIEND feature neurons as Hugging Face models.

Importing the package registers `GradiendConfig` / `GradiendModel` with `AutoConfig` / `AutoModel`, so that
`AutoModel.from_pretrained(path_or_repo)` returns a `GradiendModel` without `trust_remote_code`.
"""

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel

from . import evaluation, features
from .configuration_gradiend import GradiendConfig
from .errors import (
    EmbeddedModelError,
    FeatureDataError,
    GradiendConfigError,
    GradiendError,
    GradiendLoadError,
    ParameterSelectionError,
    TargetTokenizationError,
    TrainingError,
)
from .evaluation import encoder_correlation
from .gradients import GradientEngine, GradientPair, select_parameters
from .modeling_gradiend import GradiendModel, GradiendOutput, GradiendPreTrainedModel
from .training import GradiendTrainer, TrainingArguments, TrainingResult, train_gradiend
from .zoo import EMBEDDED_MODELS, load_base_model

AutoConfig.register(GradiendConfig.model_type, GradiendConfig, exist_ok=True)
AutoModel.register(GradiendConfig, GradiendModel, exist_ok=True)

__all__ = [
    "EMBEDDED_MODELS",
    "EmbeddedModelError",
    "FeatureDataError",
    "GradiendConfig",
    "GradiendConfigError",
    "GradiendError",
    "GradiendLoadError",
    "GradiendModel",
    "GradiendOutput",
    "GradiendPreTrainedModel",
    "GradiendTrainer",
    "GradientEngine",
    "GradientPair",
    "ParameterSelectionError",
    "TargetTokenizationError",
    "TrainingArguments",
    "TrainingError",
    "TrainingResult",
    "__version__",
    "encoder_correlation",
    "evaluation",
    "features",
    "load_base_model",
    "select_parameters",
    "train_gradiend",
]
