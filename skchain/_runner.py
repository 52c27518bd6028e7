"""The one path from rows to a torch module's output.

Every wrapper (``NeuralTransformer``, ``ModuleClassifier``, the output
ensembles, merged heads, the benchmark zoo) goes through this module:

- :func:`check_rows` validates X with scikit-learn's ``validate_data`` and
  converts it once to C-ordered float32;
- :func:`run_module` runs the module over it in batches, under ``no_grad`` and
  eval mode, holding the module's lock so concurrent threads see sequential
  results and leave the module as it was;
- :func:`forward_captured` is the one mechanism that captures named layers
  (their outputs or inputs) and stops the forward pass once they are seen;
  :class:`CutAt` wraps it as a module for cuts at a layer (merged heads,
  export);
- :func:`to_proba` is the one definition of logits -> probabilities.

skorch's ``predict_proba`` builds a ``Dataset`` and indexes it row by row; here
the module sees whole slices of one contiguous float32 array instead, which is
what makes ``transform`` run at the speed of the module itself.
"""

import math
import threading
import warnings
import weakref
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.utils.validation import validate_data
from torch import nn

__all__ = [
    "CutAt",
    "check_finite_output",
    "check_rows",
    "eval_mode",
    "forward_captured",
    "module_device",
    "module_lock",
    "resolve_device",
    "run_module",
    "to_proba",
]


# -- devices -------------------------------------------------------------------


def resolve_device(device):
    """Check a ``device`` parameter and turn ``"auto"`` into ``"cuda"`` or ``"cpu"``.

    ``None`` stays ``None`` (the module's own device). Anything torch cannot
    parse, or a CUDA device on a machine without one, is a ``ValueError`` at
    the public call instead of torch's error deep inside the first batch.
    """
    if device is None:
        return None
    if isinstance(device, str) and device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"device must be None, 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device; "
            f"got {type(device).__name__}."
        )
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"device={device!r} is not a device torch knows ({exc}); use None, "
            "'auto', 'cpu', 'cuda' or 'cuda:N'."
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} asks for a GPU, but torch sees no CUDA device on "
                "this machine; use device='auto' (CUDA when present, else CPU) or 'cpu'."
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: this machine has {torch.cuda.device_count()} "
                "CUDA device(s); use 'cuda' or an index below that."
            )
    elif parsed.type not in ("cpu", "mps", "xpu"):
        raise ValueError(
            f"device={device!r} is not supported; use None, 'auto', 'cpu' or 'cuda'."
        )
    return parsed.type if parsed.index is None else str(parsed)


def _submodules(module):
    """``list(module.modules())`` (pre-order, each module once) without the
    generator and name machinery: a 1-row call cannot afford microseconds."""
    found = [module]
    if module._modules:
        _visit(module, found, {id(module)})
    return found


def _visit(module, found, seen):
    for child in module._modules.values():
        if child is not None and id(child) not in seen:
            seen.add(id(child))
            found.append(child)
            if child._modules:
                _visit(child, found, seen)


def _device_of(submodules):
    # Same order as module.parameters(), then module.buffers().
    for attr in ("_parameters", "_buffers"):
        for m in submodules:
            for tensor in getattr(m, attr).values():
                if tensor is not None and not isinstance(
                    tensor, nn.parameter.UninitializedTensorMixin
                ):
                    return tensor.device
    return torch.device("cpu")


def module_device(module):
    """Device of the module's first parameter or buffer (CPU for none)."""
    return _device_of(_submodules(module))


# -- input ---------------------------------------------------------------------


