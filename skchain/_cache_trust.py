"""Whose cache folder and key these are: the trust checks of the disk cache.

A cache folder is shared state, so what is read back must be what this user
(or a team that shares a key on purpose) wrote (see :mod:`skchain._disk`):

- **Who may write.** A folder writable by every user is refused, and so is one
  writable by its group (other than the user's private group) or owned by
  another user, unless a key was named on purpose with
  ``SKCHAIN_CACHE_KEY_FILE`` (a team's shared key). Folders made here are
  ``0o700`` (``0o770`` with a team key).
- **The key** that authenticates blocks is a secret kept outside the cache
  folder (:func:`key_file`), made on first use, readable by its owner only.
"""

import functools
import os
import secrets
import stat
import tempfile
import threading
import time

__all__ = ["KEY_FILE_ENV", "check_folder", "key_file", "load_key", "make_folders"]

_TEMP_PREFIX = ".tmp-"  # also the disk store's: readers never open these

#: Environment variable naming the key file (a team's shared key).
KEY_FILE_ENV = "SKCHAIN_CACHE_KEY_FILE"
_KEY_BYTES = 32

# Permission bits and owners mean little on Windows (ACLs): there only the
# keys are checked.
_POSIX = os.name == "posix" and hasattr(os, "geteuid")


def _euid():
    return os.geteuid()


@functools.lru_cache(maxsize=64)
def _own_group(gid, euid):
    """Whether ``gid`` is the private group of user ``euid``: named after them,
    their primary group, no other members (the "user private groups" of most
    Linux distributions, whose umask 002 makes every new folder group-writable).
    Writable by that group is writable by that user only, as Debian's ssh
    agrees."""
    try:
        import grp
        import pwd

        user, group = pwd.getpwuid(euid), grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return (
        gid == user.pw_gid
        and group.gr_name == user.pw_name
        and set(group.gr_mem) <= {user.pw_name}
    )


def _group_writable(info):
    return bool(info.st_mode & 0o020) and not _own_group(info.st_gid, _euid())


# -- the key ---------------------------------------------------------------------


def key_file():
    """``(path, shared)``: the key file in use, and whether it was named on
    purpose (``SKCHAIN_CACHE_KEY_FILE``), as a team does to share a cache.

    Otherwise ``$XDG_CONFIG_HOME/skchain/cache.key``, or
    ``~/.config/skchain/cache.key``: the user's own configuration folder,
    never the cache folder, which others may read.
    """
    named = os.environ.get(KEY_FILE_ENV)
    if named:
        return os.path.abspath(os.path.expanduser(named)), True
    config = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config):  # the XDG rule: a relative value is ignored
        config = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "skchain", "cache.key"), False


def _unsafe_key(path, problem):
    return ValueError(
        f"The skchain cache key {path} {problem}: whoever can read it can plant "
        f"cached outputs, and whoever can write it can replace it. Run `chmod 600 "
        f"{path}` as its owner, or delete it (a new key is made; blocks written "
        f"with the old one are recomputed), or point {KEY_FILE_ENV} at a key of "
        "your own."
    )


def _read_key(path):
    """The key in ``path``; ``FileNotFoundError`` when there is none yet."""
    for _ in range(50):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            info = os.fstat(fd)
            if _POSIX:
                if info.st_uid != _euid():
                    raise _unsafe_key(path, f"belongs to user {info.st_uid}, not to you")
                if info.st_mode & 0o077:
                    raise _unsafe_key(
                        path, f"has mode {stat.S_IMODE(info.st_mode):#o}, open to other users"
                    )
            data = os.read(fd, 4 * _KEY_BYTES)
        finally:
            os.close(fd)
        try:
            key = bytes.fromhex(data.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            key = b""
        if len(key) == _KEY_BYTES:
            return key
        # Only the O_EXCL fallback of _create_key shows a file before its
        # bytes: wait for its writer.
        time.sleep(0.02)
    raise ValueError(
        f"The skchain cache key {path} is not {2 * _KEY_BYTES} hexadecimal digits. "
        "Delete it (a new key is made on first use; blocks written with the old one "
        f"are recomputed), or write a key there: `python -c \"import secrets; "
        f"print(secrets.token_hex({_KEY_BYTES}))\" > {path}; chmod 600 {path}`."
    )


def _create_key(path):
    """Make a key at ``path`` unless one appears there first: processes racing
    to make it all end up with the same one."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    data = (secrets.token_hex(_KEY_BYTES) + "\n").encode("ascii")
    handle, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=folder)  # mode 0o600
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        try:
            # A hard link is an exclusive creation of the whole file: the key
            # appears with its bytes, or the link fails (FileExistsError) and
            # the winner's key is used.
            os.link(temp, path)
        except FileExistsError:
            pass
        except OSError:
            # No hard links on this file system: create exclusively and write
            # (readers wait for the bytes, see _read_key).
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
    finally:
        os.remove(temp)


_KEYS = {}  # key file -> key, read once per process
_KEYS_LOCK = threading.Lock()


def load_key(path):
    with _KEYS_LOCK:
        key = _KEYS.get(path)
        if key is None:
            _check_key_folder(os.path.dirname(path))
            try:
                key = _read_key(path)
            except FileNotFoundError:
                _create_key(path)
                key = _read_key(path)
            _KEYS[path] = key
        return key


def _check_key_folder(folder):
    """Whoever can write the key's folder can swap the key for one they know."""
    if not _POSIX:
        return
    try:
        info = os.stat(folder)
    except OSError:
        return  # made by _create_key, or unreadable: opening the key reports it
    if info.st_uid not in (0, _euid()):
        raise ValueError(
            f"The folder {folder} of the skchain cache key belongs to user "
            f"{info.st_uid}: they could replace the key. Point {KEY_FILE_ENV} at a "
            "file in a folder of your own."
        )
    if (info.st_mode & 0o002 or _group_writable(info)) and not info.st_mode & stat.S_ISVTX:
        raise ValueError(
            f"The folder {folder} of the skchain cache key is writable by other users "
            f"(mode {stat.S_IMODE(info.st_mode):#o}): they could replace the key. Run "
            f"`chmod go-w {folder}`, or point {KEY_FILE_ENV} at a file in a folder of "
            "your own."
        )


# -- who may write the folder ------------------------------------------------------


def check_folder(path, shared):
    """Refuse a cache folder that someone other than the key's holders can write.

    A folder not there yet is made private on first write; one that is not a
    folder, or cannot be examined, fails at the first write, which warns.
    """
    if not _POSIX:
        return
    try:
        info = os.stat(path)
    except OSError:
        return
    if not stat.S_ISDIR(info.st_mode):
        return
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o002:
        problem = f"writable by every user (mode {mode:#o})"
    elif _group_writable(info) and not shared:
        problem = f"writable by its group (mode {mode:#o})"
    elif info.st_uid != _euid() and not shared:
        problem = f"owned by user {info.st_uid}, not by you (user {_euid()})"
    else:
        return
    raise ValueError(
        f"The cache folder {path} is {problem}: others could plant outputs there or "
        f"delete them. Run `chmod go-w {path}` as its owner, or use a folder of your "
        f"own (cache='~/.cache/skchain'). A team sharing a cache on purpose shares "
        f"its key: set {KEY_FILE_ENV} (see the user guide, 'Caching')."
    )


def make_folders(path, mode):
    """Create ``path`` and the missing folders above it with ``mode``."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            continue  # made by another process, or a file: the write says so
        if mode & 0o070:
            os.chmod(folder, mode)  # a team's group bits, whatever the umask
