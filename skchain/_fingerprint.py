"""Fingerprints for the frozen-output cache: what a model is.

Two digests address a cached output (see :mod:`skchain._cache`):

- :func:`model_fingerprint`: the module's class and structure (``repr``), a
  digest of every parameter and buffer (:func:`weights_digest`), and whatever
  else the caller says decides the output (the layer read, the
  post-processing, ...; functions are named by :func:`callable_id`).
- the key of each row, which the input's kind gives
  (:meth:`skchain._inputs.InputKind.keys`).

Both are independent of the process, so the disk layer can share them.

Weights are digested once per module object
-------------------------------------------
Pretrained modules are shared, not copied, by ``clone`` and the searches, so the
same module object is fingerprinted on every ``transform`` of every fold and
candidate. Hashing all its weights each time would cost a pass over them (tens
of ms for a 90 MB model), so the digest is memoised per module object in a
:class:`weakref.WeakKeyDictionary` (the memo never keeps a module alive) and
trusted while every parameter and buffer keeps the same

- storage address (``data_ptr``), shape, stride, dtype and device: replaced
  tensors, ``load_state_dict`` into new storage, ``.to(...)``, re-assigned
  ``param.data`` are seen;
- autograd version counter (``tensor._version``): every in-place write through
  torch -- optimiser steps, ``load_state_dict``'s ``copy_``, writes under
  ``torch.no_grad()``, ``nn.init`` functions, BatchNorm's running statistics --
  bumps it;
- 16 values sampled across the tensor: writes that bypass the version counter
  (``param.data.mul_(2)``, writes through ``param.detach().numpy()``) are seen
  when they change one of them, as any whole-tensor update does. They are read
  through NumPy views of contiguous CPU tensors, made when the tensors were
  last seen changing (other tensors are sampled with torch on every check).

The ``repr`` that stands for the structure is memoised the same way, while
every submodule keeps its identity (a weak reference), class, children and
``extra_repr()``: a replaced layer or an attribute that ``repr`` shows is seen
without building the ``repr`` on every call. Both checks read the modules'
``_modules``, ``_parameters`` and ``_buffers`` directly instead of
``named_parameters()``, whose generators cost more than a small net's forward.

Not detected: a write that bypasses the version counter *and* changes only
unsampled values (``param.data[3, 7] = 0.0`` on a large matrix). The user guide
says so and how to avoid it.
"""

import functools
import hashlib
import re
import threading
import weakref

import torch

from ._runner import _submodules

__all__ = ["callable_id", "model_fingerprint", "weights_digest"]

DIGEST_SIZE = 16
_FORMAT_TAG = b"skchain-output-cache-v2"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
# Values sampled from each tensor for the memo check of weights_digest.
_PROBE_VALUES = 16


# -- the weights ---------------------------------------------------------------


def _is_uninitialized(tensor):
    return isinstance(tensor, torch.nn.parameter.UninitializedTensorMixin)


def named_tensors(module):
    """Every parameter and buffer of ``module``, each once."""
    yield from module.named_parameters(remove_duplicate=True)
    yield from module.named_buffers(remove_duplicate=True)


def _plain(tensor):
    """``tensor``'s values as a dense, strided tensor on its own device."""
    tensor = tensor.detach()
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    if tensor.is_quantized:
        tensor = tensor.int_repr()
    return tensor


