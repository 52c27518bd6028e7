"""Reading named layers: the one mechanism that captures what a module computes
at its submodules.

:func:`forward_captured` runs a module and returns the outputs (or inputs) of
the requested layers, stopping the forward pass once all are seen;
:class:`CutAt` wraps it as a module, for cuts at a layer (merged heads,
export). ``run_module(..., layers=...)`` uses the same hooks per batch.

Layers are found by name through a :class:`LayerNaming`: torch's
``named_modules()`` by default; a family of models whose layers are not torch
submodules says how its own are named (a Keras 3 model's layers by their Keras
names, :mod:`skchain._keras`; an ONNX graph's values by their ONNX names,
:class:`skchain.OnnxModel`). Every wrapper reads layers through
:func:`layer_names` and :func:`get_layer`, so a new family is one class in
:func:`namings`.
"""

import functools
import threading

import torch
from torch import nn

__all__ = [
    "CutAt",
    "LayerNaming",
    "check_layers",
    "forward_captured",
    "get_layer",
    "last_linear",
    "layer_names",
    "layer_naming",
    "namings",
]


class LayerNaming:
    """How the named layers of a torch module are listed and found: by
    ``named_modules()``. Subclasses, for models that name their layers
    otherwise, override :meth:`accepts` and the methods that differ.

    A layer is a ``torch.nn.Module`` whose forward hooks see the layer's input
    and output when the model runs; it need not be a registered submodule.
    """

    @staticmethod
    def accepts(module):
        """Whether this naming describes ``module``."""
        return True

    def names(self, module):
        """Every layer name, in the model's order."""
        return [name for name, _ in module.named_modules() if name]

    def get(self, module, name):
        """The layer ``name`` (one of :meth:`names`)."""
        return module.get_submodule(name)

    def last_linear(self, module):
        """Name of the last fully connected layer (``output="embedding"``
        reads its input), or ``None`` if there is none."""
        linears = [n for n, m in module.named_modules() if isinstance(m, nn.Linear) and n]
        return linears[-1] if linears else None


@functools.cache
def namings():
    """The namings tried, in order, before torch's own (see :func:`layer_naming`)."""
    # Imported here: those modules import this one for LayerNaming.
    from ._keras import KerasNaming
    from ._onnx_model import OnnxNaming

    return (OnnxNaming(), KerasNaming())


def layer_naming(module):
    """The :class:`LayerNaming` that describes ``module``."""
    for naming in namings():
        if naming.accepts(module):
            return naming
    return _TORCH


_TORCH = LayerNaming()


def layer_names(module):
    """Every layer name of ``module`` (see :class:`LayerNaming`)."""
    return layer_naming(module).names(module)


def get_layer(module, name):
    """The layer ``name`` of ``module``; a ``ValueError`` naming the valid ones."""
    check_layers(module, [name])
    return layer_naming(module).get(module, name)


def last_linear(module):
    """Name of ``module``'s last fully connected layer, or ``None``."""
    return layer_naming(module).last_linear(module)

class _StopForward(Exception):
    """Raised from a hook once every requested layer has been captured.

    The rest of the forward pass is skipped: asking for ``"encoder.2"`` of a
    large net costs only the layers up to ``encoder.2``.
    """


def _first_tensor(value, name):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        # Recurrent layers return (output, state); the output is what people mean.
        return value[0]
    raise TypeError(
        f"Layer {name!r} returned {type(value).__name__}, not a tensor; select a "
        "submodule whose output is a tensor (or a tuple starting with one)."
    )


def check_layers(module, names):
    """Raise a ``ValueError`` listing the valid names if one of ``names`` is unknown."""
    valid = layer_names(module)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(
            f"No submodule named {unknown} in {type(module).__name__}; valid layer "
            f"names: {valid}."
        )


