"""The one path from checked rows to a torch module's output.

Every wrapper (``NeuralTransformer``, ``ModuleClassifier``, the output
ensembles, merged heads, the benchmark zoo) goes through this module once its
input is checked (:mod:`skchain._inputs`):

- :func:`run_module` runs the module over the rows in batches, under
  ``no_grad`` and eval mode, holding the module's lock so concurrent threads
  see sequential results and leave the module as it was; named layers are read
  with :mod:`skchain._capture`'s hooks;
- :func:`check_finite_output` reports a model that produced NaN or infinity;
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
from functools import partial

import numpy as np
import torch
from torch import nn

from ._capture import _Capture, _first_tensor
from ._inputs import all_finite, check_finite_input

__all__ = [
    "check_finite_output",
    "eval_mode",
    "first_output",
    "module_device",
    "ModuleRun",
    "module_lock",
    "normalize_proba",
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
    for m in submodules:
        for tensor in m._parameters.values():
            if tensor is not None and not isinstance(tensor, _LAZY):
                return tensor.device
    for m in submodules:
        for tensor in m._buffers.values():
            if tensor is not None and not isinstance(tensor, _LAZY):
                return tensor.device
    return _CPU


_LAZY = nn.parameter.UninitializedTensorMixin
_CPU = torch.device("cpu")


def module_device(module):
    """Device of the module's first parameter or buffer (CPU for none)."""
    return _device_of(_submodules(module))


def check_finite_output(out, who):
    """Warn when a model produced NaN or infinity, naming it and how many rows."""
    if out.size and not all_finite(out):
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


class _ModuleState:
    """What skchain keeps beside a module object (never on it): its lock, and
    the captures (layers, inputs) for which a run saw it write into its input
    or leave it unchanged."""

    __slots__ = ("lock", "writes_input", "reads_only")

    def __init__(self):
        self.lock = threading.RLock()
        self.writes_input = set()
        self.reads_only = set()


def _module_state(module):
    state = _LOCKS.get(module)
    if state is None:
        with _LOCKS_GUARD:
            state = _LOCKS.get(module)
            if state is None:
                state = _LOCKS[module] = _ModuleState()
    return state


def module_lock(module):
    """The re-entrant lock that serialises runs of one module object.

    A run flips train flags to eval and adds hooks for its duration: two
    threads running one module at once would see each other's hooks and flags.
    The lock lives beside the module (a weak mapping), not on it, so the
    user's object is never changed and still pickles.
    """
    return _module_state(module).lock


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


def first_output(module, X):
    """``module``'s output (its first tensor) for a few rows, with gradients off
    but not in inference mode: lazy layers materialised here can still train."""
    with torch.no_grad(), eval_mode(module):
        out = module(torch.from_numpy(np.ascontiguousarray(X)).to(module_device(module)))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out


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
    check_input=None,
):
    """Run ``module`` on the rows of ``X`` in batches, without gradients.

    Parameters
    ----------
    module : torch.nn.Module
        The network. It is put in eval mode for the call and its training flags
        are restored afterwards; its weights are never touched. The call holds
        :func:`module_lock`, so threads sharing a module get sequential results.
    X : ndarray of shape (n_samples, ...)
        Input rows, already float32 (see :func:`check_rows`). Never written
        to, even by a module that changes its input in place (see below).
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
    check_input : estimator, default=None
        If given, each chunk of rows is checked for NaN and infinity just
        before it runs, raising scikit-learn's ``ValueError`` naming this
        estimator (see :func:`check_rows_deferred`).

    Returns
    -------
    out : ndarray of shape (n_samples, n_outputs)
        Allocated once after the first batch, so peak memory is the output plus
        one batch of activations.

    Notes
    -----
    On the CPU the module reads ``X``'s memory directly where that is safe.
    The first run of a module (per selection of layers) gives it a copy of
    the first batch, and torch's version counter of that copy tells whether
    it writes into its input (``ReLU(inplace=True)`` first, ``x.div_(255)`` in
    ``forward``). A module seen doing so gets copies of every batch from then
    on; the others read ``X`` in place, which is what brings small, fast nets
    to the speed of a raw loop. Every batch read in place is checked after it
    ran: a module that writes into its input only for some rows, or whose
    forward was changed to do so, is caught after the batch it changed; the
    call raises a ``ValueError`` saying which rows, and later calls copy.
    """
    return ModuleRun(
        module, batch_size=batch_size, device=device, layers=layers,
        layer_inputs=layer_inputs, postprocess=postprocess, dtype=dtype,
        check_input=check_input,
    ).run(X)


