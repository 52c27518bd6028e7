"""The disk layer of the output cache: blocks of rows in a folder, shared by
processes.

:class:`_DiskStore` keeps the rows that :class:`skchain._cache.OutputCache`
computes in immutable block files under ``<location>/skchain_outputs/``, one
per computing call, each written to a temporary file and renamed into place
(:func:`os.replace`): several processes share rows without locks, and a reader
never sees half a block. Every block is verified on every read; one that fails
a check is a miss, never a value.
"""

import hashlib
import json
import os
import shutil
import struct
import tempfile
import threading

import numpy as np

_DISK_FOLDER = "skchain_outputs"
_BLOCK_FILE = "output.pkl"  # joblib's reduce_size counts folders holding this name
_MAGIC = b"SKCHOUT2"
_CHECKSUM_SIZE = 32
_MAX_HEADER = 1 << 16


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


_DISKS = {}
_DISKS_LOCK = threading.Lock()


def _disk_store(memory):
    location = os.path.abspath(memory.store_backend.location)
    with _DISKS_LOCK:
        store = _DISKS.get(location)
        if store is None:
            store = _DISKS[location] = _DiskStore(memory)
        return store
