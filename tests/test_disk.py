"""The disk layer of the output cache (skchain/_disk.py): who may write a cache
folder, the key that authenticates its blocks, concurrent writers, writers
killed mid-block, and bounding the folder's size.

The damaged-block matrix read by a fresh process is in tests/test_cache.py
(``_CORRUPTIONS``); the unsafe folders and keys are also in the bad-input
matrix (tests/test_bad_inputs.py).
"""

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from pathlib import Path

import _disk_forgery
import numpy as np
import pytest
import torch
from joblib import Memory
from torch import nn

from skchain import NeuralTransformer, _cache, _cache_trust, _claims, _disk
from skchain._cache import _MemoryStore
from skchain._runner import run_module

posix_only = pytest.mark.skipif(not _cache_trust._POSIX, reason="POSIX permissions and owners")


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch, tmp_path):
    """Empty in-process stores, and a key folder of this test's own (inherited
    by the subprocesses it starts)."""
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    monkeypatch.setattr(_disk, "_DISKS", {})
    monkeypatch.setattr(_cache_trust, "_KEYS", {})
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(_cache_trust.KEY_FILE_ENV, raising=False)


def new_process(monkeypatch):
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    monkeypatch.setattr(_disk, "_DISKS", {})
    monkeypatch.setattr(_cache_trust, "_KEYS", {})


@pytest.fixture(scope="module")
def X():
    return np.random.RandomState(0).normal(size=(60, 8)).astype(np.float32)


def pretrained(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


_FITTED = weakref.WeakKeyDictionary()


def fitted(module):
    """A ``NeuralTransformer`` of ``module`` fitted once, without the cache
    (the probe of ``fit`` would write a block of its own)."""
    nt = _FITTED.get(module)
    if nt is None:
        nt = NeuralTransformer(module, output="logits", cache=False)
        nt = _FITTED[module] = nt.fit(np.zeros((1, 8), np.float32))
    return nt


def transform(module, folder, X):
    """``transform(X)`` with ``cache=folder``: one block of ``X``'s rows."""
    return fitted(module).set_params(cache=folder).transform(X)


class Counter:
    """Rows through ``module``'s forward from now on (its fit done before)."""

    def __init__(self, module):
        fitted(module)
        self.rows = 0
        module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.rows += args[0].shape[0]


def blocks(folder):
    return sorted(folder.rglob("output.pkl"))


def another_owner(path, monkeypatch):
    """Make ``path`` belong to another user: really (``chown``) when the tests
    run as root, else by making this process look like another user to the
    checks. Either way the folder's owner differs from the user checking it."""
    if os.geteuid() == 0:
        os.chown(path, 4242, 4242)
        assert os.stat(path).st_uid != os.geteuid()
    else:
        euid = os.geteuid()
        monkeypatch.setattr(_disk, "_euid", lambda: euid + 1)


def another_group(path, monkeypatch):
    """Give ``path`` a group with other members than this user (the user's
    private group is one only they are in: writable by it is accepted)."""
    if os.geteuid() == 0:
        os.chown(path, -1, 4242)
    else:
        monkeypatch.setattr(_disk, "_own_group", lambda gid, euid: False)


# -- who may write the folder ------------------------------------------------------


@posix_only
def test_folders_and_files_made_here_are_private(X, tmp_path):
    folder = tmp_path / "new" / "cache"
    out = transform(pretrained(), folder, X)
    np.testing.assert_allclose(out, run_module(pretrained(), X), rtol=1e-5, atol=1e-6)
    made = [tmp_path / "new", folder, folder / "joblib"]
    made += [p for p in (folder / "joblib").rglob("*") if p.is_dir()]
    # new, cache, joblib, skchain_outputs, m<namespace>, <block>, and the
    # claims' claims, m<namespace>
    assert len(made) == 8
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in made} == {p: 0o700 for p in made}
    (block,) = blocks(folder)
    assert stat.S_IMODE(block.stat().st_mode) == 0o600
    # The claim was released: only the claims' lock file is left, private.
    (lock,) = [p for p in (folder / "joblib" / "skchain_outputs" / "claims").rglob("*")
               if p.is_file()]
    assert lock.name == ".lock" and stat.S_IMODE(lock.stat().st_mode) == 0o600
    key, _ = _cache_trust.key_file()
    assert key == str(tmp_path / "config" / "skchain" / "cache.key")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(key)).st_mode) == 0o700
    assert not any(p.name == "cache.key" for p in folder.rglob("*"))


