"""Claims on the rows being computed for a disk cache, shared by processes.

Two tasks of a search on a cluster (``GridSearchCV``'s (candidate, fold)
tasks, say) often miss the same rows at the same moment: each would run the
model on them and write the same block. A process that is about to compute
rows for a disk cache *claims* them first: a file in
``<location>/skchain_outputs/claims/m<namespace>/`` that lists their keys and
that the process holds an exclusive :func:`fcntl.flock` on until their block is
written. Another process that misses rows computes the ones no one has
claimed, then waits for the claims that hold the others and reads their block.

- **No stale claims.** The kernel drops a lock when its process exits, however
  it exits: a claim file that can be locked belongs to a finished or dead
  process and is removed by the next process that looks. Nothing is timed.
- **No deadlock.** A process waits only after its own claim is released.
- **Claims are hints.** Values come only from verified blocks
  (:mod:`skchain._disk`): a claim that is unreadable or whose block never
  comes (its writer failed) costs a recomputation, never a wrong row.
- Listing claims and making one happen under a short exclusive lock of the
  namespace's ``.lock`` file, so two processes never claim the same row.
- Where :mod:`fcntl` is missing (Windows) nothing is claimed: processes may
  compute the same rows, as they would without claims.
"""

import os
import struct
import tempfile

import numpy as np

from ._cache_trust import make_folders

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["Claim", "Claims"]

_CLAIMS_FOLDER = "claims"
_SUFFIX = ".claim"
_MAGIC = b"SKCLAIM1"
_LOCK_FILE = ".lock"


class Claim:
    """The outcome of :meth:`Claims.claim` for some rows.

    Attributes
    ----------
    others : ndarray of bool
        Per row: claimed by another live process (or thread), so not this
        one's to compute.
    """

    def __init__(self, n, own=None, others=None, held=()):
        self.others = np.zeros(n, dtype=bool) if others is None else others
        self._own = own  # (path, fd) of this process's claim file
        self._held = list(held)  # fds of the claims that hold ``others``

    def release(self):
        """Drop this process's claim (after its block is written): the
        processes waiting for its rows go on."""
        if self._own is None:
            return
        path, fd = self._own
        self._own = None
        try:
            os.remove(path)  # first: a process that opens it later sees none
        except OSError:
            pass
        os.close(fd)  # drops the lock

    def wait(self):
        """Block until every claim that holds one of :attr:`others` is
        released (their blocks are then written, or their writers failed)."""
        while self._held:
            fd = self._held.pop()
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
            finally:
                os.close(fd)

    def close(self):
        """Release, and stop waiting for others (an error in between)."""
        self.release()
        while self._held:
            os.close(self._held.pop())


class Claims:
    """The claims of one disk cache (see the module's docstring).

    Parameters
    ----------
    root : str
        The disk store's ``skchain_outputs`` folder.
    folder_mode, file_mode : int
        Of the folders and files made here (the group's bits with a team key).
    """

    def __init__(self, root, folder_mode=0o700, file_mode=0o600):
        self.root = os.path.join(root, _CLAIMS_FOLDER)
        self._folder_mode = folder_mode
        self._file_mode = file_mode

    def claim(self, namespace, keys):
        """Claim the rows of ``keys`` that no one else is computing.

        Returns a :class:`Claim` whose :attr:`~Claim.others` marks the rows
        claimed elsewhere; the caller computes the rest, writes their block,
        calls :meth:`Claim.release`, then :meth:`Claim.wait` before looking
        up the others. Never raises for the folder (a claim that cannot be
        made claims nothing and waits for nothing).
        """
        size = len(keys[0]) if keys else 0
        if fcntl is None or not size or any(len(key) != size for key in keys):
            return Claim(len(keys))
        folder = os.path.join(self.root, "m" + namespace)
        try:
            make_folders(folder, self._folder_mode)
            # Writable: flock over NFS is a POSIX write lock.
            lock = os.open(os.path.join(folder, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return Claim(len(keys))
        if self._file_mode != 0o600:
            try:
                os.fchmod(lock, 0o660)  # a team's members lock it too
            except OSError:
                pass  # made by another member, who set the same
        held = []
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            live = self._live(folder, size)
            try:
                # Fixed-size keys as bytes strings: numpy compares them whole
                # (trailing zero bytes are padding of the same length).
                wanted = np.array(keys, dtype=f"S{size}")
                others = np.zeros(len(keys), dtype=bool)
                while live:
                    fd, claimed = live.pop()
                    overlap = np.isin(wanted, claimed)
                    if overlap.any():
                        held.append(fd)
                        others |= overlap
                    else:
                        os.close(fd)
                mine = [key for key, other in zip(keys, others) if not other]
                try:
                    own = self._make(folder, size, mine) if mine else None
                except OSError:
                    own = None  # a full disk, say: computed unclaimed
            except BaseException:
                for fd, _ in live:
                    os.close(fd)
                for fd in held:
                    os.close(fd)
                raise
            return Claim(len(keys), own, others, held)
        finally:
            os.close(lock)  # drops the namespace's lock

    def _live(self, folder, size):
        """``[(fd, keys)]`` of the live claims in ``folder`` (each fd open);
        removes the files of finished and dead ones."""
        try:
            names = [name for name in os.listdir(folder) if name.endswith(_SUFFIX)]
        except OSError:
            return []
        live = []
        for name in names:
            path = os.path.join(folder, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue  # released meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                live.append((fd, _read_keys(fd, size)))
                continue
            except OSError:
                os.close(fd)
                continue
            # Lockable: its process released it or died before releasing.
            try:
                os.remove(path)
            except OSError:
                pass
            os.close(fd)
        return live

    def _make(self, folder, size, keys):
        """A claim file for ``keys``, locked before any process can list it."""
        fd, path = tempfile.mkstemp(suffix=_SUFFIX, dir=folder)  # 0o600
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._file_mode != 0o600:
                os.fchmod(fd, self._file_mode)
            data = memoryview(_MAGIC + struct.pack("<I", size) + b"".join(keys))
            while data:
                data = data[os.write(fd, data) :]
        except BaseException:
            os.remove(path)
            os.close(fd)
            raise
        return path, fd


def _read_keys(fd, size):
    """The keys a claim lists (an array of ``S<size>``); none for one that is
    damaged or of another key size (it is then not waited for)."""
    none = np.empty(0, dtype=f"S{size}")
    try:
        parts, offset = [], 0
        while part := os.pread(fd, 1 << 24, offset):
            parts.append(part)
            offset += len(part)
        data = b"".join(parts)
    except OSError:
        return none
    head = len(_MAGIC) + 4
    if data[: len(_MAGIC)] != _MAGIC or len(data) < head:
        return none
    (claimed_size,) = struct.unpack("<I", data[len(_MAGIC) : head])
    if claimed_size != size or (len(data) - head) % size:
        return none
    return np.frombuffer(data, dtype=f"S{size}", offset=head)