def _probe(tensor):
    """A few of the tensor's values, spread over it, as bytes."""
    flat = _plain(tensor).reshape(-1)
    n = flat.numel()
    if n > _PROBE_VALUES:
        flat = flat[:: n // _PROBE_VALUES][:_PROBE_VALUES]
    return flat.cpu().contiguous().view(torch.uint8).numpy().tobytes()


def _state(module):
    """What changes when a tensor of ``module`` changes (see the module doc)."""
    state = []
    for name, tensor in named_tensors(module):
        if _is_uninitialized(tensor):
            state.append((name, "uninitialized"))
            continue
        state.append(
            (
                name,
                tensor.data_ptr(),
                tensor._version,
                tuple(tensor.shape),
                tensor.stride() if tensor.layout == torch.strided else None,
                str(tensor.dtype),
                str(tensor.device),
                _probe(tensor),
            )
        )
    return tuple(state)


def _update(hasher, text):
    data = text if isinstance(text, bytes) else str(text).encode("utf-8", "surrogatepass")
    hasher.update(len(data).to_bytes(8, "little"))
    hasher.update(data)


def hash_weights(module):
    """SHA-256 of every parameter and buffer (names, dtypes, shapes, bytes)."""
    hasher = hashlib.sha256()
    for name, tensor in named_tensors(module):
        _update(hasher, name)
        if _is_uninitialized(tensor):
            _update(hasher, "uninitialized")
            continue
        tensor = _plain(tensor)
        _update(hasher, f"{tensor.dtype}{tuple(tensor.shape)}")
        data = tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        hasher.update(memoryview(data))
    return hasher.hexdigest()


def _probe_view(tensor):
    """The values :func:`_probe` samples, as a NumPy *view* of the tensor's
    memory (reading it later sees any write), or ``None`` where no such view
    exists (another device, a non-contiguous or quantized tensor, a dtype
    NumPy lacks): :func:`_probe` is then called on every check."""
    if (
        tensor.device.type != "cpu"
        or tensor.layout != torch.strided
        or tensor.is_quantized
        or not tensor.is_contiguous()
    ):
        return None
    try:
        flat = tensor.detach().numpy().reshape(-1)
    except (TypeError, RuntimeError):
        return None
    n = flat.size
    if n > _PROBE_VALUES:
        flat = flat[:: n // _PROBE_VALUES][:_PROBE_VALUES]
    return flat


def _read_probes(views, tensors):
    return tuple(
        _probe(t) if v is None else v.tobytes() for v, t in zip(views, tensors, strict=True)
    )


def _describe(module):
    """``(structure, state, tensors)`` of ``module``, read in one pass.

    ``structure`` stands for ``repr(module)``: per submodule (pre-order) a weak
    reference to it (its identity), its class, ``extra_repr()`` and its
    children's names and identities. ``state`` is per parameter and buffer
    its name, storage address, version counter, shape, stride, dtype and
    device; ``tensors`` the tensors themselves (each once).
    """
    submodules = _submodules(module)
    structure = []
    for m in submodules:
        children = m._modules
        structure.append(
            (
                weakref.ref(m),
                m.__class__,
                m.extra_repr(),
                tuple(children),
                tuple(map(id, children.values())),
            )
        )
    state, tensors, seen = [], [], set()
    for attr in ("_parameters", "_buffers"):
        for m in submodules:
            for name, tensor in getattr(m, attr).items():
                if tensor is None or id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                if _is_uninitialized(tensor):
                    state.append((name, "uninitialized"))
                    continue
                strided = tensor.layout == torch.strided
                state.append(
                    (
                        name,
                        tensor.data_ptr(),
                        tensor._version,
                        tensor.shape,
                        tensor.stride() if strided else None,
                        tensor.dtype,
                        tensor.device,
                    )
                )
                tensors.append(tensor)
    return tuple(structure), tuple(state), tensors


class _Memo:
    """What was last seen of one module object, and its digests."""

    __slots__ = ("digest", "probe", "repr", "state", "views")

    def __init__(self, state, views, probe, digest, repr=None):
        self.state = state
        self.views = views
        self.probe = probe
        self.digest = digest
        # (structure, stable_repr): one tuple, replaced whole, so a thread
        # never pairs one structure with another's text.
        self.repr = repr


_WEIGHTS_MEMO = weakref.WeakKeyDictionary()
_WEIGHTS_LOCK = threading.Lock()


def _checked_memo(module):
    """``(structure, memo)``: the module's structure now, and its memo with a
    weights digest valid for the weights now (recomputed when they changed)."""
    structure, state, tensors = _describe(module)
    with _WEIGHTS_LOCK:
        memo = _WEIGHTS_MEMO.get(module)
    if memo is not None and memo.state == state:
        # Same tensors, same version counters: only a write that bypasses the
        # counter can have happened; the sampled values tell.
        if _read_probes(memo.views, tensors) == memo.probe:
            return structure, memo
        views = memo.views
    else:
        views = [_probe_view(t) for t in tensors]
    probe = _read_probes(views, tensors)
    digest = hash_weights(module)
    fresh = _Memo(state, views, probe, digest, None if memo is None else memo.repr)
    with _WEIGHTS_LOCK:
        _WEIGHTS_MEMO[module] = fresh
    return structure, fresh


def weights_digest(module):
    """:func:`hash_weights` of ``module``, memoised per module object while its
    tensors are unchanged (what is and is not detected: see the module doc)."""
    return _checked_memo(module)[1].digest


# -- what else decides an output -----------------------------------------------


def stable_repr(value):
    """``repr`` without memory addresses, so it is the same in every process."""
    return _ADDRESS.sub("", repr(value))


def callable_id(fn):
    """A process-independent description of a function (no memory addresses).

    Functions are named by module and qualified name plus a hash of their
    bytecode and constants, so two lambdas with different bodies differ;
    ``functools.partial`` objects by their function and arguments.
    """
    if fn is None:
        return None
    if isinstance(fn, functools.partial):
        kwargs = sorted((k, stable_repr(v)) for k, v in fn.keywords.items())
        args = tuple(stable_repr(a) for a in fn.args)
        return ("partial", callable_id(fn.func), args, tuple(kwargs))
    name = getattr(fn, "__qualname__", None)
    if name is None:
        return (f"{type(fn).__module__}.{type(fn).__qualname__}", stable_repr(fn))
    ident = f"{getattr(fn, '__module__', None)}.{name}"
    code = getattr(fn, "__code__", None)
    if code is not None:
        body = hashlib.blake2b(code.co_code, digest_size=8)
        _update(body, stable_repr(code.co_consts))
        ident += ":" + body.hexdigest()
    return ident


def model_fingerprint(module, *parts):
    """Digest of what decides a module's outputs: its class and structure, its
    weights, and ``parts`` (any values with a stable ``repr``: the layer read,
    the post-processing, normalisation, ...).

    Two modules with equal fingerprints give equal outputs for equal rows, in
    this process or another one.
    """
    structure, memo = _checked_memo(module)
    seen = memo.repr
    if seen is None or seen[0] != structure:
        # The structure changed (or was never seen): repr it again. Comparing
        # the structure tuples costs a fraction of building the repr.
        seen = memo.repr = (structure, stable_repr(module))
    hasher = hashlib.blake2b(digest_size=DIGEST_SIZE)
    hasher.update(_FORMAT_TAG)
    cls = type(module)
    _update(hasher, f"{cls.__module__}.{cls.__qualname__}")
    _update(hasher, seen[1])
    _update(hasher, memo.digest)
    for part in parts:
        _update(hasher, stable_repr(part))
    return hasher.hexdigest()