@posix_only
@pytest.mark.parametrize("which", ["location", "joblib", "skchain_outputs"])
@pytest.mark.parametrize("mode,problem", [(0o777, "writable by every user"),
                                          (0o775, "writable by its group")])
@pytest.mark.parametrize("as_memory", [False, True])
def test_a_folder_others_can_write_is_refused(X, tmp_path, monkeypatch, which, mode, problem,
                                              as_memory):
    folder = tmp_path / "cache"
    module = pretrained()
    transform(module, folder, X)  # made private: accepted
    path = {"location": folder, "joblib": folder / "joblib",
            "skchain_outputs": folder / "joblib" / "skchain_outputs"}[which]
    os.chmod(path, mode)
    another_group(path, monkeypatch)
    cache = Memory(str(folder), verbose=0) if as_memory else folder
    with pytest.raises(ValueError, match=problem) as excinfo:
        NeuralTransformer(module, output="logits", cache=cache).fit(X[:1]).transform(X)
    message = str(excinfo.value)
    assert str(path) in message and f"chmod go-w {path}" in message
    assert "folder of your own" in message


@posix_only
def test_a_folder_writable_by_your_private_group_is_accepted(X, tmp_path, monkeypatch):
    """Most Linux distributions give each user a group of their own and umask
    002: every folder they make is group-writable, by them only."""
    folder = tmp_path / "cache"
    folder.mkdir()
    os.chmod(folder, 0o775)
    gid = folder.stat().st_gid
    if not _cache_trust._own_group(gid, os.geteuid()):
        # Not so here: say it is (the rule itself is checked below).
        monkeypatch.setattr(_disk, "_own_group", lambda g, euid: g == gid)
    module = pretrained()
    np.testing.assert_allclose(transform(module, folder, X), run_module(module, X),
                               rtol=1e-5, atol=1e-6)
    assert len(blocks(folder)) == 1


@posix_only
def test_a_private_group_is_named_after_its_only_user():
    import grp
    import pwd

    me = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(me.pw_gid)
    assert _cache_trust._own_group(me.pw_gid, os.geteuid()) == (
        group.gr_name == me.pw_name and set(group.gr_mem) <= {me.pw_name}
    )
    others = [g for g in grp.getgrall() if g.gr_gid != me.pw_gid]
    assert not any(_cache_trust._own_group(g.gr_gid, os.geteuid()) for g in others)


@posix_only
def test_a_folder_of_another_user_is_refused(X, tmp_path, monkeypatch):
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    another_owner(folder, monkeypatch)
    with pytest.raises(ValueError, match=r"owned by user \d+, not by you") as excinfo:
        transform(pretrained(), folder, X)
    assert str(folder) in str(excinfo.value)
    assert blocks(folder) == []


@posix_only
def test_a_private_folder_in_the_sticky_tmp_is_accepted(X):
    tmp = tempfile.gettempdir()
    mode = os.stat(tmp).st_mode
    if not (mode & stat.S_ISVTX and mode & 0o002):
        pytest.skip(f"{tmp} is not a sticky world-writable folder here")
    with tempfile.TemporaryDirectory() as folder:  # made 0o700 by tempfile
        module = pretrained()
        out = transform(module, folder, X)
        np.testing.assert_allclose(out, run_module(module, X), rtol=1e-5, atol=1e-6)
        assert len(blocks(Path(folder))) == 1