def forward_captured(module, x, names, *, inputs=False, stop_early=True):
    """Run ``module(x)`` and return the tensors seen at the layers ``names``.

    The one capture mechanism of skchain: layer outputs, embeddings (the input
    of the last linear layer, ``inputs=True``) and cuts at a layer all use it.
    Hooks exist only for the call, record only calls from the calling thread,
    keep the first call of each layer, and (``stop_early``) end the forward
    pass once every layer is seen.

    Returns
    -------
    list of torch.Tensor, in the order of ``names``.
    """
    with _Capture(module, names, inputs=inputs, stop_early=stop_early) as capture:
        return capture(x)


class _Capture:
    """Hooks on the layers ``names`` of ``module`` for the ``with`` block;
    each call runs the module on a batch and returns what the layers saw.

    :func:`run_module` registers them once for all its batches instead of
    once per batch.
    """

    def __init__(self, module, names, *, inputs=False, stop_early=True):
        self.module = module
        self.names = list(names)
        self.inputs = inputs
        self.stop_early = stop_early
        self.values = {}
        self.owner = threading.get_ident()
        self.handles = []

    def _store(self, name, value):
        if threading.get_ident() != self.owner or name in self.values:
            return
        self.values[name] = _first_tensor(value, name)
        if self.stop_early and len(self.values) == len(self.names):
            raise _StopForward

    def _output_hook(self, name):
        return lambda mod, args, output: self._store(name, output)

    def _input_hook(self, name):
        def hook(mod, args):
            if not args:
                raise TypeError(
                    f"Layer {name!r} is called with keyword arguments only, so its "
                    "input cannot be captured; choose another layer."
                )
            self._store(name, args[0])

        return hook

    def __enter__(self):
        check_layers(self.module, self.names)
        naming = layer_naming(self.module)
        try:
            for name in self.names:
                sub = naming.get(self.module, name)
                if self.inputs:
                    self.handles.append(sub.register_forward_pre_hook(self._input_hook(name)))
                else:
                    self.handles.append(sub.register_forward_hook(self._output_hook(name)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __call__(self, x):
        self.values = {}
        try:
            self.module(x)
        except _StopForward:
            pass
        values = self.values
        missing = [n for n in self.names if n not in values]
        if missing:
            raise ValueError(
                f"Layer(s) {missing} were not called during the forward pass of "
                f"{type(self.module).__name__}, so they have no output to return; "
                "choose layers that the module's forward uses."
            )
        return [values[n] for n in self.names]


class CutAt(nn.Module):
    """A model run up to some of its layers, as a module of its own.

    ``CutAt(model, ["fc"], inputs=True)`` returns what ``model.fc`` receives;
    with ``inputs=False`` what the layers return. Several layers are flattened
    per row and concatenated. The model is neither copied nor changed (it is
    registered as a submodule, shared): this is :func:`forward_captured` as a
    module, so a cut can be merged, run by :func:`run_module` or exported.

    Parameters
    ----------
    model : torch.nn.Module
    layers : list of str
        Layer names (:func:`layer_names`: as in ``model.named_modules()`` for
        torch modules).
    inputs : bool, default=False
        Capture what goes into the layers instead of what comes out.
    stop_early : bool, default=True
        Skip the layers after the last captured one. Exporters that trace the
        graph need ``False``.
    """

    def __init__(self, model, layers, *, inputs=False, stop_early=True):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        layers = [layers] if isinstance(layers, str) else list(layers)
        if not layers or not all(isinstance(n, str) for n in layers):
            raise TypeError(f"layers must be a non-empty list of str; got {layers!r:.80}.")
        check_layers(model, layers)
        self.model = model
        self.layers = layers
        self.inputs = inputs
        self.stop_early = stop_early

    def forward(self, x):
        parts = forward_captured(
            self.model, x, self.layers, inputs=self.inputs, stop_early=self.stop_early
        )
        if len(parts) == 1 and parts[0].ndim == 2:
            return parts[0]
        parts = [p.reshape(p.shape[0], -1) for p in parts]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def extra_repr(self):
        return f"layers={self.layers!r}, inputs={self.inputs}"

