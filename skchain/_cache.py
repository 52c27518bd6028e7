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
   block. Every block carries BLAKE2b checksums of its index and of its values,
   verified on every read: a corrupt, truncated, foreign or unreadable block is
   a miss -- recomputed, rewritten, one :class:`UserWarning` -- never a wrong
   value. Blocks sit where joblib's ``Memory.clear()`` and
   ``Memory.reduce_size()`` manage them with joblib's own items.
3. The policy (``cache="auto"``, the wrappers' default): a model's rows are kept
   when the model costs far more per row than keeping a row does, counted in
   FLOPs, not timed (:func:`skchain._flops.worth_caching`).
"""

import functools
import hashlib
import json
import os
import shutil
import struct
import tempfile
import threading
import warnings
import weakref
from collections import OrderedDict

import numpy as np
from joblib import Memory

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

_DECISIONS_KEPT = 4096
_DECISIONS_PER_MODULE = 64

_DISK_FOLDER = "skchain_outputs"
_BLOCK_FILE = "output.pkl"  # joblib's reduce_size counts folders holding this name
_MAGIC = b"SKCHOUT2"
_CHECKSUM_SIZE = 32
_MAX_HEADER = 1 << 16


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


# -- rows on disk ----------------------------------------------------------------


class _BadBlock(Exception):
    """A block that fails its checks: corrupt, truncated, foreign, unreadable."""


def _checksum(*parts):
    hasher = hashlib.blake2b(digest_size=_CHECKSUM_SIZE)
    for part in parts:
        hasher.update(part)
    return hasher.digest()


def _encode_block(keys, values):
    """A block file's bytes::

        magic (8) | header length (8) | header (JSON) | keys | index checksum (32) | values

    The index checksum covers everything before it; the header holds the
    values' checksum, so one read of the index tells which rows a block has,
    and reading the values verifies them too.
    """
    values = np.ascontiguousarray(values)
    key_bytes = b"".join(keys)
    values_bytes = values.tobytes()
    header = json.dumps(
        {
            "rows": len(keys),
            "key_size": len(keys[0]),
            "dtype": values.dtype.str,
            "shape": list(values.shape[1:]),
            "values_checksum": _checksum(values_bytes).hex(),
        },
        sort_keys=True,
    ).encode()
    head = _MAGIC + struct.pack("<Q", len(header)) + header
    return head + key_bytes + _checksum(head, key_bytes) + values_bytes


def _read_exact(handle, size):
    data = handle.read(size)
    if len(data) != size:
        raise _BadBlock("truncated")
    return data


def _read_index(path):
    """``(keys, meta)`` of the block at ``path``, verified.

    Raises ``FileNotFoundError`` for a block that is gone (evicted), and
    :class:`_BadBlock` for one that fails a check.
    """
    try:
        with open(path, "rb") as handle:
            total = os.fstat(handle.fileno()).st_size
            magic = _read_exact(handle, len(_MAGIC))
            if magic != _MAGIC:
                raise _BadBlock("not a skchain block")
            length = _read_exact(handle, 8)
            (header_size,) = struct.unpack("<Q", length)
            if header_size > _MAX_HEADER:
                raise _BadBlock("bad header")
            header = _read_exact(handle, header_size)
            try:
                meta = json.loads(header)
                rows, key_size = int(meta["rows"]), int(meta["key_size"])
                dtype = np.dtype(meta["dtype"])
                shape = tuple(int(s) for s in meta["shape"])
                bytes.fromhex(meta["values_checksum"])
            except (ValueError, KeyError, TypeError) as exc:
                raise _BadBlock("bad header") from exc
            if dtype.hasobject or rows <= 0 or key_size <= 0 or min(shape, default=1) < 0:
                raise _BadBlock("bad header")
            # Sizes come from a header not yet verified: check them against the
            # file before reading, so a forged size never allocates memory.
            if len(_MAGIC) + 8 + header_size + rows * key_size + _CHECKSUM_SIZE > total:
                raise _BadBlock("truncated")
            key_bytes = _read_exact(handle, rows * key_size)
            checksum = _read_exact(handle, _CHECKSUM_SIZE)
            if checksum != _checksum(magic, length, header, key_bytes):
                raise _BadBlock("index checksum mismatch")
            meta["offset"] = handle.tell()
            meta["values_size"] = rows * int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if total != meta["offset"] + meta["values_size"]:
                raise _BadBlock("wrong size")
    except (FileNotFoundError, _BadBlock):
        raise
    except (OSError, struct.error) as exc:
        raise _BadBlock(f"unreadable: {exc}") from exc
    keys = [key_bytes[i : i + key_size] for i in range(0, len(key_bytes), key_size)]
    return keys, meta


def _read_values(path, meta):
    """The values of a block whose index was read, verified."""
    try:
        with open(path, "rb") as handle:
            handle.seek(meta["offset"])
            data = _read_exact(handle, meta["values_size"])
            if handle.read(1):
                raise _BadBlock("wrong size")
    except (FileNotFoundError, _BadBlock):
        raise
    except OSError as exc:
        raise _BadBlock(f"unreadable: {exc}") from exc
    if _checksum(data).hex() != meta["values_checksum"]:
        raise _BadBlock("values checksum mismatch")
    values = np.frombuffer(data, dtype=np.dtype(meta["dtype"]))
    return values.reshape(meta["rows"], *meta["shape"])


class _DiskStore:
    """Blocks of rows in a folder, shared by processes.

    Layout: ``<location>/skchain_outputs/m<namespace>/<32 hex>/output.pkl``,
    one folder per block named by the digest of its row keys, so two processes
    computing the same rows write the same block. The block folder names look
    like joblib's item folders, so ``Memory.reduce_size`` evicts them by last
    access like joblib's own items, and ``Memory.clear`` removes them.
    Each process indexes the blocks it has not seen yet when it misses a row.
    """

    def __init__(self, memory):
        from joblib._store_backends import FileSystemStoreBackend

        backend = memory.store_backend
        if not isinstance(backend, FileSystemStoreBackend):
            raise TypeError(
                f"cache=Memory(...) needs joblib's file-system store, got "
                f"{type(backend).__name__}; pass a folder path instead."
            )
        self.root = os.path.join(backend.location, _DISK_FOLDER)
        self._index = {}  # namespace -> {row key: (block name, position)}
        self._meta = {}  # (namespace, block name) -> verified header
        self._lock = threading.Lock()

    @staticmethod
    def _folder(namespace):
        # Not 32 hex digits: joblib's reduce_size must see only the blocks.
        return "m" + namespace

    def _path(self, namespace, block):
        return os.path.join(self.root, self._folder(namespace), block, _BLOCK_FILE)

    def _discard(self, namespace, block, remove):
        """Forget a block; delete its file too when it is bad, so that the
        rows recomputed in its place are written afresh."""
        index = self._index.get(namespace, {})
        for key in [k for k, (name, _) in index.items() if name == block]:
            del index[key]
        self._meta.pop((namespace, block), None)
        if remove:
            path = self._path(namespace, block)
            try:
                os.remove(path)
            except IsADirectoryError:
                shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass

    def _sync(self, namespace):
        """Index the blocks written since this process last looked; returns
        the number of bad blocks found."""
        try:
            names = os.listdir(os.path.join(self.root, self._folder(namespace)))
        except OSError:
            return 0
        index = self._index.setdefault(namespace, {})
        bad = 0
        for name in names:
            if (namespace, name) in self._meta:
                continue
            try:
                keys, meta = _read_index(self._path(namespace, name))
            except FileNotFoundError:
                continue  # being written, or evicted
            except _BadBlock:
                bad += 1
                self._discard(namespace, name, remove=True)
                continue
            self._meta[namespace, name] = meta
            for position, key in enumerate(keys):
                index.setdefault(key, (name, position))
        return bad

    def lookup(self, namespace, keys):
        """``(found, missing, bad)``: as :meth:`_MemoryStore.lookup`, plus the
        number of blocks that failed their checks (their rows are missing)."""
        bad = 0
        with self._lock:
            index = self._index.get(namespace, {})
            if any(key not in index for key in keys):
                bad += self._sync(namespace)
                index = self._index.get(namespace, {})
            groups = {}
            for i, key in enumerate(keys):
                location = index.get(key)
                if location is not None:
                    groups.setdefault(location[0], []).append((i, location[1]))
            found, hit = [], np.zeros(len(keys), dtype=bool)
            for block, pairs in groups.items():
                try:
                    path = self._path(namespace, block)
                    values = _read_values(path, self._meta[namespace, block])
                except FileNotFoundError:
                    self._discard(namespace, block, remove=False)
                    continue
                except _BadBlock:
                    bad += 1
                    self._discard(namespace, block, remove=True)
                    continue
                where = np.fromiter((i for i, _ in pairs), dtype=np.intp, count=len(pairs))
                rows = np.fromiter((p for _, p in pairs), dtype=np.intp, count=len(pairs))
                found.append((where, values[rows], np.arange(len(rows))))
                hit[where] = True
        return found, np.flatnonzero(~hit), bad

    def put(self, namespace, keys, values):
        """Write a block; returns False when it could not be written."""
        if not keys or values.dtype.hasobject:
            return True
        block = hashlib.blake2b(b"".join(keys), digest_size=16).hexdigest()
        folder = os.path.dirname(self._path(namespace, block))
        data = _encode_block(keys, values)
        try:
            os.makedirs(folder, exist_ok=True)
            # A temporary file renamed into place: readers in other processes
            # see the old block, or none, or the whole new one.
            handle, temp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                os.replace(temp, os.path.join(folder, _BLOCK_FILE))
            except BaseException:
                try:
                    os.remove(temp)
                except OSError:
                    pass
                raise
        except OSError:
            return False
        with self._lock:
            meta = _index_of_encoded(data)
            self._meta[namespace, block] = meta
            index = self._index.setdefault(namespace, {})
            for position, key in enumerate(keys):
                index.setdefault(key, (block, position))
        return True


def _index_of_encoded(data):
    """The header of a block this process has just encoded (no checks needed)."""
    (header_size,) = struct.unpack("<Q", data[len(_MAGIC) : len(_MAGIC) + 8])
    start = len(_MAGIC) + 8
    meta = json.loads(data[start : start + header_size])
    meta["offset"] = start + header_size + meta["rows"] * meta["key_size"] + _CHECKSUM_SIZE
    meta["values_size"] = len(data) - meta["offset"]
    return meta


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
        self.memory.put(namespace, keys, values)

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
        if len(missing) and self.disk is not None:
            from_disk, still, bad = self.disk.lookup(namespace, [distinct[j] for j in missing])
            for where, values, positions in from_disk:
                where = missing[where]
                parts.append((where, values, positions))
                self.memory.put(namespace, [distinct[j] for j in where], values[positions])
            missing = missing[still]
            if bad:
                warnings.warn(
                    f"skchain found {bad} corrupt or unreadable cache block(s) in "
                    f"{self.disk.root}; their rows were recomputed and written again.",
                    UserWarning,
                    stacklevel=3,
                )

        if len(missing):
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
            missing_keys = distinct if whole else [distinct[j] for j in missing]
            self._store(namespace, missing_keys, computed.copy())
            if whole and inverse is None:
                return computed  # fresh from the model: the cache holds its own copy
            parts.append((missing, computed, np.arange(len(missing))))

        values = parts[0][1]
        unique_out = np.empty((len(distinct), *values.shape[1:]), dtype=values.dtype)
        for where, values, positions in parts:
            unique_out[where] = values[positions]
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
        cache = Memory(location=os.fspath(cache), verbose=0)
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
