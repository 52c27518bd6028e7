"""skchain: turn any neural net into a scikit-learn ``fit``/``transform`` step."""

from ._neural import NeuralTransformer
from ._onnx_model import OnnxModel
from .bench import compare
from .ensemble import ModuleClassifier, OutputEnsembleClassifier, OutputEnsembleRegressor
from .export import to_onnx, to_torch
from .heads import MergedHeadsClassifier, merge_heads
from .search import ChainRandomizedSearchCV, ChainSearchCV
from .image import ImageEmbedder
from .text import TextEmbedder

__version__ = "0.1.0"

__all__ = [
    "ChainRandomizedSearchCV",
    "ChainSearchCV",
    "ImageEmbedder",
    "MergedHeadsClassifier",
    "ModuleClassifier",
    "NeuralTransformer",
    "OnnxModel",
    "OutputEnsembleClassifier",
    "OutputEnsembleRegressor",
    "TextEmbedder",
    "compare",
    "merge_heads",
    "to_onnx",
    "to_torch",
    "__version__",
]