def check_rows(estimator, X, *, reset, allow_nan=False):
    """Validate ``X`` for ``estimator`` and return it as C-ordered float32.

    scikit-learn's ``validate_data`` does the checking (2-D, at least one row,
    numeric, finite unless ``allow_nan``, ``n_features_in_`` and
    ``feature_names_in_``); any numeric dtype, memory order or container gives
    the same array, so the same result. Values beyond float32's range become
    infinity in the conversion and are reported as such, naming the fix.
    """
    if (
        not reset
        and type(X) is np.ndarray
        and X.dtype == np.float32
        and X.ndim == 2
        and X.flags.c_contiguous
        and X.shape[0] >= 1
        and X.shape[1] == getattr(estimator, "n_features_in_", -1)
        and not hasattr(estimator, "feature_names_in_")
        and (allow_nan or np.isfinite(X).all())
    ):
        # Already what validate_data would return (float32, C order, the
        # fitted width, no names to compare): its checks cost several times a
        # small net's forward pass, so a 1-row transform skips them.
        return X
    X = validate_data(
        estimator,
        X,
        reset=reset,
        dtype=np.float32,
        ensure_all_finite="allow-nan" if allow_nan else True,
        ensure_min_samples=1,
    )
    return np.ascontiguousarray(X)


def check_finite_output(out, who):
    """Warn when a model produced NaN or infinity, naming it and how many rows."""
    if out.size and not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).any(axis=tuple(range(1, out.ndim))).sum())
        warnings.warn(
            f"{who} produced NaN or infinity in {bad} of {out.shape[0]} rows: the "
            "net may have diverged in training, overflowed on large inputs, or be "
            "unable to handle these rows. Check its weights and scale the input.",
            RuntimeWarning,
            stacklevel=3,
        )
    return out


# -- locks and modes -----------------------------------------------------------

