"""The frozen-output cache: one forward pass per distinct row.

A net used as it is -- a pretrained module, a ``frozen=True`` skorch net, a
sentence-transformers model -- gives a row the same output whichever fold or
candidate of a search asks for it. Recomputing those outputs for every fold and
every candidate is pure waste: a ``GridSearchCV(cv=5)`` over six settings of
the downstream steps runs the net over each row 30 times or more. This module
computes each distinct row once and serves it from then on.

An output is addressed by the model's fingerprint (:mod:`skchain._fingerprint`)
and the row's key, which the rows' kind gives (:mod:`skchain._inputs`). A call
walks one way: the rows' kind, the "auto" decision (:mod:`skchain._flops`),
the keys, the stores, the model for the rows not found. This module holds
where outputs are kept and when:

1. Process memory (always): blocks of rows, least recently used evicted first,
   bounded by :data:`DEFAULT_MAX_BYTES`. Each process has its own, so it is
   correct whatever joblib backend runs the folds.
2. Disk (``cache=<path>`` or a :class:`joblib.Memory`): immutable blocks, each
   written to a temporary file and renamed into place (:func:`os.replace`), so
   several processes share rows without locks and a reader never sees half a
   block. Every block carries keyed MACs of its index and of its values
   (:mod:`skchain._disk`: the key is the user's, outside the folder), verified on
   every read: a corrupt, truncated, planted or unreadable block is a miss --
   recomputed, rewritten, one :class:`UserWarning` -- never a wrong value.
   Blocks sit where joblib's ``Memory.clear()`` and ``Memory.reduce_size()``
   manage them with joblib's own items.
3. The policy (``cache="auto"``, the wrappers' default): a model's rows are kept
   when the model costs far more per row than keeping a row does, counted in
   FLOPs, not timed (:func:`skchain._flops.worth_caching`).
"""

import contextlib
import contextvars
import functools
import hashlib
import os
import threading
import warnings
import weakref
from collections import OrderedDict

import numpy as np
from joblib import Memory

from ._disk import _disk_store, memory_at
from ._fingerprint import (
    callable_id,
    hash_weights,
    model_fingerprint,
    named_tensors,
    weights_digest,
)
from ._flops import row_flops, worth_caching
from ._inputs import check_finite_input, kind_of

__all__ = [
    "CACHE_CONSTRAINT",
    "DEFAULT_MAX_BYTES",
    "OutputCache",
    "cached_outputs",
    "callable_id",
    "model_fingerprint",
    "resolve_cache",
    "streaming",
    "weights_digest",
]

# Kept under their old private names for the callers and benchmarks.
_hash_weights = hash_weights
_named_tensors = named_tensors

#: Bound of the in-process cache, outputs plus index, per process.
DEFAULT_MAX_BYTES = 1 << 30

#: ``_parameter_constraints`` entry for a ``cache`` parameter.
CACHE_CONSTRAINT = ["boolean", str, os.PathLike, Memory]

# Index cost of one row in the memory layer besides its key's bytes: the bytes
# object's header (33) and a dict slot with its int value (about 85, measured
# with tracemalloc).
_INDEX_BYTES_PER_ROW = 120

# Set while a block of a dask collection is computed (see :func:`streaming`).
_STREAMING = contextvars.ContextVar("skchain_streaming", default=False)

_DECISIONS_KEPT = 4096
_DECISIONS_PER_MODULE = 64


# -- rows in process memory -----------------------------------------------------


class _Block:
    __slots__ = ("namespace", "keys", "values", "nbytes")

    def __init__(self, namespace, keys, values):
        values.flags.writeable = False
        self.namespace = namespace
        self.keys = keys
        self.values = values
        key_bytes = len(keys[0]) if keys else 0
        self.nbytes = values.nbytes + len(keys) * (key_bytes + _INDEX_BYTES_PER_ROW)


