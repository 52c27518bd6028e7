"""The frozen-output cache: one forward pass per distinct row.

A net used as it is -- a pretrained module, a ``frozen=True`` skorch net, a
sentence-transformers model -- gives a row the same output whichever fold or
candidate of a search asks for it. Recomputing those outputs for every fold and
every candidate is pure waste: a ``GridSearchCV(cv=5)`` over six settings of
the downstream steps runs the net over each row 30 times or more. This module
computes each distinct row once and serves it from then on.

Keys
----
An output is addressed by two digests:

- the **model fingerprint**: the module's class, its structure (``repr``), the
  bytes of every parameter and buffer, and whatever else the caller says
  decides the output (the layer read, the post-processing, normalisation).
  Changed weights give a new fingerprint, so they are never served outputs
  of the old ones.
- the **row digest**: a 128-bit BLAKE2b hash of one row's bytes (a float32
  row, or a text's UTF-8 encoding). Keys are per row, so the rows of one CV
  fold hit rows computed for another fold.

Hashing all weights takes a pass over them (about 60 ms for the 91 MB of
all-MiniLM-L6-v2), so the weight digest is memoised per module object while
every tensor keeps its storage, autograd version counter and 16 sampled
values: optimiser steps, ``load_state_dict``, ``torch.no_grad()`` in-place
updates and replaced tensors change one of those, and writes that bypass the
version counter (``param.data``, NumPy views) are caught when they change a
sampled value. The one gap, documented in the user guide: such a bypassing
write that changes only unsampled values.

Layers
------
1. Process memory (always): blocks of rows in least-recently-used order,
   bounded by :data:`DEFAULT_MAX_BYTES` (outputs plus about 150 bytes of
   index per row). Each process has its own, so it is correct whatever joblib
   backend runs the folds.
2. Disk (``cache=<path>`` or a :class:`joblib.Memory`): immutable,
   content-addressed blocks written through joblib's store with its
   concurrency-safe writes, so several processes (loky workers, dask workers
   on one file system) share rows without locks. ``Memory.clear()`` removes
   them and ``Memory.reduce_size(bytes_limit=...)`` evicts the least recently
   used first, alongside joblib's own items.

With ``cache="auto"`` (the default of the wrappers) a net is first run without
the cache and timed: if it computes a row in less than a few times what looking
a row up costs (a tiny MLP does), caching would only slow it down and is
skipped for that model.
"""

import functools
import hashlib
import itertools
import os
import re
import threading
import warnings
import weakref
from collections import OrderedDict
from time import perf_counter

import joblib
import numpy as np
import torch
from joblib import Memory

__all__ = [
    "CACHE_CONSTRAINT",
    "DEFAULT_MAX_BYTES",
    "OutputCache",
    "cached_outputs",
    "callable_id",
    "model_fingerprint",
    "resolve_cache",
    "row_digests",
    "weights_digest",
]

#: Bound of the in-process cache, outputs plus index, per process.
DEFAULT_MAX_BYTES = 1 << 30

#: ``_parameter_constraints`` entry for a ``cache`` parameter.
CACHE_CONSTRAINT = ["boolean", str, os.PathLike, Memory]

# Index cost of one row in the memory layer (a 16-byte digest as a Python
# bytes object plus one dict slot), measured with tracemalloc.
_INDEX_BYTES_PER_ROW = 150
_DIGEST_SIZE = 16
# Values sampled from each tensor for the memo check of weights_digest.
_PROBE_VALUES = 16
# "auto": a net must run this long before it is judged (shorter calls are
# dominated by fixed per-call costs), and is cached when a row costs at least
# this many times what hashing a row costs.
_AUTO_MIN_SECONDS = 0.01
_AUTO_FACTOR = 4.0
_AUTO_SAMPLE_ROWS = 256
_DISK_FOLDER = "skchain_outputs"
_FORMAT_TAG = b"skchain-output-cache-v1"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


# -- model fingerprint ---------------------------------------------------------


def _is_uninitialized(tensor):
    return isinstance(tensor, torch.nn.parameter.UninitializedTensorMixin)


def _named_tensors(module):
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
        step = n // _PROBE_VALUES
        flat = flat[::step][:_PROBE_VALUES]
    return flat.cpu().contiguous().view(torch.uint8).numpy().tobytes()


