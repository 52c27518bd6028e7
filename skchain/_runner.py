"""Run a torch module over a 2-D float32 array in batches and capture outputs.

This is the one inference path of skchain: every wrapper (``NeuralTransformer``,
the output ensembles, merged heads) calls :func:`run_module`, so batching, device
handling, eval mode and hooks are written once.

skorch's ``predict_proba`` builds a ``Dataset`` and indexes it row by row; here
the module sees whole slices of one contiguous float32 array instead, which is
what makes ``transform`` run at the speed of the module itself.
"""

from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["resolve_device", "run_module", "eval_mode", "module_device"]


class _StopForward(Exception):
    """Raised from a hook once every requested layer has been captured.

    The rest of the forward pass is skipped: asking for ``"encoder.2"`` of a
    large net costs only the layers up to ``encoder.2``.
    """


def resolve_device(device):
    """Turn ``"auto"`` into ``"cuda"`` when a GPU is present, else ``"cpu"``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def module_device(module):
    """Device of the module's first parameter or buffer (CPU for none)."""
    for tensor in module.parameters():
        if not isinstance(tensor, torch.nn.parameter.UninitializedParameter):
            return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


@contextmanager
def eval_mode(module):
    """Put ``module`` in eval mode and give every submodule its flag back after.

    The user's module is left exactly in the training state it came in.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


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


class _Capture:
    """Forward hooks on named submodules; the first call of each is kept.

    ``inputs=True`` captures what goes *into* a layer (used for "embedding",
    the input of the last linear layer) with a forward pre-hook.
    """

    def __init__(self, module, names, inputs=False, stop_early=True):
        self.module = module
        self.names = list(names)
        self.inputs = inputs
        self.stop_early = stop_early
        self.values = {}
        self._handles = []

    def __enter__(self):
        submodules = dict(self.module.named_modules())
        for name in self.names:
            sub = submodules[name]
            if self.inputs:
                handle = sub.register_forward_pre_hook(self._pre_hook(name))
            else:
                handle = sub.register_forward_hook(self._hook(name))
            self._handles.append(handle)
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False

    def _store(self, name, value):
        if name not in self.values:
            self.values[name] = _first_tensor(value, name)
        if self.stop_early and len(self.values) == len(self.names):
            raise _StopForward

    def _hook(self, name):
        def hook(module, args, output):
            self._store(name, output)

        return hook

    def _pre_hook(self, name):
        def hook(module, args):
            self._store(name, args[0])

        return hook

    def reset(self):
        self.values = {}


def _forward(module, batch, capture):
    """One forward pass; returns the final output or the captured layers."""
    if capture is None:
        return module(batch)
    capture.reset()
    try:
        module(batch)
    except _StopForward:
        pass
    missing = [n for n in capture.names if n not in capture.values]
    if missing:
        raise ValueError(
            f"Layer(s) {missing} were not called during the forward pass, so they "
            "have no output to return; choose layers that the module's forward uses."
        )
    parts = [capture.values[n].reshape(batch.shape[0], -1) for n in capture.names]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def run_module(
    module,
    X,
    *,
    batch_size=1024,
    device=None,
    layers=None,
    layer_inputs=False,
    postprocess=None,
):
    """Run ``module`` on the rows of ``X`` in batches, without gradients.

    Parameters
    ----------
    module : torch.nn.Module
        The network. It is put in eval mode for the call and its training flags
        are restored afterwards; its weights are never touched.
    X : ndarray of shape (n_samples, ...)
        Input rows, already float32 (the caller converts once).
    batch_size : int, default=1024
        Rows per forward pass.
    device : str or torch.device, default=None
        Where the batches go; ``None`` means the module's own device.
    layers : list of str, default=None
        Names of submodules whose outputs are returned (flattened per row and
        concatenated) instead of the final output.
    layer_inputs : bool, default=False
        Capture the *inputs* of ``layers`` instead of their outputs.
    postprocess : callable, default=None
        Applied to each batch's output tensor on the device (e.g. softmax).

    Returns
    -------
    out : ndarray of shape (n_samples, n_outputs)
        float32, allocated once after the first batch, so peak memory is the
        output plus one batch of activations.
    """
    device = module_device(module) if device is None else torch.device(device)
    n = X.shape[0]
    out = None
    capture = None
    if layers:
        capture = _Capture(module, layers, inputs=layer_inputs)
    with eval_mode(module), torch.inference_mode():
        if capture is not None:
            capture.__enter__()
        try:
            for start in range(0, n, batch_size):
                # A copy, not a view: a module with an in-place first op
                # (ReLU(inplace=True)) must not write into the caller's array,
                # and read-only input (pandas copy-on-write) stays quiet.
                batch = torch.from_numpy(X[start : start + batch_size].copy()).to(device)
                result = _forward(module, batch, capture)
                result = _first_tensor(result, "<final output>")
                if postprocess is not None:
                    result = postprocess(result)
                result = result.reshape(result.shape[0], -1)
                if out is None:
                    out = np.empty((n, result.shape[1]), dtype=np.float32)
                out[start : start + result.shape[0]] = result.to("cpu", torch.float32).numpy()
        finally:
            if capture is not None:
                capture.__exit__(None, None, None)
    if out is None:
        raise ValueError("Cannot run a module on 0 rows.")
    return out