@posix_only
def test_a_team_key_allows_a_group_folder_never_a_world_writable_one(X, tmp_path, monkeypatch):
    key = tmp_path / "team.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    monkeypatch.setenv(_cache_trust.KEY_FILE_ENV, str(key))
    assert _cache_trust.key_file() == (str(key), True)
    folder = tmp_path / "team"
    module = pretrained()
    out = transform(module, folder, X)
    made = [p for p in folder.rglob("*") if p.is_dir()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in made} == {0o770}
    assert {stat.S_IMODE(p.stat().st_mode) for p in blocks(folder)} == {0o640}

    os.chmod(folder, 0o2770)  # a teammate's group folder
    if os.geteuid() == 0:  # else the key itself would look foreign too
        another_owner(folder, monkeypatch)
    new_process(monkeypatch)
    counter = Counter(module)
    np.testing.assert_array_equal(transform(module, folder, X), out)
    assert counter.rows == 0  # read back with the team's key

    os.chmod(folder, 0o777)
    with pytest.raises(ValueError, match="writable by every user"):
        transform(module, folder, X)


# -- the key -----------------------------------------------------------------------


@posix_only
@pytest.mark.parametrize("problem", ["mode 0o644", "mode 0o660", "another owner"])
def test_a_key_others_can_read_is_refused(X, tmp_path, monkeypatch, problem):
    path, _ = _cache_trust.key_file()
    module = pretrained()
    transform(module, tmp_path / "cache", X)  # makes the key
    if problem == "another owner":
        another_owner(path, monkeypatch)
        if os.geteuid() != 0:
            monkeypatch.setattr(_disk, "_check_key_folder", lambda folder: None)
        match = r"belongs to user \d+"
    else:
        os.chmod(path, int(problem[-5:], 8))
        match = f"has mode {problem[-5:]}, open to other users"
    new_process(monkeypatch)
    with pytest.raises(ValueError, match=match) as excinfo:
        transform(module, tmp_path / "cache", X)
    assert path in str(excinfo.value) and f"chmod 600 {path}" in str(excinfo.value)


@posix_only
def test_a_key_in_a_folder_others_can_write_is_refused(X, tmp_path, monkeypatch):
    path, _ = _cache_trust.key_file()
    transform(pretrained(), tmp_path / "cache", X)
    os.chmod(os.path.dirname(path), 0o777)
    new_process(monkeypatch)
    with pytest.raises(ValueError, match="could replace the key"):
        transform(pretrained(), tmp_path / "cache", X)


def test_a_key_file_that_is_not_a_key_is_a_clear_error(X, tmp_path, monkeypatch):
    path = tmp_path / "my.key"
    path.write_text("not a key\n")
    path.chmod(0o600)
    monkeypatch.setenv(_cache_trust.KEY_FILE_ENV, str(path))
    monkeypatch.setattr(_disk.time, "sleep", lambda seconds: None)
    with pytest.raises(ValueError, match="is not 64 hexadecimal digits") as excinfo:
        transform(pretrained(), tmp_path / "cache", X)
    assert "secrets.token_hex(32)" in str(excinfo.value)


def test_no_key_folder_means_memory_only_with_a_warning(X, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "a-file"))
    module = pretrained()
    expected = run_module(module, X)
    nt = NeuralTransformer(module, output="logits", cache=False).fit(X[:1])
    nt.set_params(cache=tmp_path / "cache")
    counter = Counter(module)
    with pytest.warns(UserWarning, match="could not read or create its cache key") as caught:
        out = nt.transform(X)
    assert str(tmp_path / "a-file") in str(caught[0].message)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert blocks(tmp_path / "cache") == []
    with pytest.warns(UserWarning, match="could not read or create"):
        np.testing.assert_array_equal(nt.transform(X), out)  # kept in memory
    assert counter.rows == len(X)


_KEY_RACER = """
import os, sys, time
from skchain import _cache_trust
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.001)
print(_cache_trust.load_key(_cache_trust.key_file()[0]).hex())
"""


