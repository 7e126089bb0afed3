"""gradiend-hf: GRADIEND feature neurons as Hugging Face models.

Importing the package registers `GradiendConfig` / `GradiendModel` with `AutoConfig` / `AutoModel`, so that
`AutoModel.from_pretrained(path_or_repo)` returns a `GradiendModel` without `trust_remote_code`.
"""

__version__ = "0.1.0"

from transformers import AutoConfig, AutoModel

from . import adapters, benchmarks, debiasers, evaluation, features
from .adapters import (
    DeltaAdapter,
    DeltaAdapterConfig,
    ExportReport,
    ParameterPatch,
    RepresentationAdapter,
    SelfDebiasAdapter,
    load_adapter,
    merge_adapters,
)
from .compare import CompareArguments, compare
from .configuration_gradiend import GradiendConfig
from .errors import (
    AdapterCompatibilityError,
    AdapterExportError,
    AdapterLoadError,
    AdapterStateError,
    BenchmarkError,
    EmbeddedModelError,
    FeatureDataError,
    GradiendConfigError,
    GradiendError,
    GradiendLoadError,
    OutputBusyError,
    OutputExistsError,
    ParameterSelectionError,
    SearchError,
    TargetTokenizationError,
    TrainingError,
)
from .evaluation import (
    DecoderSearchResult,
    EncoderReport,
    encoder_correlation,
    evaluate_encoder,
    evaluate_point,
    search_decoder,
)
from .gradients import GradientEngine, GradientPair, select_parameters
from .memory import MemoryEstimate, devices_needed, training_memory
from .modeling_gradiend import GradiendModel, GradiendOutput, GradiendPreTrainedModel
from .training import GradiendTrainer, TrainingArguments, TrainingResult, train_gradiend
from .zoo import EMBEDDED_MODELS, load_base_model

AutoConfig.register(GradiendConfig.model_type, GradiendConfig, exist_ok=True)
AutoModel.register(GradiendConfig, GradiendModel, exist_ok=True)

__all__ = [
    "MemoryEstimate",
    "devices_needed",
    "training_memory",
    "EMBEDDED_MODELS",
    "AdapterCompatibilityError",
    "AdapterExportError",
    "AdapterLoadError",
    "AdapterStateError",
    "BenchmarkError",
    "CompareArguments",
    "DecoderSearchResult",
    "DeltaAdapter",
    "DeltaAdapterConfig",
    "EmbeddedModelError",
    "EncoderReport",
    "ExportReport",
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
    "OutputBusyError",
    "OutputExistsError",
    "ParameterPatch",
    "ParameterSelectionError",
    "RepresentationAdapter",
    "SearchError",
    "SelfDebiasAdapter",
    "TargetTokenizationError",
    "TrainingArguments",
    "TrainingError",
    "TrainingResult",
    "__version__",
    "adapters",
    "benchmarks",
    "compare",
    "debiasers",
    "encoder_correlation",
    "evaluate_encoder",
    "evaluate_point",
    "evaluation",
    "features",
    "load_adapter",
    "load_base_model",
    "merge_adapters",
    "search_decoder",
    "select_parameters",
    "train_gradiend",
]