class _MemoryStore:
    """Rows of every model in this process, least recently used evicted first.

    Blocks are immutable arrays: a reader keeps a reference to what it found,
    so eviction by another thread never changes what it reads. The "auto"
    decisions live here too, so a fresh store is a fresh process.
    """

    def __init__(self, max_bytes=DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._blocks = OrderedDict()  # block id -> _Block, oldest first
        self._index = {}  # namespace -> {row key: block id << 32 | position}
        self._decisions = OrderedDict()  # namespace -> bool ("auto" mode)
        # module -> {(output key, row format): bool}: the same decisions, found
        # without fingerprinting the module (see cached_outputs' ``owner``).
        self._by_module = weakref.WeakKeyDictionary()
        self._next_id = 0
        self._lock = threading.Lock()

    def lookup(self, namespace, keys):
        """``(found, missing)``: ``found`` lists ``(where, values, rows)`` per
        block, meaning ``keys[where[i]]`` is ``values[rows[i]]``; ``missing``
        is an int array of the positions in ``keys`` that are not stored."""
        with self._lock:
            index = self._index.get(namespace)
            if index is None:
                return [], np.arange(len(keys))
            get = index.get
            codes = np.fromiter((get(key, -1) for key in keys), dtype=np.int64, count=len(keys))
            hit = codes >= 0
            missing = np.flatnonzero(~hit)
            if len(missing) == len(keys):
                return [], missing
            where = np.flatnonzero(hit)
            codes = codes[where]
            block_ids = codes >> 32
            found = []
            for block_id in np.unique(block_ids):
                block = self._blocks[int(block_id)]
                self._blocks.move_to_end(int(block_id))
                mask = block_ids == block_id
                found.append((where[mask], block.values, codes[mask] & 0xFFFFFFFF))
        return found, missing

    def put(self, namespace, keys, values):
        """Keep ``values[i]`` for ``keys[i]``; ``values`` must not be used by
        the caller afterwards (it becomes read-only)."""
        if not keys:
            return
        block = _Block(namespace, keys, values)
        if block.nbytes > self.max_bytes:
            return
        with self._lock:
            index = self._index.setdefault(namespace, {})
            block_id = self._next_id
            self._next_id += 1
            self._blocks[block_id] = block
            base = block_id << 32
            index.update(zip(keys, range(base, base + len(keys)), strict=True))
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
            while len(self._decisions) > _DECISIONS_KEPT:
                self._decisions.popitem(last=False)

    def owner_decision(self, owner, fmt):
        module, key = owner
        with self._lock:
            known = self._by_module.get(module)
            return None if known is None else known.get((key, fmt))

    def owner_decide(self, owner, fmt, worth):
        module, key = owner
        with self._lock:
            known = self._by_module.get(module)
            if known is None or len(known) >= _DECISIONS_PER_MODULE:
                known = self._by_module[module] = {}
            known[(key, fmt)] = worth

    def clear(self):
        with self._lock:
            self._blocks.clear()
            self._index.clear()
            self._decisions.clear()
            self._by_module = weakref.WeakKeyDictionary()
            self.nbytes = 0


_MEMORY = _MemoryStore()


@contextlib.contextmanager
def streaming():
    """Within the block, the memory layer keeps no new rows (it still serves
    the rows it has); a disk layer reads and writes as always.

    A dask transform runs through here block by block: its data are presumed
    larger than memory and each block passes once, so keeping its outputs
    would only fill the store to its bound -- memory bounded by the cache,
    not by the blocks. A context variable, so that it holds for the thread
    (or task) computing the block and no other.
    """
    token = _STREAMING.set(True)
    try:
        yield
    finally:
        _STREAMING.reset(token)


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
        Decide per model, from its FLOPs per row, whether caching pays.
    """

    def __init__(self, memory, disk=None, auto=False):
        self.memory = memory
        self.disk = disk
        self.auto = auto

    def compute(self, fingerprint, rows, compute, owner=None):
        """``compute(rows)``, with each row taken from the cache when stored.

        One direction, each step once: the rows' kind, the "auto" decision
        (the first sight of a model runs one row), the rows' keys, then the
        stores; only the rows not found are computed.

        Parameters
        ----------
        fingerprint : str
            :func:`model_fingerprint` of the model and output.
        rows : ndarray or list of str
            The model's input, one row per output row, already checked
            (a kind of :mod:`skchain._inputs`).
        compute : callable
            ``compute(subset_of_rows) -> ndarray (n_subset, n_outputs)``, run
            on the rows not found (in their order, duplicates removed).
        owner : (torch.nn.Module, hashable) or None
            The module and what is read from it: the "auto" decision is also
            remembered for them (see :func:`cached_outputs`).

        Returns
        -------
        out : ndarray of shape (len(rows), n_outputs)
            A new array, never a view of the cache.
        """
        rows = kind_of(rows)
        if len(rows) == 0:
            return compute(rows.rows)  # nothing to look up; the model reports the error
        fmt = rows.row_format
        namespace = hashlib.blake2b(f"{fingerprint}|{fmt}".encode(), digest_size=16).hexdigest()
        head = None
        if self.auto:
            worth = self.memory.decision(namespace)
            judged = worth is None
            if judged:
                worth, head = self._judge(rows, compute)
            if not worth:
                # A cheap model is run whole, as on every later call: a row
                # computed alone may differ from the same row in a batch in
                # the last bits, and repeated calls must give identical results.
                # (Decided once it ran: a model that fails leaves no decision.)
                out = compute(rows.rows)
                self._decide(namespace, owner, fmt, False, judged)
                return out
            self._decide(namespace, owner, fmt, True, judged)
        return self._cached(namespace, rows, compute, head)

    def _decide(self, namespace, owner, fmt, worth, judged):
        if judged:
            self.memory.decide(namespace, worth)
        if owner is not None:
            self.memory.owner_decide(owner, fmt, worth)

    @staticmethod
    def _judge(rows, compute):
        """First sight of a model in "auto" mode: ``(worth caching, output of
        the first row or None)``, from the FLOPs of the first row. A model
        worth caching keeps that row's output, so no costly row runs twice."""
        try:
            head, flops = row_flops(compute, rows.take([0]))
        except Exception:
            # If the model itself fails, its plain call raises next; if not,
            # the counting mode could not run one of its operations: "not
            # counted, not cached", so a miss never costs.
            return False, None
        head = np.asarray(head)
        worth = worth_caching(flops, rows.row_bytes, head[:1].nbytes)
        return worth, (head.copy() if worth else None)

    def _store(self, namespace, keys, values):
        """Keep ``values`` (which the cache then owns) for ``keys``."""
        if self.disk is not None and not self.disk.put(namespace, keys, values):
            warnings.warn(
                f"skchain could not write to the cache folder {self.disk.root}; "
                "outputs are kept in memory only. Check that it is writable.",
                UserWarning,
                stacklevel=4,
            )
        if not _STREAMING.get():
            self.memory.put(namespace, keys, values)

    def _compute(self, namespace, rows, compute, distinct, inverse, origin, missing, parts):
        """Compute and store the ``missing`` distinct rows; returns the whole
        output when nothing else is to be assembled, else appends to ``parts``."""
        whole = len(missing) == len(distinct)
        if whole and origin is None:
            subset = rows.rows  # the common first pass: no copy of the rows
        else:
            source = missing if origin is None else origin[missing]
            subset = rows.take(source)
        computed = np.ascontiguousarray(compute(subset))
        if computed.shape[0] != len(missing):
            raise ValueError(
                f"The model returned {computed.shape[0]} rows for {len(missing)} inputs."
            )
        if whole:
            # Every distinct row, in order: nothing to assemble.
            if inverse is None:
                self._store(namespace, distinct, computed.copy())
                return computed  # fresh from the model: the cache holds its own copy
            # Repeated rows: the cache keeps ``computed`` itself and the
            # caller gets the new array that indexing makes (two copies of
            # the output at the peak, not four).
            self._store(namespace, distinct, computed)
            return computed[inverse]
        # Some rows were found: the result is assembled into a new array
        # anyway, so the cache keeps ``computed`` itself.
        self._store(namespace, [distinct[j] for j in missing], computed)
        parts.append((missing, computed, None))
        return None

    def _cached(self, namespace, rows, compute, head=None):
        keys = rows.keys()
        if head is not None:
            self._store(namespace, keys[:1], head)
        n = len(keys)
        if len(set(keys)) == n:
            distinct, inverse, origin = keys, None, None
        else:
            first = {}  # key -> its position among the distinct keys
            inverse = np.fromiter(
                (first.setdefault(key, len(first)) for key in keys), dtype=np.intp, count=n
            )
            distinct = list(first)
            origin = np.unique(inverse, return_index=True)[1]  # first occurrences

        parts, missing = self.memory.lookup(namespace, distinct)
        if head is not None and len(missing) and missing[0] == 0:
            # Not kept in memory while streaming: the counted row is served
            # from its own output, as the store would have.
            parts.append((missing[:1], head, np.zeros(1, dtype=np.intp)))
            missing = missing[1:]
        if len(missing) and self.disk is not None:
            from_disk, still, bad = self.disk.lookup(namespace, [distinct[j] for j in missing])
            for where, values, positions in from_disk:
                where = missing[where]
                parts.append((where, values, positions))
                if not _STREAMING.get():
                    self.memory.put(namespace, [distinct[j] for j in where], values[positions])
            missing = missing[still]
            if bad:
                warnings.warn(
                    f"skchain found {bad} corrupt or unreadable cache block(s) in "
                    f"{self.disk.root}; their rows were recomputed and written again.",
                    UserWarning,
                    stacklevel=3,
                )

        claim = None
        if len(missing) and self.disk is not None:
            # Rows another process (or thread) is computing right now are
            # waited for, not computed twice (a search's tasks on a cluster).
            claim = self.disk.claims.claim(namespace, [distinct[j] for j in missing])
        later, out = missing[:0], None
        try:
            if claim is not None:
                later, missing = missing[claim.others], missing[~claim.others]
            if len(missing):
                out = self._compute(namespace, rows, compute, distinct, inverse, origin,
                                    missing, parts)
        except BaseException:
            if claim is not None:
                claim.close()
            raise
        if claim is not None:
            claim.release()  # its block is written
        if out is not None:
            return out
        if len(later):
            try:
                claim.wait()
            finally:
                claim.close()
            source = later if origin is None else origin[later]
            # Read from their block; rows whose writer failed are computed here.
            parts.append((later, self._cached(namespace, kind_of(rows.take(source)), compute),
                          None))

        values = parts[0][1]
        unique_out = np.empty((len(distinct), *values.shape[1:]), dtype=values.dtype)
        for where, values, positions in parts:
            unique_out[where] = values if positions is None else values[positions]
        if inverse is None:
            return unique_out
        return unique_out[inverse]


def resolve_cache(cache):
    """The :class:`OutputCache` a ``cache`` parameter means, or ``None``.

    - ``False``: no cache.
    - ``"auto"``: in memory, for models whose FLOPs per row are far above what
      keeping a row costs (see :func:`worth_caching`).
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
        cache = memory_at(cache)
    if isinstance(cache, Memory):
        if cache.store_backend is None:
            return OutputCache(_MEMORY)
        return OutputCache(_MEMORY, _disk_store(cache))
    raise TypeError(
        f"cache must be 'auto', True, False, a folder path or a joblib.Memory; got "
        f"{type(cache).__name__}."
    )


def cached_outputs(cache, fingerprint, rows, compute, *, owner=None, check_input=None):
    """``compute(rows)`` through the cache that ``cache`` (a parameter value)
    names; ``fingerprint`` is a callable, evaluated only when a cache is used.

    ``owner``, a ``(module, key)`` pair where ``key`` (hashable) names what is
    read from the module, lets ``cache="auto"`` find a "not worth caching"
    decision without fingerprinting the module: a small net's 1-row call
    would otherwise spend longer checking its weights than running it. The
    decision depends on the FLOPs per row, which weights do not change, so
    it is remembered per module object, key and row format (weakly: never
    keeping the module alive). A module judged worth caching is fingerprinted
    on every call, so changed weights are still never served stale.

    ``check_input`` (an estimator, or ``None``) means ``rows`` are not yet
    checked for NaN and infinity. Without a cache, ``compute(rows,
    check_input=check_input)`` checks what it runs; with one, the rows are
    checked here, before they are hashed, and ``compute`` is not asked to
    check them again.
    """
    resolved = resolve_cache(cache)
    rows = kind_of(rows)
    uncached = compute if check_input is None else functools.partial(
        compute, check_input=check_input
    )
    if resolved is None:
        return uncached(rows.rows)
    if (
        owner is not None
        and resolved.auto
        and len(rows)
        and resolved.memory.owner_decision(owner, rows.row_format) is False
    ):
        return uncached(rows.rows)
    if check_input is not None:
        check_finite_input(check_input, rows.rows)
    return resolved.compute(fingerprint(), rows, compute, owner=owner)
