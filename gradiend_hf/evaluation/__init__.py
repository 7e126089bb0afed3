"""How well a GRADIEND model works: encoder metrics and plots."""

from .plots import plot_training_curve

__all__ = ["plot_training_curve"]