class ModuleRun:
    """One run of a module over checked rows: the model call of every wrapper.

    :func:`run_module` is ``ModuleRun(module, **params).run(X)``. The steps of
    a run are small methods, overridden by a model that runs differently (as
    skorch's ``get_iterator`` and ``infer``): :meth:`batches` (where the input
    tensors come from and which device they go to), :meth:`forward_pass` (what
    runs on each batch: the module, or the module with named layers captured
    and post-processed). :meth:`run` holds the module's lock and eval mode
    around them and gathers the outputs. Parameters as :func:`run_module`.
    """

    def __init__(self, module, *, batch_size=1024, device=None, layers=None,
                 layer_inputs=False, postprocess=None, dtype=np.float32, check_input=None):
        self.module = module
        self.batch_size = batch_size
        self.device = device
        self.layers = layers
        self.layer_inputs = layer_inputs
        self.postprocess = postprocess
        self.dtype = dtype
        self.check_input = check_input

    def run(self, X):
        """The outputs for the rows of ``X``, as :func:`run_module` returns them."""
        n = X.shape[0]
        if n == 0:
            raise ValueError("Cannot run a module on 0 rows; pass at least one row.")
        module, layers = self.module, self.layers
        state = _module_state(module)
        with state.lock:
            submodules = _submodules(module)
            device = _device_of(submodules) if self.device is None else torch.device(self.device)
            restore = _to_eval(submodules, module)
            try:
                key = (tuple(layers) if layers else None, bool(self.layer_inputs))
                check = None if self.check_input is None else partial(
                    check_finite_input, self.check_input
                )
                batches = self.batches(X, device, state, key, check)
                with torch.inference_mode():
                    if not layers:
                        return _gather(module, self.forward_pass(None), batches, n, self.dtype)
                    with _Capture(module, layers, inputs=self.layer_inputs) as capture:
                        forward = self.forward_pass(capture)
                        return _gather(module, forward, batches, n, self.dtype)
            finally:
                _restore(restore)

    def batches(self, X, device, state, key, check):
        """The input tensors of the run's forward passes, one per batch, on
        ``device`` (see :func:`_batches`; ``state``/``key``: what is known of
        the module's in-place writes, ``check``: the chunks' NaN check)."""
        return _batches(self.module, X, self.batch_size, device, state, key, check)

    def forward_pass(self, capture):
        """What runs on each batch: the module itself, or the module with the
        ``capture``'d layers read and the output post-processed."""
        if capture is None and self.postprocess is None:
            return self.module
        return partial(_captured, self.module, capture=capture, postprocess=self.postprocess)


# Input rows are checked and (where they must be) copied this many bytes at a
# time (at least one batch): one call for many small batches, memory bounded
# for large inputs, and each chunk still in the CPU's cache when it runs.
_COPY_BYTES = 1 << 20
# Batch outputs are gathered in torch and written into the result this many
# bytes at a time: a list append per batch instead of a NumPy assignment.
_FLUSH_BYTES = 1 << 20


