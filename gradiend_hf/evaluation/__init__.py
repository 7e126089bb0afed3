"""How well a GRADIEND model works: encoder metrics and plots."""

from .controls import neutral_examples, non_feature_slot_examples
from .encoder import (
    EncoderCorrelation,
    EncoderMetrics,
    EncoderReport,
    GroupPosition,
    GroupStats,
    encoder_correlation,
    encoder_metrics,
    evaluate_encoder,
    pearson,
)
from .plots import plot_h_distribution, plot_search_heatmap, plot_training_curve
from .probe import EncodedText, encode_texts
from .search import evaluate_point, search_decoder
from .search_result import LM_POLICIES, DecoderSearchResult, SearchPoint
from .transfer import TransferScorer, association, transfer_indices

__all__ = [
    "LM_POLICIES",
    "DecoderSearchResult",
    "EncodedText",
    "EncoderCorrelation",
    "EncoderMetrics",
    "EncoderReport",
    "GroupPosition",
    "GroupStats",
    "SearchPoint",
    "TransferScorer",
    "association",
    "encode_texts",
    "encoder_correlation",
    "encoder_metrics",
    "evaluate_encoder",
    "evaluate_point",
    "neutral_examples",
    "non_feature_slot_examples",
    "pearson",
    "plot_h_distribution",
    "plot_search_heatmap",
    "plot_training_curve",
    "search_decoder",
    "transfer_indices",
]
