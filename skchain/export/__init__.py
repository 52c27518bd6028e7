"""Serving a fitted chain: as one ONNX graph (:func:`to_onnx`) or one torch
module (:func:`to_torch`)."""

from ._onnx import to_onnx
from ._torch import to_torch

__all__ = ["to_onnx", "to_torch"]
