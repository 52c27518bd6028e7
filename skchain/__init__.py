"""skchain: turn any neural net into a scikit-learn ``fit``/``transform`` step."""

from ._neural import NeuralTransformer
from .heads import MergedHeadsClassifier, merge_heads
from .text import TextEmbedder

__version__ = "0.1.0"

__all__ = [
    "MergedHeadsClassifier",
    "NeuralTransformer",
    "TextEmbedder",
    "merge_heads",
    "__version__",
]