def _state(module):
    """What changes whenever a tensor of ``module`` is written through torch.

    Storage address and autograd version counter catch optimiser steps,
    ``load_state_dict``, in-place updates under ``no_grad`` and replaced
    tensors; the sampled values also catch most writes that bypass the
    version counter (``param.data.mul_(...)``, writes through a NumPy view).
    """
    state = []
    for name, tensor in _named_tensors(module):
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


def _hash_weights(module):
    hasher = hashlib.sha256()
    for name, tensor in _named_tensors(module):
        _update(hasher, name)
        if _is_uninitialized(tensor):
            _update(hasher, "uninitialized")
            continue
        tensor = _plain(tensor)
        _update(hasher, f"{tensor.dtype}{tuple(tensor.shape)}")
        data = tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        hasher.update(memoryview(data))
    return hasher.hexdigest()


_WEIGHTS_MEMO = weakref.WeakKeyDictionary()
_WEIGHTS_LOCK = threading.Lock()


def weights_digest(module):
    """SHA-256 of every parameter and buffer of ``module`` (names, dtypes,
    shapes and bytes), memoised while the module's tensors are unchanged."""
    state = _state(module)
    with _WEIGHTS_LOCK:
        memo = _WEIGHTS_MEMO.get(module)
    if memo is not None and memo[0] == state:
        return memo[1]
    digest = _hash_weights(module)
    with _WEIGHTS_LOCK:
        _WEIGHTS_MEMO[module] = (state, digest)
    return digest


def callable_id(fn):
    """A process-independent description of a function (no memory addresses).

    Functions are named by module and qualified name plus a hash of their
    bytecode and constants, so two lambdas with different bodies differ.
    """
    if fn is None:
        return None
    if isinstance(fn, functools.partial):
        kwargs = sorted((k, _stable_repr(v)) for k, v in fn.keywords.items())
        args = tuple(_stable_repr(a) for a in fn.args)
        return ("partial", callable_id(fn.func), args, tuple(kwargs))
    name = getattr(fn, "__qualname__", None)
    if name is None:
        return (f"{type(fn).__module__}.{type(fn).__qualname__}", _stable_repr(fn))
    ident = f"{getattr(fn, '__module__', None)}.{name}"
    code = getattr(fn, "__code__", None)
    if code is not None:
        body = hashlib.blake2b(code.co_code, digest_size=8)
        _update(body, _stable_repr(code.co_consts))
        ident += ":" + body.hexdigest()
    return ident


def _stable_repr(value):
    return _ADDRESS.sub("", repr(value))


def model_fingerprint(module, *parts):
    """Digest of what decides a module's outputs: its class and structure, its
    weights, and ``parts`` (any values with a stable ``repr``: the layer read,
    the post-processing, normalisation, ...).

    Two modules with equal fingerprints give equal outputs for equal rows, in
    this process or another one.
    """
    hasher = hashlib.blake2b(digest_size=_DIGEST_SIZE)
    hasher.update(_FORMAT_TAG)
    cls = type(module)
    _update(hasher, f"{cls.__module__}.{cls.__qualname__}")
    _update(hasher, _stable_repr(module))
    _update(hasher, weights_digest(module))
    for part in parts:
        _update(hasher, _stable_repr(part))
    return hasher.hexdigest()


# -- row digests ---------------------------------------------------------------


def _is_array(rows):
    return isinstance(rows, np.ndarray) and rows.dtype != object


def row_digests(rows):
    """One 16-byte BLAKE2b digest per row.

    ``rows`` is a numeric ndarray (each row's bytes are hashed, so pass the
    array in the dtype the model sees) or a sequence of ``str``.
    """
    blake2b = hashlib.blake2b
    if _is_array(rows):
        rows = np.ascontiguousarray(rows)
        return [blake2b(row, digest_size=_DIGEST_SIZE).digest() for row in rows]
    return [
        blake2b(text.encode("utf-8", "surrogatepass"), digest_size=_DIGEST_SIZE).digest()
        for text in rows
    ]


def _row_format(rows):
    if _is_array(rows):
        return ("array", rows.dtype.str, tuple(rows.shape[1:]))
    return ("text",)


def _take(rows, indices):
    if _is_array(rows):
        return rows[indices]
    return [rows[i] for i in indices]


# -- storage -------------------------------------------------------------------


class _Block:
    __slots__ = ("namespace", "keys", "values", "nbytes")

    def __init__(self, namespace, keys, values):
        values.flags.writeable = False
        self.namespace = namespace
        self.keys = keys
        self.values = values
        self.nbytes = values.nbytes + len(keys) * _INDEX_BYTES_PER_ROW