def test_racing_processes_make_one_key(tmp_path):
    go = tmp_path / "go"
    racers = [
        subprocess.Popen([sys.executable, "-c", _KEY_RACER, str(go)], stdout=subprocess.PIPE,
                         text=True)
        for _ in range(3)
    ]
    assert [racer.stdout.readline() for racer in racers] == ["ready\n"] * 3
    go.touch()  # all three are waiting: they race
    keys = [racer.communicate(timeout=120)[0].strip() for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0, 0]
    path, _ = _cache_trust.key_file()
    with open(path) as handle:
        assert keys == [handle.read().strip()] * 3
    assert len(keys[0]) == 64
    assert [p.name for p in (tmp_path / "config" / "skchain").iterdir()] == ["cache.key"]


def test_without_hard_links_the_key_is_created_exclusively(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(_disk.os, "link", no_links)
    path, _ = _cache_trust.key_file()
    key = _cache_trust.load_key(path)
    assert len(key) == 32
    if _cache_trust._POSIX:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    monkeypatch.setattr(_cache_trust, "_KEYS", {})
    assert _cache_trust.load_key(path) == key
    assert os.listdir(os.path.dirname(path)) == ["cache.key"]


# -- planted, foreign and old blocks ----------------------------------------------


def test_a_planted_block_is_detected_recomputed_and_rewritten(X, tmp_path, monkeypatch):
    """What the issue tried: a block's values doubled and both checksums
    recomputed (all one can do without the key) were returned as outputs."""
    module = pretrained()
    expected = run_module(module, X)
    transform(module, tmp_path, X)
    (block,) = blocks(tmp_path)
    _disk_forgery.plant(block)
    planted = _disk_forgery.parse_block(block)[3]
    assert np.abs(planted - expected).max() > 0.1  # what would be served

    new_process(monkeypatch)
    counter = Counter(module)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = transform(module, tmp_path, X)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert counter.rows == len(X)
    assert [str(w.message) for w in caught if w.category is UserWarning] == [
        f"skchain found 1 corrupt or unreadable cache block(s) in "
        f"{tmp_path / 'joblib' / 'skchain_outputs'}; their rows were recomputed and "
        "written again."
    ]
    new_process(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(transform(module, tmp_path, X), out)
    assert counter.rows == len(X)  # rewritten with the key: read back


def test_a_block_copied_into_another_models_folder_is_refused(X, tmp_path, monkeypatch):
    first, second = pretrained(0), pretrained(1)
    transform(first, tmp_path, X)
    transform(second, tmp_path, X[:1])  # makes the second model's folder
    folders = {p.parent.parent for p in blocks(tmp_path)}
    assert len(folders) == 2
    source = next(p for p in blocks(tmp_path) if p.stat().st_size > 1000)
    target = next(f for f in folders if f != source.parent.parent)
    (target / source.parent.name).mkdir()
    (target / source.parent.name / "output.pkl").write_bytes(source.read_bytes())

    expected = run_module(second, X)
    new_process(monkeypatch)
    counter = Counter(second)
    with pytest.warns(UserWarning, match="corrupt or unreadable"):
        out = transform(second, tmp_path, X)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert counter.rows == len(X) - 1


def test_a_block_of_the_older_format_is_a_quiet_miss(X, tmp_path, monkeypatch):
    module = pretrained()
    out = transform(module, tmp_path, X)
    (block,) = blocks(tmp_path)
    _disk_forgery.old_format(block)
    assert block.read_bytes()[:8] == b"SKCHOUT2"
    new_process(monkeypatch)
    counter = Counter(module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(transform(module, tmp_path, X), out, rtol=1e-5, atol=1e-6)
    assert counter.rows == len(X)
    (block,) = blocks(tmp_path)
    assert block.read_bytes()[:8] == _disk._MAGIC


def test_blocks_of_another_key_are_misses(X, tmp_path, monkeypatch):
    module = pretrained()
    out = transform(module, tmp_path / "cache", X)
    new_process(monkeypatch)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "another-user"))
    counter = Counter(module)
    with pytest.warns(UserWarning, match="corrupt or unreadable"):
        np.testing.assert_allclose(transform(module, tmp_path / "cache", X), out,
                                   rtol=1e-5, atol=1e-6)
    assert counter.rows == len(X)


# -- several processes at once, and a writer killed mid-block ----------------------

_PRETRAINED = """
import numpy as np, torch
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(0)  # pretrained(0) of tests/test_disk.py
module = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
"""

_WORKER = _PRETRAINED + """
import json, os, sys, time
from skchain import NeuralTransformer, _cache, _disk
X = np.load(sys.argv[1])
start, stop = json.loads(sys.argv[3])
print("ready", flush=True)
while not os.path.exists(sys.argv[4]):
    time.sleep(0.001)
worst = 0.0
for round in range(5):
    _cache._MEMORY.clear()  # read back what the others wrote meanwhile
    _disk._DISKS.clear()
    for lo in range(start, stop, 10):
        rows = X[lo : lo + 20]  # overlapping calls, overlapping the other workers
        nt = NeuralTransformer(module, output="logits", cache=sys.argv[2]).fit(rows[:1])
        out = nt.transform(rows)
        plain = NeuralTransformer(module, output="logits", cache=False).fit(rows[:1])
        expected = plain.transform(rows)
        worst = max(worst, float((np.abs(out - expected) / (1e-6 + 1e-5 * np.abs(expected))).max()))
print(json.dumps(worst))
"""


def test_concurrent_writers_of_overlapping_rows_give_cache_false_outputs(X, tmp_path,
                                                                         monkeypatch):
    data = tmp_path / "X.npy"
    np.save(data, X)
    folder, go = tmp_path / "cache", tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(data), str(folder), json.dumps(span), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for span in ([0, 40], [20, 60], [0, 60])
    ]
    assert [w.stdout.readline() for w in workers] == ["ready\n"] * 3
    go.touch()
    results = [worker.communicate(timeout=300) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], [err for _, err in results]
    # Every output within rtol=1e-5, atol=1e-6 of cache=False's.
    assert all(float(out) <= 1.0 for out, _ in results), results
    assert not any("corrupt" in err for _, err in results), results

    new_process(monkeypatch)
    module = pretrained()
    expected = run_module(module, X)
    counter = Counter(module)
    np.testing.assert_allclose(transform(module, folder, X), expected, rtol=1e-5, atol=1e-6)
    assert counter.rows == 0
    assert [p for p in folder.rglob(".tmp-*")] == []


