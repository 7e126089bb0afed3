"""How well a GRADIEND model works: encoder metrics and plots."""

from .encoder import EncoderCorrelation, encoder_correlation, pearson
from .plots import plot_training_curve

__all__ = ["EncoderCorrelation", "encoder_correlation", "pearson", "plot_training_curve"]