def _chunks(X, start, batch_size):
    """``X[start:]`` in slices of whole batches of about ``_COPY_BYTES``."""
    row_bytes = max(1, X.itemsize * math.prod(X.shape[1:]))
    chunk_rows = batch_size * max(1, _COPY_BYTES // (batch_size * row_bytes))
    for chunk_start in range(start, X.shape[0], chunk_rows):
        yield chunk_start, X[chunk_start : chunk_start + chunk_rows]


def _batches(module, X, batch_size, device, state, key, check):
    """The input tensors of a run's forward passes, one per batch.

    Each is a tensor of its own over NumPy memory, not a view of one big
    tensor: torch runs a layer on a view measurably slower (5-8% on a small
    MLP). Tensors over ``X`` are made outside inference mode, so that each
    carries a version counter that in-place writes bump. ``check`` (or
    ``None``) is called on each chunk of rows before any of it runs.
    """
    if device.type != "cpu":
        return _copies(X, batch_size, device, check)  # .to(device) copies anyway
    if not X.flags.writeable or key in state.writes_input:
        # Read-only memory (pandas copy-on-write) cannot back a tensor without
        # torch's warning; a module known to write into its input never sees X.
        return _copies(X, batch_size, None, check)
    if key in state.reads_only:
        if X.shape[0] <= batch_size:
            # One batch: its tensor made right here, outside inference mode.
            if check is not None:
                check(X)
            return _one(module, torch.from_numpy(X), state, key)
        return _views(module, X, 0, batch_size, state, key, check)
    # Copied before it is checked: the check then reads rows already in cache.
    first = torch.from_numpy(X[:batch_size].copy())
    if check is not None:
        check(first.numpy())
    return _learned(module, X, first, batch_size, state, key, check)


def _split(chunk, batch_size):
    return [
        torch.from_numpy(chunk[start : start + batch_size])
        for start in range(0, chunk.shape[0], batch_size)
    ]


def _copies(X, batch_size, device, check, start=0):
    for _, chunk in _chunks(X, start, batch_size):
        if check is not None:
            check(chunk)
        if device is None:
            yield from _split(chunk.copy(), batch_size)
        else:
            # One transfer per chunk, which .to() copies; split on the device.
            chunk = torch.from_numpy(np.ascontiguousarray(chunk)).to(device)
            yield from chunk.split(batch_size)


def _learned(module, X, first, batch_size, state, key, check):
    """A module's first run: the first batch as a copy; the rest read in
    place if the module left that copy unchanged, else as copies."""
    yield first
    if first._version:
        state.writes_input.add(key)
        yield from _copies(X, batch_size, None, check, start=batch_size)
        return
    state.reads_only.add(key)
    yield from _views(module, X, batch_size, batch_size, state, key, check)


def _one(module, batch, state, key):
    yield batch
    if batch._version:
        _wrote(module, 0, batch.shape[0], state, key)


def _wrote(module, first, rows, state, key):
    state.reads_only.discard(key)
    state.writes_input.add(key)
    raise ValueError(
        f"{type(module).__name__} wrote into its input in place for rows {first} to "
        f"{first + rows - 1} of X, which it was given without a copy because it had "
        "left its input unchanged before (its forward changed since, or writes only "
        "for some rows); those rows of X are now changed. From now on this module "
        "gets copies: pass the original X again, or make the module's forward leave "
        "its input alone (no inplace=True, no x.op_())."
    )


def _views(module, X, start, batch_size, state, key, check):
    """Batches of ``X[start:]`` read in place, each checked for in-place
    writes after it ran."""
    for chunk_start, chunk in _chunks(X, start, batch_size):
        if check is not None:
            check(chunk)
        with torch.inference_mode(False):  # version counters: see _batches
            batches = _split(chunk, batch_size)
        for i, batch in enumerate(batches):
            yield batch
            if batch._version:
                _wrote(module, chunk_start + i * batch_size, batch.shape[0], state, key)


def _gather(module, forward, batches, n, dtype):
    """Run ``forward`` on each batch and gather the outputs into one array
    (``module`` names the model in errors)."""
    out = None
    pending = []
    pending_rows = done = 0
    flush_rows = None
    for batch in batches:
        result = forward(batch)
        rows = batch.shape[0]
        # One test for the usual case (a 2-D tensor, one row per input row).
        if not (isinstance(result, torch.Tensor) and result.ndim == 2
                and result.shape[0] == rows):
            result = _one_row_each(module, result, rows)
        if rows == n:
            # The only batch: its output is the result. The loop goes on, so
            # that the batches' generator records what it learned.
            pending.append(result)
            continue
        pending.append(result)
        pending_rows += rows
        if flush_rows is None:
            width = result.shape[1]
            flush_rows = max(rows, _FLUSH_BYTES // max(1, np.dtype(dtype).itemsize * width))
        if pending_rows >= flush_rows and done + pending_rows < n:
            if out is None:
                out = np.empty((n, result.shape[1]), dtype=dtype)
            _flush(out, done, pending, pending_rows)
            done += pending_rows
            pending = []
            pending_rows = 0
    if out is None:
        # Every output fits one flush: torch.cat makes new memory, returned as it is.
        return _as_array(pending[0] if len(pending) == 1 else torch.cat(pending), dtype)
    _flush(out, done, pending, pending_rows)
    return out


def _captured(module, batch, capture, postprocess):
    """One batch's output: the captured layers (flattened per row and joined)
    or the module's output, post-processed."""
    if capture is not None:
        rows = batch.shape[0]
        parts = [p.reshape(rows, -1) for p in capture(batch)]
        result = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    else:
        result = module(batch)
    if postprocess is not None:
        if not isinstance(result, torch.Tensor):
            result = _first_tensor(result, "<final output>")
        result = postprocess(result)
    return result


def _one_row_each(module, result, rows):
    """A batch's output as a 2-D tensor with ``rows`` rows, or the error."""
    if not isinstance(result, torch.Tensor):
        result = _first_tensor(result, "<final output>")
    if result.ndim != 2:
        result = result.reshape(result.shape[0] if result.ndim else 1, -1)
    if result.shape[0] != rows:
        raise ValueError(
            f"{type(module).__name__} returned {result.shape[0]} rows for a batch of "
            f"{rows}; the module must return one output row per input row "
            "(batch dimension first)."
        )
    return result


def _as_array(result, dtype):
    """An output tensor as the returned array, without a copy where that is
    safe: a tensor made in inference mode is new memory, while any other is a
    view of something that lives on (the input, a weight)."""
    if result.device.type != "cpu":
        return result.cpu().numpy().astype(dtype, copy=False)
    array = result.numpy()
    if not result.is_inference():
        return np.array(array, dtype=dtype, order="C")
    return np.ascontiguousarray(array, dtype=dtype)


def _flush(out, start, pending, rows):
    """Write the outputs of the batches in ``pending`` into ``out[start:]``."""
    block = pending[0] if len(pending) == 1 else torch.cat(pending)
    if block.device.type != "cpu":
        block = block.cpu()
    out[start : start + rows] = block.numpy()
