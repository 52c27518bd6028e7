"""Keras 3 models on the torch backend, as skchain runs them.

A Keras 3 model built on the torch backend (``KERAS_BACKEND=torch``) *is* a
``torch.nn.Module``: calling it runs torch operations, its variables are torch
parameters (under ``_torch_params``, so the cache's fingerprint sees every
weight change: ``assign``, ``set_weights``, training), and each Keras layer is
a ``torch.nn.Module`` whose forward hooks fire when the model calls it. So the
runner runs it like any module. Two things differ, and live here:

- its layers are not torch submodules (``named_modules()`` lists none of
  them): :class:`KerasNaming` names them by their Keras names (``"conv"``,
  ``"dense_1"``; a layer of a nested model ``"inner/dense"``), as
  ``model.get_layer`` does;
- Keras decides inference or training behaviour (dropout, batch
  normalisation) from the ``training`` argument, not torch's ``train()``
  flag; a plain call, which is how skchain calls every module, is inference.

A Keras model built on another backend is no torch module:
:func:`check_keras_object` says how to switch.
"""

import os
import sys

from ._capture import LayerNaming

__all__ = ["KerasNaming", "check_keras_object", "is_keras_object"]


def _keras():
    # Never imported here: a model can only be a Keras one if keras is loaded.
    return sys.modules.get("keras")


def is_keras_object(obj):
    """Whether ``obj`` is a Keras object (Keras 3 or ``tf.keras``), on any backend."""
    return any(
        cls.__module__.split(".")[0] in ("keras", "tf_keras") for cls in type(obj).__mro__
    )


def check_keras_object(obj, who):
    """Raise the ``TypeError`` for a Keras object that is not a torch module."""
    keras = _keras()
    backend = None
    if keras is not None and hasattr(keras, "backend"):
        try:
            backend = keras.backend.backend()
        except Exception:  # pragma: no cover - very old Keras
            backend = None
    raise TypeError(
        f"{who} is a Keras {type(obj).__name__} on the {backend or 'non-torch'!r} "
        "backend; skchain runs Keras 3 models on the torch backend, where they are "
        "torch modules. Set the environment variable KERAS_BACKEND=torch before "
        "keras is first imported (os.environ['KERAS_BACKEND'] = 'torch' at the "
        "top of the script, or `export KERAS_BACKEND=torch`), then build or load "
        f"the model again (now: KERAS_BACKEND={os.environ.get('KERAS_BACKEND')!r})."
    )


def check_built(model, who):
    """A Keras model that has no weights yet would be built (changed) by its
    first call: refuse it, saying how to build it."""
    keras = _keras()
    if keras is not None and isinstance(model, keras.Model) and not model.built:
        raise ValueError(
            f"{who} is a Keras {type(model).__name__} that is not built (it has no "
            "weights yet), and running it would build it, changing your model. "
            "Build it first: start it with keras.Input(shape=...), or call "
            "model.build((None, *row_shape)), or load trained weights."
        )


class KerasNaming(LayerNaming):
    """Layers of a Keras model by their Keras names (see the module doc)."""

    @staticmethod
    def accepts(module):
        keras = _keras()
        return keras is not None and isinstance(module, keras.Model)

    def _layers(self, model, prefix=""):
        keras = _keras()
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue  # never called: nothing to capture
            name = prefix + layer.name
            yield name, layer
            if isinstance(layer, keras.Model):
                yield from self._layers(layer, name + "/")

    def names(self, module):
        return [name for name, _ in self._layers(module)]

    def get(self, module, name):
        return dict(self._layers(module))[name]

    def last_linear(self, module):
        dense = _keras().layers.Dense
        names = [n for n, layer in self._layers(module) if isinstance(layer, dense)]
        return names[-1] if names else None
