"""The disk layer of the output cache: blocks of rows in a folder, shared by
processes.

:class:`_DiskStore` keeps the rows that :class:`skchain._cache.OutputCache`
computes in immutable block files under ``<location>/skchain_outputs/``, one
per computing call, each written to a temporary file and renamed into place
(:func:`os.replace`): a reader never sees half a block. A process claims the
rows it is about to compute (:mod:`skchain._claims`), so that another that
misses them at the same moment waits for their block instead of computing them
again.

A cache folder is shared state, so what is read back must be what this user
(or a team that shares a key on purpose) wrote:

- **Who may write** (:mod:`skchain._cache_trust`). A folder writable by every user is refused, and so is one
  writable by its group (other than the user's private group) or owned by
  another user, unless a key was named on purpose with
  ``SKCHAIN_CACHE_KEY_FILE`` (a team's shared key). Folders made
  here are ``0o700`` (``0o770`` with a team key).
- **Authenticated blocks.** Every block carries two keyed BLAKE2b MACs, of its
  header and row keys and of its values, bound to the model's namespace. The
  key is a secret kept outside the cache folder (:func:`key_file`), made on
  first use, readable by its owner only. A block that fails a check --
  damaged, truncated, planted by someone without the key, copied from another
  model's folder, written with another key -- is a miss: recomputed and
  rewritten, never returned. A block of an older skchain format is a quiet
  miss.
- **Crashes.** A writer killed mid-block leaves a temporary file that readers
  never open; temporary files older than an hour are removed.
"""

import hashlib
import json
import os
import secrets
import shutil
import struct
import tempfile
import threading
import time
import warnings

import numpy as np
from joblib import Memory

from ._cache_trust import (
    _TEMP_PREFIX,
    KEY_FILE_ENV,
    check_folder,
    key_file,
    load_key,
    make_folders,
)
from ._claims import Claims

_DISK_FOLDER = "skchain_outputs"
_BLOCK_FILE = "output.pkl"  # joblib's reduce_size counts folders holding this name
_MAGIC = b"SKCHOUT3"
_OLD_MAGICS = (b"SKCHOUT2",)  # unkeyed checksums (skchain <= 0.x): quiet misses
_MAC_SIZE = 32
_MAX_HEADER = 1 << 16
# A temporary file this old belongs to a writer that died: no block takes an
# hour to write.
_STALE_TEMP_SECONDS = 3600

# -- block files -------------------------------------------------------------------


class _BadBlock(Exception):
    """A block that fails its checks: corrupt, truncated, foreign, unreadable,
    unauthenticated."""


class _OldBlock(_BadBlock):
    """A block of an older skchain format: a miss, without a warning."""


def _mac(key, purpose, namespace, *parts):
    hasher = hashlib.blake2b(digest_size=_MAC_SIZE, key=key, person=purpose)
    # The namespace (fixed-size hex) binds a block to its model and output: a
    # valid block copied into another model's folder fails.
    hasher.update(namespace.encode("ascii"))
    for part in parts:
        hasher.update(part)
    return hasher.digest()


