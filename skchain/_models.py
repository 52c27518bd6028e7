"""What a wrapper's model parameter may be, and the torch module it runs as.

Every wrapper that takes a model (``NeuralTransformer(net)``,
``ModuleClassifier(module)``, merged heads' specs) resolves it here, through
:func:`as_module`, and lists :data:`MODEL_CONSTRAINT` in its
``_parameter_constraints``:

- a ``torch.nn.Module`` -- a Keras 3 model on the torch backend is one -- is
  used as it is (never copied);
- an ONNX model, a path or an ``onnx.ModelProto``, becomes an
  :class:`~skchain.OnnxModel`. One per model: every fold and candidate of a
  search, and every wrapper given the same file or the same model, shares one
  session (a weak mapping keyed by the file's path, size and modification
  time and those of its external data files, or by the model's bytes), as
  a pretrained module is shared;
- a Keras model on another backend is refused, naming the fix.
"""

import hashlib
import os
import threading
import weakref

from torch import nn

from ._keras import check_built, check_keras_object, is_keras_object
from ._onnx_data import files_of_path
from ._onnx_model import OnnxModel, is_onnx_source
from ._sklearn_compat import HasMethods

__all__ = ["MODEL_CONSTRAINT", "as_module", "check_trainable", "is_pretrained_model"]

#: ``_parameter_constraints`` entries of a model parameter: a torch module, an
#: ONNX path or ``ModelProto`` (any protobuf message passes here and is checked
#: by :func:`as_module`), and Keras models of any backend (so that one on the
#: wrong backend gets :func:`as_module`'s message, not a list of types).
MODEL_CONSTRAINT = [
    nn.Module,
    str,
    os.PathLike,
    HasMethods(["SerializeToString", "ParseFromString"]),
    HasMethods(["get_weights", "predict_on_batch"]),
]

_SHARED = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def is_pretrained_model(model):
    """Whether ``model`` is a model used as it is (not a skorch net): a torch
    module, an ONNX source or a Keras object."""
    return isinstance(model, nn.Module) or is_onnx_source(model) or is_keras_object(model)


def _key(source):
    if isinstance(source, (str, os.PathLike)):
        path = os.path.realpath(os.fspath(source))
        try:
            stat = os.stat(path)
        except OSError:
            return None  # OnnxModel raises the message naming the path
        # The external weights files too: a rewritten one is another model.
        external = files_of_path(os.path.abspath(os.fspath(source)))
        return ("file", path, stat.st_size, stat.st_mtime_ns, external)
    if type(source).__name__ != "ModelProto":
        return None  # OnnxModel raises the message naming what it takes
    try:
        data = source.SerializeToString()
    except ValueError:
        return None  # over 2 GB: OnnxModel raises the message naming the fix
    return ("proto", hashlib.blake2b(data, digest_size=16).digest())


def as_module(model, who="net"):
    """The ``torch.nn.Module`` that runs ``model`` (see the module doc).

    ``who`` names the parameter in messages.
    """
    if isinstance(model, nn.Module):
        check_built(model, who)
        return model
    if is_onnx_source(model):
        key = _key(model)
        with _SHARED_LOCK:
            shared = None if key is None else _SHARED.get(key)
        if shared is None:
            shared = OnnxModel(model)
            if key is not None:
                with _SHARED_LOCK:
                    shared = _SHARED.setdefault(key, shared)
        return shared
    if is_keras_object(model):
        check_keras_object(model, who)
    raise TypeError(
        f"{who} must be a torch.nn.Module (a Keras 3 model on the torch backend is "
        "one), an ONNX file path or an onnx.ModelProto; got "
        f"{type(model).__name__}."
    )


def check_trainable(module, who):
    """Refuse to train a module that is (or holds) an ONNX model and nothing
    trainable besides: onnxruntime computes no gradients."""
    if isinstance(module, type):
        frozen = issubclass(module, OnnxModel)
    elif isinstance(module, nn.Module):
        frozen = any(isinstance(m, OnnxModel) for m in module.modules()) and not any(
            p.requires_grad for p in module.parameters()
        )
    else:
        frozen = False
    if frozen:
        raise ValueError(
            f"{who} would train an ONNX model, which is frozen: onnxruntime computes "
            "no gradients. Use it as it is: pass the file or the OnnxModel directly "
            "(NeuralTransformer('model.onnx'), ModuleClassifier('model.onnx', "
            "classes)), or train a torch head on its outputs."
        )
