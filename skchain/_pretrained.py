"""The module a net used as it is runs: the user's own object, shared.

A pretrained ``torch.nn.Module`` or a ``frozen=True`` skorch net is run as
it is and shared by every clone, like ``sklearn.frozen.FrozenEstimator``. The
user's module is never moved nor materialised: where running it as asked
would change it (another device, lazy layers), one private copy is made.
"""

import copy

import torch
from torch import nn

from ._inputs import module_refuses
from ._models import as_module, is_pretrained_model
from ._onnx_model import OnnxModel
from ._runner import first_output, module_device
from ._training import TRAINING_LOCK, seeded

__all__ = ["module_to_run"]


def module_to_run(net, device, X, draw_seed):
    """``(net_, module_, source)`` for ``net`` used as it is on ``device``
    (``None``: where it lives): ``source`` is the net's module (a Keras model,
    an ONNX model wrapped by :func:`skchain._models.as_module`), ``module_``
    what runs. ``X`` materialises lazy layers, whose initial weights are
    seeded by ``draw_seed()`` so every fit and clone gets the same ones."""
    if is_pretrained_model(net):
        net_, source = None, as_module(net)
    else:
        if not getattr(net, "initialized_", False):
            raise ValueError(
                "frozen=True uses the net as it is, but this skorch net is not "
                "initialized. Fit it first (net.fit(X, y)) or load its weights "
                "(net.initialize(); net.load_params(...)), or set frozen=False "
                "to train it here."
            )
        net_, source = net, net.module_
    module_ = source
    # An ONNX model runs in onnxruntime, wherever ``device`` is: no copy.
    elsewhere = (device is not None and not isinstance(source, OnnxModel)
                 and not _same_device(device, module_device(source)))
    lazy = _has_lazy(source)
    if elsewhere or lazy:
        # One private copy for this fit (documented in ``device``).
        module_ = copy.deepcopy(source)
        if device is not None:
            module_.to(device)
        if lazy:
            seed = draw_seed()
            with TRAINING_LOCK, seeded(0 if seed is None else seed):
                _materialize(module_, X)
    return net_, module_, source


def _same_device(requested, actual):
    requested = torch.device(requested)
    if requested.type != actual.type:
        return False
    return requested.index is None or actual.index is None or requested.index == actual.index


def _has_lazy(module):
    lazy = nn.parameter.UninitializedTensorMixin
    return any(isinstance(t, lazy) for t in module.parameters()) or any(
        isinstance(t, lazy) for t in module.buffers()
    )


def _materialize(module, X):
    """Run two rows so lazy layers take their shapes."""
    try:
        first_output(module, X[:2])
    except RuntimeError as exc:
        raise module_refuses(X, exc) from exc