def _encode_block(keys, values, key, namespace):
    """A block file's bytes::

        magic (8) | header length (8) | header (JSON) | keys | index MAC (32) | values

    The index MAC covers everything before it; the header holds the values'
    MAC, so one read of the index tells which rows a block has, and reading
    the values verifies them too. Both are keyed with ``key``.
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
            "values_mac": _mac(key, b"skchain-values", namespace, values_bytes).hex(),
        },
        sort_keys=True,
    ).encode()
    head = _MAGIC + struct.pack("<Q", len(header)) + header
    return head + key_bytes + _mac(key, b"skchain-index", namespace, head, key_bytes) + values_bytes


def _read_exact(handle, size):
    data = handle.read(size)
    if len(data) != size:
        raise _BadBlock("truncated")
    return data


def _read_index(path, key, namespace):
    """``(keys, meta)`` of the block at ``path``, verified.

    Raises ``FileNotFoundError`` for a block that is gone (evicted), and
    :class:`_BadBlock` for one that fails a check.
    """
    try:
        with open(path, "rb") as handle:
            total = os.fstat(handle.fileno()).st_size
            magic = _read_exact(handle, len(_MAGIC))
            if magic in _OLD_MAGICS:
                raise _OldBlock("an older format")
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
                bytes.fromhex(meta["values_mac"])
            except (ValueError, KeyError, TypeError) as exc:
                raise _BadBlock("bad header") from exc
            if dtype.hasobject or rows <= 0 or key_size <= 0 or min(shape, default=1) < 0:
                raise _BadBlock("bad header")
            # Sizes come from a header not yet verified: check them against the
            # file before reading, so a forged size never allocates memory.
            if len(_MAGIC) + 8 + header_size + rows * key_size + _MAC_SIZE > total:
                raise _BadBlock("truncated")
            key_bytes = _read_exact(handle, rows * key_size)
            mac = _read_exact(handle, _MAC_SIZE)
            expected = _mac(key, b"skchain-index", namespace, magic, length, header, key_bytes)
            if not secrets.compare_digest(mac, expected):
                raise _BadBlock("index MAC mismatch")
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


def _touch(handle):
    """Mark a block as used now, for ``Memory.reduce_size``'s least recently
    used order (file systems mounted ``relatime`` or ``noatime`` would not)."""
    try:
        info = os.fstat(handle.fileno())
        target = handle.fileno() if os.utime in os.supports_fd else handle.name
        os.utime(target, ns=(time.time_ns(), info.st_mtime_ns))
    except OSError:
        pass  # a teammate's block, a read-only folder: the order is a hint


def _read_values(path, meta, key, namespace):
    """The values of a block whose index was read, verified."""
    try:
        with open(path, "rb") as handle:
            handle.seek(meta["offset"])
            data = _read_exact(handle, meta["values_size"])
            if handle.read(1):
                raise _BadBlock("wrong size")
            _touch(handle)
    except (FileNotFoundError, _BadBlock):
        raise
    except OSError as exc:
        raise _BadBlock(f"unreadable: {exc}") from exc
    expected = _mac(key, b"skchain-values", namespace, data).hex()
    if not secrets.compare_digest(expected, meta["values_mac"]):
        raise _BadBlock("values MAC mismatch")
    values = np.frombuffer(data, dtype=np.dtype(meta["dtype"]))
    return values.reshape(meta["rows"], *meta["shape"])


def _remove_stale_temps(folder):
    """Remove the temporary files of writers that died in ``folder``."""
    try:
        names = [name for name in os.listdir(folder) if name.startswith(_TEMP_PREFIX)]
    except OSError:
        return
    deadline = time.time() - _STALE_TEMP_SECONDS
    for name in names:
        path = os.path.join(folder, name)
        try:
            if os.stat(path).st_mtime < deadline:
                os.remove(path)
        except OSError:
            pass  # renamed into place or removed meanwhile


class _DiskStore:
    """Blocks of rows in a folder, shared by processes.

    Layout: ``<location>/skchain_outputs/m<namespace>/<32 hex>/output.pkl``,
    one folder per block named by the digest of its row keys, so two processes
    computing the same rows write the same block. The block folder names look
    like joblib's item folders, so ``Memory.reduce_size`` evicts them by last
    use like joblib's own items, and ``Memory.clear`` removes them.
    Each process indexes the blocks it has not seen yet when it misses a row.

    Parameters
    ----------
    memory : joblib.Memory
        With a file-system store.
    key : bytes
        The MAC key of the blocks.
    shared : bool
        A team's key: folders and files made here are readable (and folders
        writable) by the group.
    """

    def __init__(self, memory, key, shared=False):
        backend = memory.store_backend
        _check_backend(backend)
        self.root = os.path.join(backend.location, _DISK_FOLDER)
        self._key = key
        self._folder_mode = 0o770 if shared else 0o700
        self._file_mode = 0o640 if shared else None
        self._index = {}  # namespace -> {row key: (block name, position)}
        self._meta = {}  # (namespace, block name) -> verified header
        self._lock = threading.Lock()
        self.claims = Claims(self.root, self._folder_mode, self._file_mode or 0o600)

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
            path = self._path(namespace, name)
            try:
                keys, meta = _read_index(path, self._key, namespace)
            except FileNotFoundError:
                # Being written, evicted, or its writer died mid-block.
                _remove_stale_temps(os.path.dirname(path))
                continue
            except _OldBlock:
                self._discard(namespace, name, remove=True)
                continue
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
                    meta = self._meta[namespace, block]
                    values = _read_values(path, meta, self._key, namespace)
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
        data = _encode_block(keys, values, self._key, namespace)
        try:
            make_folders(folder, self._folder_mode)
            # A temporary file renamed into place: readers in other processes
            # see the old block, or none, or the whole new one.
            handle, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=folder)  # 0o600
            try:
                if self._file_mode is not None:
                    os.chmod(temp, self._file_mode)
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
        _remove_stale_temps(folder)
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
    meta["offset"] = start + header_size + meta["rows"] * meta["key_size"] + _MAC_SIZE
    meta["values_size"] = len(data) - meta["offset"]
    return meta


def memory_at(path):
    """The :class:`joblib.Memory` of ``cache=<path>`` (``~`` expanded); the
    folders it needs are made here, private (see :func:`make_folders`),
    before joblib makes them with the umask's permissions."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    try:
        make_folders(os.path.join(path, "joblib"), 0o770 if key_file()[1] else 0o700)
    except OSError:
        pass  # joblib reports it as it always has
    return Memory(location=path, verbose=0)


def _check_backend(backend):
    from joblib._store_backends import FileSystemStoreBackend

    if not isinstance(backend, FileSystemStoreBackend):
        raise TypeError(
            f"cache=Memory(...) needs joblib's file-system store, got "
            f"{type(backend).__name__}; pass a folder path instead."
        )


_DISKS = {}  # (store location, key file) -> _DiskStore
_DISKS_LOCK = threading.Lock()


def _disk_store(memory):
    """The disk store of ``memory`` (a :class:`joblib.Memory` with a location),
    or ``None`` (with a warning) when no key can be read or made.

    Raises ``ValueError`` for a folder that others can write, or a key file
    that others can read (checked on every call: a ``stat`` per folder).
    """
    backend = memory.store_backend
    _check_backend(backend)
    path, shared = key_file()
    location = os.path.abspath(backend.location)
    given = os.path.abspath(os.fspath(memory.location))
    for folder in dict.fromkeys([given, location, os.path.join(location, _DISK_FOLDER)]):
        check_folder(folder, shared)
    with _DISKS_LOCK:
        store = _DISKS.get((location, path))
        if store is not None:
            return store
        try:
            key = load_key(path)
        except OSError as exc:
            warnings.warn(
                f"skchain could not read or create its cache key {path} ({exc}); "
                f"outputs are kept in memory only, not in {location}. Set "
                f"{KEY_FILE_ENV} or XDG_CONFIG_HOME to a folder you can write.",
                UserWarning,
                stacklevel=4,
            )
            return None
        store = _DISKS[location, path] = _DiskStore(memory, key, shared)
        return store
