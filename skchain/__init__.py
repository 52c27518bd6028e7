"""skchain: turn any neural net into a scikit-learn ``fit``/``transform`` step."""

from ._neural import NeuralTransformer
from .text import TextEmbedder

__version__ = "0.1.0"

__all__ = [
    "NeuralTransformer",
    "TextEmbedder",
    "__version__",
]