class _MemoryStore:
    """Rows of every model in this process, least recently used evicted first.

    Blocks are immutable arrays: a reader keeps a reference to what it found,
    so eviction by another thread never changes what it reads.
    """

    def __init__(self, max_bytes=DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._blocks = OrderedDict()  # block id -> _Block, oldest first
        self._index = {}  # namespace -> {row digest: block id << 32 | position}
        self._decisions = OrderedDict()  # namespace -> bool ("auto" mode)
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def lookup(self, namespace, keys):
        """``(found, missing)``: ``found`` lists ``(where, values, rows)`` per
        block, meaning ``keys[where[i]]`` is ``values[rows[i]]``; ``missing``
        lists the positions in ``keys`` that are not stored."""
        where, codes, missing = [], [], []
        with self._lock:
            index = self._index.get(namespace)
            if index is None:
                return [], list(range(len(keys)))
            get = index.get
            for i, key in enumerate(keys):
                code = get(key)
                if code is None:
                    missing.append(i)
                else:
                    where.append(i)
                    codes.append(code)
            if not codes:
                return [], missing
            codes = np.asarray(codes, dtype=np.int64)
            block_ids = codes >> 32
            found = []
            for block_id in np.unique(block_ids):
                block = self._blocks[int(block_id)]
                self._blocks.move_to_end(int(block_id))
                mask = block_ids == block_id
                found.append((np.asarray(where)[mask], block.values, codes[mask] & 0xFFFFFFFF))
        return found, missing

    def put(self, namespace, keys, values):
        """Keep ``values[i]`` for ``keys[i]`` (rows already stored are skipped)."""
        if not keys or len(keys) * _INDEX_BYTES_PER_ROW + values.nbytes > self.max_bytes:
            return
        with self._lock:
            index = self._index.setdefault(namespace, {})
            fresh = [i for i, key in enumerate(keys) if key not in index]
            if not fresh:
                return
            if len(fresh) < len(keys):
                keys = [keys[i] for i in fresh]
                values = values[fresh]
            block_id = next(self._ids)
            block = _Block(namespace, keys, values)
            self._blocks[block_id] = block
            base = block_id << 32
            for position, key in enumerate(keys):
                index[key] = base | position
            self.nbytes += block.nbytes
            self._evict()

    def _evict(self):
        while self.nbytes > self.max_bytes and self._blocks:
            block_id, block = self._blocks.popitem(last=False)
            index = self._index[block.namespace]
            for key in block.keys:
                code = index.get(key)
                if code is not None and code >> 32 == block_id:
                    del index[key]
            if not index:
                del self._index[block.namespace]
            self.nbytes -= block.nbytes

    def decision(self, namespace):
        with self._lock:
            return self._decisions.get(namespace)

    def decide(self, namespace, worth):
        with self._lock:
            self._decisions[namespace] = worth
            while len(self._decisions) > 4096:
                self._decisions.popitem(last=False)

    def clear(self):
        with self._lock:
            self._blocks.clear()
            self._index.clear()
            self._decisions.clear()
            self.nbytes = 0


class _DiskStore:
    """Blocks of rows in a :class:`joblib.Memory` location, shared by processes.

    A block is written once, whole, under a name derived from its row digests,
    through joblib's concurrency-safe write (a temporary file renamed into
    place), so readers never see half a block and two processes writing the
    same rows write the same item. Each process indexes the blocks it has not
    seen yet when it misses a row.
    """

    def __init__(self, memory):
        from joblib._store_backends import FileSystemStoreBackend

        backend = memory.store_backend
        if not isinstance(backend, FileSystemStoreBackend):
            raise TypeError(
                f"cache=Memory(...) needs joblib's file-system store, got "
                f"{type(backend).__name__}; pass a folder path instead."
            )
        self._backend = backend
        self._root = os.path.join(backend.location, _DISK_FOLDER)
        self._index = {}  # namespace -> {row digest: (block name, position)}
        self._seen = {}  # namespace -> block names already indexed
        self._lock = threading.Lock()

    @staticmethod
    def _folder(namespace):
        # Not 32 hex digits: joblib's reduce_size treats such folders as items,
        # and must see only the blocks inside.
        return "m" + namespace

    def _path(self, namespace, block):
        return os.path.join(self._root, self._folder(namespace), block, "output.pkl")

    def _load(self, namespace, block):
        try:
            with warnings.catch_warnings():
                # A compressed store cannot be memory-mapped; joblib says so.
                warnings.simplefilter("ignore", UserWarning)
                return joblib.load(self._path(namespace, block), mmap_mode="r")
        except (OSError, EOFError, KeyError, ValueError):
            return None  # evicted or being removed by another process

    def _sync(self, namespace):
        try:
            names = os.listdir(os.path.join(self._root, self._folder(namespace)))
        except FileNotFoundError:
            return
        seen = self._seen.setdefault(namespace, set())
        index = self._index.setdefault(namespace, {})
        for name in names:
            if name in seen:
                continue
            item = self._load(namespace, name)
            if item is None:
                continue
            seen.add(name)
            digests = np.asarray(item["keys"]).tobytes()
            for position in range(len(digests) // _DIGEST_SIZE):
                key = digests[position * _DIGEST_SIZE : (position + 1) * _DIGEST_SIZE]
                index.setdefault(key, (name, position))

    def _forget(self, namespace, block):
        index = self._index.get(namespace, {})
        for key in [k for k, (name, _) in index.items() if name == block]:
            del index[key]
        self._seen.get(namespace, set()).discard(block)

    def lookup(self, namespace, keys):
        """Same contract as :meth:`_MemoryStore.lookup`; values are copied
        out of the memory-mapped blocks."""
        with self._lock:
            index = self._index.get(namespace, {})
            if any(key not in index for key in keys):
                self._sync(namespace)
                index = self._index.get(namespace, {})
            groups = {}
            for i, key in enumerate(keys):
                location = index.get(key)
                if location is not None:
                    groups.setdefault(location[0], []).append((i, location[1]))
            found, hit = [], set()
            for block, pairs in groups.items():
                item = self._load(namespace, block)
                if item is None:
                    self._forget(namespace, block)
                    continue
                where = np.fromiter((i for i, _ in pairs), dtype=np.intp, count=len(pairs))
                rows = np.fromiter((p for _, p in pairs), dtype=np.intp, count=len(pairs))
                values = np.asarray(item["values"])[rows]
                found.append((where, values, np.arange(len(rows))))
                hit.update(where.tolist())
                del item
        missing = [i for i in range(len(keys)) if i not in hit]
        return found, missing

    def put(self, namespace, keys, values):
        if not keys:
            return
        digests = b"".join(keys)
        block = hashlib.blake2b(digests, digest_size=16).hexdigest()
        item = {
            "keys": np.frombuffer(digests, dtype=np.uint8).reshape(-1, _DIGEST_SIZE),
            "values": np.ascontiguousarray(values),
        }
        self._backend.dump_item([_DISK_FOLDER, self._folder(namespace), block], item, verbose=0)
        with self._lock:
            self._seen.setdefault(namespace, set()).add(block)
            index = self._index.setdefault(namespace, {})
            for position, key in enumerate(keys):
                index.setdefault(key, (block, position))


_MEMORY = _MemoryStore()
_DISKS = {}
_DISKS_LOCK = threading.Lock()


def _disk_store(memory):
    location = os.path.abspath(memory.store_backend.location)
    with _DISKS_LOCK:
        store = _DISKS.get(location)
        if store is None:
            store = _DISKS[location] = _DiskStore(memory)
        return store


# -- the cache -----------------------------------------------------------------


class OutputCache:
    """Outputs of frozen models, computed once per distinct row.

    Parameters
    ----------
    memory : _MemoryStore
        The process's in-memory layer.
    disk : _DiskStore or None
        Optional on-disk layer shared across processes.
    auto : bool
        Decide per model, from timing its first call, whether caching pays.
    """

    def __init__(self, memory, disk=None, auto=False):
        self.memory = memory
        self.disk = disk
        self.auto = auto

    def compute(self, fingerprint, rows, compute):
        """``compute(rows)``, with each row taken from the cache when stored.

        Parameters
        ----------
        fingerprint : str
            :func:`model_fingerprint` of the model and output.
        rows : ndarray or list of str
            The model's input, one row per output row.
        compute : callable
            ``compute(subset_of_rows) -> ndarray (n_subset, n_outputs)``, run
            once on the rows not found (in their order, duplicates removed).

        Returns
        -------
        out : ndarray of shape (len(rows), n_outputs)
            A new array, never a view of the cache.
        """
        if len(rows) == 0:
            return compute(rows)  # nothing to look up; the model reports the error
        namespace = hashlib.blake2b(
            f"{fingerprint}|{_row_format(rows)}".encode(), digest_size=_DIGEST_SIZE
        ).hexdigest()
        if self.auto:
            decision = self.memory.decision(namespace)
            if decision is None:
                return self._judge(namespace, rows, compute)
            if not decision:
                return compute(rows)
        return self._cached(namespace, rows, compute)

    def _judge(self, namespace, rows, compute):
        """First sight of a model in "auto" mode: run it, time it, and keep
        its rows only if a row costs much more to compute than to look up."""
        start = perf_counter()
        out = compute(rows)
        elapsed = perf_counter() - start
        if elapsed < _AUTO_MIN_SECONDS:
            return out  # too short to tell the net's cost from fixed overheads
        sample = _take(rows, range(min(len(rows), _AUTO_SAMPLE_ROWS)))
        start = perf_counter()
        row_digests(sample)
        per_row_hash = (perf_counter() - start) / len(sample)
        worth = elapsed / len(rows) >= _AUTO_FACTOR * per_row_hash
        self.memory.decide(namespace, worth)
        if worth:
            keys = row_digests(rows)
            unique = dict(zip(keys, range(len(keys)), strict=True))
            if len(unique) < len(keys):
                self._store(namespace, list(unique), out[list(unique.values())])
            else:
                self._store(namespace, keys, out.copy())
        return out

    def _store(self, namespace, keys, values):
        self.memory.put(namespace, keys, values)
        if self.disk is not None:
            self.disk.put(namespace, keys, values)

    def _cached(self, namespace, rows, compute):
        keys = row_digests(rows)
        first = {}  # distinct digest -> its position among distinct rows
        inverse = np.empty(len(keys), dtype=np.intp)
        origin = []  # position in rows of each distinct row's first occurrence
        for i, key in enumerate(keys):
            j = first.setdefault(key, len(first))
            if j == len(origin):
                origin.append(i)
            inverse[i] = j
        distinct = list(first)

        parts, missing = self.memory.lookup(namespace, distinct)
        if missing and self.disk is not None:
            from_disk, still = self.disk.lookup(namespace, [distinct[j] for j in missing])
            for where, values, positions in from_disk:
                where = np.asarray(missing)[where]
                parts.append((where, values, positions))
                self.memory.put(namespace, [distinct[j] for j in where], values[positions])
            missing = [missing[j] for j in still]
        if missing:
            subset = _take(rows, [origin[j] for j in missing])
            computed = np.ascontiguousarray(compute(subset))
            if computed.shape[0] != len(missing):
                raise ValueError(
                    f"The model returned {computed.shape[0]} rows for {len(missing)} inputs."
                )
            parts.append((np.asarray(missing), computed, np.arange(len(missing))))
            self._store(namespace, [distinct[j] for j in missing], computed)

        width = parts[0][1].shape[1:]
        dtype = parts[0][1].dtype
        unique_out = np.empty((len(distinct), *width), dtype=dtype)
        for where, values, positions in parts:
            unique_out[where] = values[positions]
        if len(distinct) == len(keys):
            return unique_out
        return unique_out[inverse]


def resolve_cache(cache):
    """The :class:`OutputCache` a ``cache`` parameter means, or ``None``.

    - ``False``: no cache.
    - ``"auto"``: in memory, for models that are slower to run than to look up.
    - ``True``: in memory, always.
    - a path (``str`` other than ``"auto"``, ``os.PathLike``) or a
      :class:`joblib.Memory`: in memory and on disk there, always. A
      ``Memory(location=None)`` means in memory only.
    """
    if cache is False or cache is None:
        return None
    if cache is True:
        return OutputCache(_MEMORY)
    if isinstance(cache, str) and cache == "auto":
        return OutputCache(_MEMORY, auto=True)
    if isinstance(cache, (str, os.PathLike)):
        cache = Memory(location=os.fspath(cache), verbose=0)
    if isinstance(cache, Memory):
        if cache.store_backend is None:
            return OutputCache(_MEMORY)
        return OutputCache(_MEMORY, _disk_store(cache))
    raise TypeError(
        f"cache must be 'auto', True, False, a folder path or a joblib.Memory; got "
        f"{type(cache).__name__}."
    )


def cached_outputs(cache, fingerprint, rows, compute):
    """``compute(rows)`` through the cache that ``cache`` (a parameter value)
    names; ``fingerprint`` is a callable, evaluated only when a cache is used."""
    resolved = resolve_cache(cache)
    if resolved is None:
        return compute(rows)
    return resolved.compute(fingerprint(), rows, compute)