_KILLED_WRITER = _PRETRAINED + """
import os, sys, time
from skchain import NeuralTransformer

real_fdopen = os.fdopen


class HalfThenHang:
    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        open(sys.argv[3], "w").close()  # tell the parent: half written
        time.sleep(600)


os.fdopen = lambda fd, *args, **kwargs: HalfThenHang(real_fdopen(fd, *args, **kwargs))
X = np.load(sys.argv[1])
nt = NeuralTransformer(module, output="logits", cache=False).fit(X[:1])
nt.set_params(cache=sys.argv[2]).transform(X)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("another_writer", ["none", "unclaimed", "waiting"])
def test_a_writer_killed_mid_block_leaves_no_wrong_value(X, tmp_path, monkeypatch,
                                                         another_writer):
    module = pretrained()
    expected = run_module(module, X)
    folder = tmp_path / "cache"
    _cache_trust.load_key(_cache_trust.key_file()[0])  # the writer's hanging write is for its block only
    data, half = tmp_path / "X.npy", tmp_path / "half"
    np.save(data, X)
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(data), str(folder), str(half)],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not half.exists():
        assert writer.poll() is None, writer.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    another_writer_finished = another_writer != "none"
    if another_writer == "unclaimed":
        # The same block, written whole by a process that does not see the
        # hanging writer's claim on its rows (no fcntl: Windows).
        with monkeypatch.context() as patch:
            patch.setattr(_claims, "fcntl", None)
            transform(module, folder, X)
    waiter = None
    if another_writer == "waiting":
        # One that does waits for the hanging writer's claim; the kill below
        # drops it, and the waiter computes the rows and writes the block.
        waited = []
        waiter = threading.Thread(target=lambda: waited.append(transform(module, folder, X)))
        waiter.start()
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    if waiter is not None:
        waiter.join(120)
        np.testing.assert_allclose(waited[0], expected, rtol=1e-5, atol=1e-6)
    (temp,) = folder.rglob(".tmp-*")
    assert 0 < temp.stat().st_size
    assert len(blocks(folder)) == int(another_writer_finished)

    new_process(monkeypatch)
    counter = Counter(module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = transform(module, folder, X)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # Read from the whole block, or recomputed: never from the half one.
    assert counter.rows == (0 if another_writer_finished else len(X))
    assert temp.exists()  # recent: it could be a live writer's, so it stays, unread

    # An hour later it is known dead: the next write in its folder removes it.
    old = time.time() - 2 * _disk._STALE_TEMP_SECONDS
    os.utime(temp, (old, old))
    (block,) = blocks(folder)
    _disk_forgery.plant(block)
    new_process(monkeypatch)
    with pytest.warns(UserWarning, match="corrupt"):
        np.testing.assert_allclose(transform(module, folder, X), expected, rtol=1e-5, atol=1e-6)
    assert not temp.exists()


def test_stale_temporary_files_of_a_block_never_written_are_removed(X, tmp_path, monkeypatch):
    module = pretrained()
    transform(module, tmp_path, X[:10])
    (block,) = blocks(tmp_path)
    orphan = block.parent.parent / ("f" * 32)
    orphan.mkdir()
    old = time.time() - 2 * _disk._STALE_TEMP_SECONDS
    for name, when in [(".tmp-dead", old), (".tmp-live", time.time())]:
        (orphan / name).write_bytes(b"half a block")
        os.utime(orphan / name, (when, when))
    new_process(monkeypatch)
    transform(module, tmp_path, X)  # a miss: indexes the folder
    assert sorted(p.name for p in orphan.iterdir()) == [".tmp-live"]


# -- bounding the folder's size -----------------------------------------------------


def test_reduce_size_evicts_least_recently_used_blocks(X, tmp_path, monkeypatch):
    module = pretrained()
    expected = run_module(module, X)
    paths = []
    for lo in (0, 20, 40):  # three blocks of 20 rows
        before = set(blocks(tmp_path))
        transform(module, tmp_path, X[lo : lo + 20])
        # Each block by the rows it holds: their mtimes may tie on a coarse clock.
        (written,) = set(blocks(tmp_path)) - before
        paths.append(written)
    for i, path in enumerate(paths):
        old = time.time() - 1000 + 100 * i  # written in order, long ago
        os.utime(path, (old, old))

    # A new process reads the first (oldest) block: it becomes the most recent.
    new_process(monkeypatch)
    counter = Counter(module)
    np.testing.assert_allclose(transform(module, tmp_path, X[:20]), expected[:20],
                               rtol=1e-5, atol=1e-6)
    assert counter.rows == 0
    sizes = sum(p.stat().st_size for p in blocks(tmp_path))
    Memory(tmp_path, verbose=0).reduce_size(bytes_limit=sizes - 1)  # one must go
    left = {p.parent.name for p in blocks(tmp_path)}
    assert left == {paths[0].parent.name, paths[2].parent.name}

    new_process(monkeypatch)
    counter = Counter(module)
    np.testing.assert_allclose(transform(module, tmp_path, X), expected, rtol=1e-5, atol=1e-6)
    assert counter.rows == 20  # only the evicted block's rows

    Memory(tmp_path, verbose=0).reduce_size(bytes_limit=0)
    assert blocks(tmp_path) == []
    new_process(monkeypatch)
    np.testing.assert_allclose(transform(module, tmp_path, X), expected, rtol=1e-5, atol=1e-6)
    assert counter.rows == 20 + len(X)