_LOCKS = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def module_lock(module):
    """The re-entrant lock that serialises runs of one module object.

    A run flips train flags to eval and adds hooks for its duration: two
    threads running one module at once would see each other's hooks and flags.
    The lock lives beside the module (a weak mapping), not on it, so the
    user's object is never changed and still pickles.
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


@contextmanager
def eval_mode(module):
    """Put ``module`` in eval mode and give every submodule its flag back after.

    The user's module is left exactly in the training state it came in.
    """
    restore = _to_eval(_submodules(module), module)
    try:
        yield module
    finally:
        _restore(restore)


def _to_eval(submodules, module):
    """Switch to eval mode; return what :func:`_restore` needs (``None``
    when every submodule already was in eval mode: nothing to flip)."""
    flags = [m.training for m in submodules]
    if not any(flags):
        return None
    module.eval()
    return submodules, flags


def _restore(restore):
    if restore is not None:
        for m, flag in zip(*restore, strict=True):
            m.training = flag


# -- capture -------------------------------------------------------------------


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
    valid = [name for name, _ in module.named_modules() if name]
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
        submodules = dict(self.module.named_modules())
        check_layers(self.module, self.names)
        try:
            for name in self.names:
                sub = submodules[name]
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
        Names as in ``model.named_modules()``.
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


# -- probabilities -------------------------------------------------------------


def to_proba(logits):
    """Probabilities from logits, in float64 so each row sums to one within 1e-12.

    A single column is a binary logit (sigmoid, two columns out); softmax over
    one column would be all ones.
    """
    logits = logits.to(torch.float64)
    if logits.ndim == 2 and logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=-1)


def normalize_proba(proba):
    """Rows of non-negative scores as float64 probabilities summing to one."""
    proba = np.asarray(proba, dtype=np.float64)
    total = proba.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return proba / total


# -- the run -------------------------------------------------------------------


def run_module(
    module,
    X,
    *,
    batch_size=1024,
    device=None,
    layers=None,
    layer_inputs=False,
    postprocess=None,
    dtype=np.float32,
):
    """Run ``module`` on the rows of ``X`` in batches, without gradients.

    Parameters
    ----------
    module : torch.nn.Module
        The network. It is put in eval mode for the call and its training flags
        are restored afterwards; its weights are never touched. The call holds
        :func:`module_lock`, so threads sharing a module get sequential results.
    X : ndarray of shape (n_samples, ...)
        Input rows, already float32 (see :func:`check_rows`).
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
        Applied to each batch's output tensor on the device (e.g. :func:`to_proba`).
    dtype : numpy dtype, default=np.float32
        dtype of the returned array.

    Returns
    -------
    out : ndarray of shape (n_samples, n_outputs)
        Allocated once after the first batch, so peak memory is the output plus
        one batch of activations.
    """
    n = X.shape[0]
    if n == 0:
        raise ValueError("Cannot run a module on 0 rows; pass at least one row.")
    with module_lock(module):
        submodules = _submodules(module)
        device = _device_of(submodules) if device is None else torch.device(device)
        restore = _to_eval(submodules, module)
        try:
            with torch.inference_mode():
                if not layers:
                    return _run_batches(module, X, batch_size, device, None, postprocess, dtype)
                with _Capture(module, layers, inputs=layer_inputs) as capture:
                    return _run_batches(
                        module, X, batch_size, device, capture, postprocess, dtype
                    )
        finally:
            _restore(restore)


# Input rows are copied this many bytes at a time (at least one batch): one
# copy call for many small batches, and memory bounded for large inputs.
_COPY_BYTES = 1 << 20
# Batch outputs are gathered in torch and written into the result this many
# bytes at a time: a list append per batch instead of a NumPy assignment.
_FLUSH_BYTES = 1 << 20


def _run_batches(module, X, batch_size, device, capture, postprocess, dtype):
    n = X.shape[0]
    on_cpu = device.type == "cpu"
    if n <= batch_size:
        chunk_rows = n
    else:
        row_bytes = max(1, X.itemsize * math.prod(X.shape[1:]))
        chunk_rows = batch_size * max(1, _COPY_BYTES // (batch_size * row_bytes))
    out = None
    pending = []
    pending_rows = done = 0
    flush_rows = batch_size
    for chunk_start in range(0, n, chunk_rows):
        # A copy on the CPU, not a view: a module with an in-place first op
        # (ReLU(inplace=True)) must not write into the caller's array, and
        # read-only input (pandas copy-on-write) stays quiet. Another device
        # gets a copy from .to() anyway.
        chunk = X[chunk_start : chunk_start + chunk_rows]
        chunk = chunk.copy() if on_cpu else np.ascontiguousarray(chunk)
        for start in range(0, chunk.shape[0], batch_size):
            batch = torch.from_numpy(chunk[start : start + batch_size])
            if not on_cpu:
                batch = batch.to(device)
            rows = batch.shape[0]
            if capture is not None:
                parts = [p.reshape(rows, -1) for p in capture(batch)]
                result = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            else:
                result = module(batch)
                if not isinstance(result, torch.Tensor):
                    result = _first_tensor(result, "<final output>")
            if postprocess is not None:
                result = postprocess(result)
            shape = result.shape
            if len(shape) != 2:
                result = result.reshape(shape[0], -1)
                shape = result.shape
            if shape[0] != rows:
                raise ValueError(
                    f"{type(module).__name__} returned {shape[0]} rows for a batch of "
                    f"{rows}; the module must return one output row per input row "
                    "(batch dimension first)."
                )
            if out is None:
                out = np.empty((n, shape[1]), dtype=dtype)
                flush_rows = max(batch_size, _FLUSH_BYTES // max(1, out.itemsize * shape[1]))
            pending.append(result)
            pending_rows += rows
            if pending_rows >= flush_rows:
                _flush(out, done, pending, pending_rows)
                done += pending_rows
                pending = []
                pending_rows = 0
    if pending:
        _flush(out, done, pending, pending_rows)
    return out


def _flush(out, start, pending, rows):
    """Write the outputs of the batches in ``pending`` into ``out[start:]``."""
    block = pending[0] if len(pending) == 1 else torch.cat(pending)
    if block.device.type != "cpu" or block.requires_grad:
        block = block.detach().cpu()
    out[start : start + rows] = block.numpy()
