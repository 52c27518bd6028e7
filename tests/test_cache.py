import collections
import functools
import itertools
import pickle
import time

import _disk_forgery
import numpy as np
import pytest
import torch
from joblib import Memory, parallel_backend
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from skchain import NeuralTransformer, _cache, _cache_trust, _disk
from skchain._cache import OutputCache, _MemoryStore
from skchain._flops import worth_caching
from skchain._inputs import kind_of
from skchain._runner import run_module
from skchain._testing import make_classifier_net


def _row_keys(rows):
    return kind_of(rows).keys()


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch):
    """Each test starts with empty in-process stores, as a new process would."""
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    monkeypatch.setattr(_disk, "_DISKS", {})


@pytest.fixture(scope="module")
def data():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)[:200].astype(np.float32)
    return X, y[:200]


def pretrained(n_in=30, n_out=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 16), nn.ReLU(), nn.Linear(16, n_out))


_ROWS = collections.Counter()
_COUNTER_IDS = itertools.count()


def _count_rows(key, module, args):
    _ROWS[key] += args[0].shape[0]


class RowCounter:
    """Counts the rows that go through a module's forward, in this process.

    The hook is a module-level function, so the deep copies that ``clone``
    makes of the module (one per fold and candidate) count into the same total.
    """

    def __init__(self, module):
        self.key = f"rows-{next(_COUNTER_IDS)}"
        module.register_forward_pre_hook(functools.partial(_count_rows, self.key))

    @property
    def rows(self):
        return _ROWS[self.key]

    @rows.setter
    def rows(self, value):
        _ROWS[self.key] = value


def search(nt, X, y, n_jobs=None):
    pipe = Pipeline([("nn", nt), ("clf", LogisticRegression(max_iter=500))])
    grid = {"clf__C": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}
    return GridSearchCV(pipe, grid, cv=5, n_jobs=n_jobs).fit(X, y)


# -- NeuralTransformer through the cache ---------------------------------------


def test_grid_search_computes_each_row_once(data):
    X, y = data
    module = pretrained()
    counter = RowCounter(module)
    cached = search(NeuralTransformer(module, cache=True), X, y)
    assert counter.rows == len(X)  # 5 folds x 6 candidates + refit, one pass per row

    counter.rows = 0
    plain = search(NeuralTransformer(module, cache=False), X, y)
    assert counter.rows >= 31 * len(X)
    np.testing.assert_allclose(
        cached.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"]
    )
    assert cached.best_params_ == plain.best_params_


def test_changed_weights_are_never_served_stale(data):
    X, _ = data
    module = pretrained()
    nt = NeuralTransformer(module, output="logits", cache=True).fit(X)
    first = nt.transform(X)
    np.testing.assert_allclose(first, run_module(module, X), rtol=1e-5, atol=1e-6)
    for write in (_no_grad_add, _data_mul, _load_other):
        write(module)
        out = nt.transform(X)
        np.testing.assert_allclose(out, run_module(module, X), rtol=1e-5, atol=1e-6)
        assert not np.allclose(out, first)
        first = out


def test_changed_rows_are_computed_and_only_them(data):
    X, _ = data
    module = pretrained()
    nt = NeuralTransformer(module, output="logits", cache=True).fit(X)
    nt.transform(X)
    counter = RowCounter(module)
    X2 = X.copy()
    X2[5] += 1.0
    out = nt.transform(X2)
    assert counter.rows == 1
    np.testing.assert_allclose(out, run_module(module, X2), rtol=1e-5, atol=1e-6)


def test_fold_subsets_and_duplicates_hit(data):
    X, _ = data
    module = pretrained()
    nt = NeuralTransformer(module, output="logits", cache=True).fit(X[:2])
    counter = RowCounter(module)
    doubled = np.vstack([X[:50], X[:50]])
    out = nt.transform(doubled)
    assert counter.rows == 48  # 50 distinct rows, 2 of them computed by fit
    np.testing.assert_array_equal(out[:50], out[50:])
    subset = nt.transform(X[10:40][::-1])
    assert counter.rows == 48
    np.testing.assert_array_equal(subset, out[10:40][::-1])


def test_each_output_selection_has_its_own_entries(data):
    X, _ = data
    module = pretrained()
    expected = {
        "logits": run_module(module, X),
        "proba": torch.softmax(torch.from_numpy(run_module(module, X)), 1).numpy(),
        "0": run_module(module, X, layers=["0"]),
    }
    for output, values in expected.items():
        out = NeuralTransformer(module, output=output, cache=True).fit(X).transform(X)
        np.testing.assert_allclose(out, values, rtol=1e-5, atol=1e-6)


def test_outputs_are_fresh_arrays(data):
    X, _ = data
    nt = NeuralTransformer(pretrained(), output="logits", cache=True).fit(X)
    out = nt.transform(X)
    expected = out.copy()
    out[:] = 0.0
    np.testing.assert_array_equal(nt.transform(X), expected)
    assert nt.transform(X).flags.writeable


def test_cache_false_and_trained_nets_store_nothing(data):
    X, y = data
    NeuralTransformer(pretrained(), cache=False).fit(X).transform(X)
    net = make_classifier_net(n_classes=2, max_epochs=1)
    NeuralTransformer(net, cache=True, cv=None, random_state=0).fit(X, y).transform(X)
    assert _cache._MEMORY.nbytes == 0


def test_frozen_skorch_net_is_cached_across_clones(data):
    X, y = data
    net = make_classifier_net(n_classes=2, max_epochs=2).fit(X, y)
    nt = NeuralTransformer(net, frozen=True, cache=True).fit(X)
    out = nt.transform(X)
    other = clone(nt).fit(X)  # a deep copy of the net: same weights, new object
    counter = RowCounter(other.module_)
    np.testing.assert_array_equal(other.transform(X), out)
    assert counter.rows == 0
    np.testing.assert_allclose(out, net.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_threads_share_one_store(data):
    X, y = data
    with parallel_backend("threading", n_jobs=2):
        threaded = search(NeuralTransformer(pretrained(), cache=True), X, y, n_jobs=2)
    plain = search(NeuralTransformer(pretrained(), cache=False), X, y)
    np.testing.assert_allclose(
        threaded.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"]
    )


def test_invalid_cache_value_is_rejected(data):
    X, _ = data
    with pytest.raises(ValueError, match="cache"):
        NeuralTransformer(pretrained(), cache=3).fit(X)


def test_pickle_and_clone_keep_the_cache_setting(data, tmp_path):
    X, _ = data
    nt = NeuralTransformer(pretrained(), output="logits", cache=Memory(tmp_path, verbose=0))
    nt.fit(X)
    out = nt.transform(X)
    restored = pickle.loads(pickle.dumps(nt))
    assert str(restored.cache.location) == str(tmp_path)
    np.testing.assert_array_equal(restored.transform(X), out)
    assert str(clone(nt).get_params()["cache"].location) == str(tmp_path)


# -- "auto": decided from FLOPs per row, never from time ------------------------


def _no_grad_add(module):
    with torch.no_grad():
        module[0].weight.add_(1e-3)


def _data_mul(module):
    # Writes through .data bypass autograd's version counter.
    module[2].weight.data.mul_(2.0)


def _load_other(module):
    module.load_state_dict(pretrained(seed=1).state_dict())


def wide(seed=0):
    """Enough multiply-adds per row for "auto" to keep its rows."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(30, 512), nn.ReLU(), nn.Linear(512, 512), nn.Linear(512, 3))


class Slow(nn.Module):
    """A net that sleeps in forward: slow, but with almost no arithmetic."""

    def __init__(self, delay=0.01):
        super().__init__()
        self.delay = delay
        self.linear = nn.Linear(30, 2)

    def forward(self, x):
        time.sleep(self.delay)
        return self.linear(x)


def _decisions():
    return list(_cache._MEMORY._decisions.values())


def test_row_flops_counts_matrix_products_and_convolutions():
    module = wide()
    out, flops = _cache.row_flops(lambda rows: run_module(module, rows), np.ones((1, 30), "f4"))
    assert flops == 2 * (30 * 512 + 512 * 512 + 512 * 3)
    np.testing.assert_allclose(out, run_module(module, np.ones((1, 30), "f4")), rtol=1e-5)
    conv = nn.Sequential(nn.Unflatten(1, (3, 10, 10)), nn.Conv2d(3, 4, 3), nn.Flatten())
    _, flops = _cache.row_flops(lambda rows: run_module(conv, rows), np.ones((1, 300), "f4"))
    assert flops == 2 * 3 * 4 * 9 * 8 * 8  # every output position of the convolution


def test_worth_caching_is_the_documented_threshold():
    limit = 600 * 120 + 100 * 12 + 200_000
    assert worth_caching(limit, 120, 12)
    assert not worth_caching(limit - 1, 120, 12)


def test_auto_keeps_rows_of_a_costly_net_and_runs_a_cheap_one(data):
    X, _ = data
    for module, kept in ((wide(), True), (pretrained(), False), (Slow(), False)):
        _cache._MEMORY.clear()
        nt = NeuralTransformer(module, output="logits", batch_size=50).fit(X)  # cache="auto"
        first = nt.transform(X)
        counter = RowCounter(module)
        again = nt.transform(X)
        assert _decisions() == [kept]
        assert counter.rows == (0 if kept else len(X))
        np.testing.assert_allclose(again, first, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(first, run_module(module, X), rtol=1e-5, atol=1e-6)


def test_auto_decides_the_same_on_a_slow_machine(data, monkeypatch):
    """The decision reads no clock: a machine made to look 1000x slower (every
    clock read jumps) decides exactly as an idle one."""
    X, _ = data
    modules = [wide(), pretrained(), Slow(delay=0.0)]
    idle = []
    for module in modules:
        _cache._MEMORY.clear()
        NeuralTransformer(module, output="logits").fit(X).transform(X)
        idle += _decisions()

    ticks = itertools.count()
    for clock in ("perf_counter", "monotonic", "time", "process_time"):
        monkeypatch.setattr(time, clock, lambda: 1000.0 * next(ticks))
        monkeypatch.setattr(time, clock + "_ns", lambda: 10**12 * next(ticks))
    busy = []
    for module in modules:
        _cache._MEMORY.clear()
        NeuralTransformer(module, output="logits").fit(X).transform(X)
        busy += _decisions()
    assert busy == idle == [True, False, False]


def test_auto_computes_no_costly_row_twice(data):
    """A model worth caching keeps the counted row's output; a cheap one is run
    whole, so that repeated calls give bitwise identical results."""
    X, _ = data
    for module, kept in ((wide(), True), (pretrained(), False)):
        cache = OutputCache(_MemoryStore(), auto=True)
        batches = []

        def compute(rows, module=module, batches=batches):
            batches.append(len(rows))
            return run_module(module, rows)

        out = cache.compute("fp", X, compute)
        assert batches == ([1, len(X) - 1] if kept else [1, len(X)])
        assert list(cache.memory._decisions.values()) == [kept]
        np.testing.assert_allclose(out, run_module(module, X), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(cache.compute("fp", X, compute), out)


def test_auto_without_a_count_runs_the_model(data, monkeypatch):
    """A model the counting mode cannot run is simply run, never cached; a
    model that fails raises its own error and leaves no decision."""
    X, _ = data

    def cannot_count(compute, rows):
        raise NotImplementedError("an operation the mode cannot run")

    monkeypatch.setattr(_cache, "row_flops", cannot_count)
    module = wide()
    cache = OutputCache(_MemoryStore(), auto=True)
    out = cache.compute("fp", X, lambda rows: run_module(module, rows))
    np.testing.assert_allclose(out, run_module(module, X), rtol=1e-5, atol=1e-6)
    assert list(cache.memory._decisions.values()) == [False]

    def broken(rows):
        raise RuntimeError("the model fails")

    with pytest.raises(RuntimeError, match="the model fails"):
        cache.compute("other", X, broken)
    assert list(cache.memory._decisions.values()) == [False]


def test_auto_counts_a_model_once(data, monkeypatch):
    X, _ = data
    calls = []
    real = _cache.row_flops
    monkeypatch.setattr(_cache, "row_flops", lambda *a: calls.append(1) or real(*a))
    module = wide()
    for _ in range(3):
        clone(NeuralTransformer(module, output="logits")).fit(X).transform(X)
    assert len(calls) == 1
    NeuralTransformer(module, output="proba").fit(X).transform(X)  # another output
    assert len(calls) == 2


# -- bounded memory ------------------------------------------------------------


def test_memory_is_bounded_and_evicts_least_recently_used():
    key_bytes = len(_row_keys(np.zeros((1, 1), dtype=np.float32))[0])
    row_bytes = 8 * 4 + key_bytes + _cache._INDEX_BYTES_PER_ROW
    store = _MemoryStore(max_bytes=25 * row_bytes)
    cache = OutputCache(store)
    calls = []

    def double(rows):
        calls.append(len(rows))
        return np.repeat(rows[:, :1] * 2, 8, axis=1).astype(np.float32)

    blocks = [np.arange(i * 10, i * 10 + 10, dtype=np.float32).reshape(10, 1) for i in range(4)]
    for block in blocks[:2]:
        cache.compute("fp", block, double)
    cache.compute("fp", blocks[0], double)  # block 0 is now the most recent
    cache.compute("fp", blocks[2], double)  # evicts block 1, the least recent
    assert store.nbytes <= store.max_bytes
    calls.clear()
    np.testing.assert_array_equal(cache.compute("fp", blocks[0], double)[:, 0], blocks[0][:, 0] * 2)
    assert calls == []
    np.testing.assert_array_equal(cache.compute("fp", blocks[1], double)[:, 0], blocks[1][:, 0] * 2)
    assert calls == [10]
    # A call larger than the whole bound is computed and not kept.
    big = np.arange(100, dtype=np.float32).reshape(100, 1)
    cache.compute("fp", big, double)
    assert store.nbytes <= store.max_bytes


# -- on disk, across processes ---------------------------------------------------


def test_disk_cache_serves_a_fresh_process(data, tmp_path, monkeypatch):
    X, _ = data
    module = pretrained()
    counter = RowCounter(module)
    out = NeuralTransformer(module, output="logits", cache=tmp_path).fit(X).transform(X)
    assert counter.rows == len(X)
    assert any((tmp_path / "joblib" / "skchain_outputs").rglob("output.pkl"))

    # A new process: empty memory, a disk store that has indexed nothing yet.
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    monkeypatch.setattr(_disk, "_DISKS", {})
    copy = pickle.loads(pickle.dumps(module))
    counter = RowCounter(copy)
    again = NeuralTransformer(copy, output="logits", cache=str(tmp_path)).fit(X[:2])
    np.testing.assert_array_equal(again.transform(X), out)
    assert counter.rows == 0

    # joblib's own size control evicts skchain's blocks; they are recomputed.
    Memory(tmp_path, verbose=0).reduce_size(bytes_limit=0)
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    np.testing.assert_allclose(again.transform(X), out, rtol=1e-5, atol=1e-6)
    assert counter.rows == len(X)


def test_disk_cache_is_shared_by_joblib_workers(data, tmp_path, monkeypatch):
    X, y = data
    module = pretrained()
    result = search(NeuralTransformer(module, cache=tmp_path), X, y, n_jobs=2)
    plain = search(NeuralTransformer(module, cache=False), X, y)
    np.testing.assert_allclose(
        result.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"]
    )
    # Every row the workers computed is on disk for the next process.
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    monkeypatch.setattr(_disk, "_DISKS", {})
    expected = run_module(module, X)
    counter = RowCounter(module)
    nt = NeuralTransformer(module, cache=tmp_path).fit(X[:2])
    np.testing.assert_allclose(nt.transform(X), expected, rtol=1e-5, atol=1e-6)
    assert counter.rows == 0


# -- disk integrity, across processes ----------------------------------------------

_READER = """
import json, pickle, sys, warnings
import numpy as np, torch
torch.set_num_threads(1)
from skchain._cache import resolve_cache
from skchain._runner import run_module
module, X = pickle.load(open(sys.argv[1], "rb"))
report = {}
for case, folder in json.loads(sys.argv[2]).items():
    computed = []
    def compute(rows):
        computed.append(len(rows))
        return run_module(module, rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = resolve_cache(folder).compute(case, X, compute)
    np.save(f"{folder}.npy", out)
    report[case] = {
        "computed": sum(computed),
        "warnings": [str(w.message) for w in caught if w.category is UserWarning],
    }
print(json.dumps(report))
"""

_WRITER = """
import pickle, sys
import numpy as np
from joblib import Memory
from skchain._disk import _DiskStore
from skchain._cache_trust import key_file, load_key as _load_key
keys, values, folder, seed = pickle.load(open(sys.argv[1], "rb"))
rng = np.random.RandomState(int(seed))
key = _load_key(key_file()[0])
for _ in range(40):
    store = _DiskStore(Memory(folder, verbose=0), key)
    store.put("n0", keys, values.copy())  # the same block as the other writer
    take = np.sort(rng.choice(len(keys), size=7, replace=False))
    store.put("n0", [keys[i] for i in take], values[take])
"""


def _fresh_store(folder):
    """A disk store that has indexed nothing, as in a new process."""
    return _disk._DiskStore(Memory(str(folder), verbose=0), _cache_trust.load_key(_cache_trust.key_file()[0]))


def _run_python(script, *args):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, check=True
    )


def _block_file(folder):
    (path,) = folder.rglob("output.pkl")
    return path


def _flip(offset):
    def corrupt(path):
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x01  # one bit: a float's last mantissa bit at the end
        path.write_bytes(bytes(data))

    return corrupt


def _truncate(keep):
    def corrupt(path):
        data = path.read_bytes()
        path.write_bytes(data[: keep(len(data))])

    return corrupt


def _garbage(path):
    path.write_bytes(np.random.RandomState(0).bytes(path.stat().st_size))


def _directory(path):
    path.unlink()
    path.mkdir()  # unreadable as a file (EISDIR), even for root


def _joblib_pickle(path):
    import joblib

    joblib.dump({"keys": np.zeros((3, 16), np.uint8), "values": np.zeros((3, 3))}, path)


def _huge_header(path):
    import json
    import struct

    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[16 : 16 + size])
    header["rows"] = 10**15
    header = json.dumps(header).encode()
    path.write_bytes(data[:8] + struct.pack("<Q", len(header)) + header + data[16 + size :])


_CORRUPTIONS = {
    "intact": None,
    "flip the last value byte": _flip(-1),
    "flip a magic byte": _flip(0),
    "flip a header byte": _flip(20),
    "flip a key byte": _flip(-(200 * 3 * 4) - 40),
    "truncate to half": _truncate(lambda n: n // 2),
    "truncate the last value": _truncate(lambda n: n - 4),
    "empty file": _truncate(lambda n: 0),
    "garbage": _garbage,
    "a directory": _directory,
    "an old joblib pickle": _joblib_pickle,
    "a header claiming 10**15 rows": _huge_header,
    # Someone who can write the folder but has no key (tests/_disk_forgery.py).
    "planted: values doubled, unkeyed checksums recomputed": _disk_forgery.plant,
    "written with another key": _disk_forgery.with_key(b"k" * 32),
}


def test_corrupt_blocks_are_misses_in_another_process(data, tmp_path):
    """Blocks written here and damaged are read by a fresh process: never a
    wrong value, never a crash; recomputed, one warning, rewritten."""
    X, _ = data
    X = X[:200]
    module = pretrained()
    expected = run_module(module, X)
    folders = {}
    for i, (case, corrupt) in enumerate(_CORRUPTIONS.items()):
        folder = tmp_path / f"case{i}"
        computed = OutputCache(_MemoryStore(), _disk._disk_store(Memory(str(folder), verbose=0)))
        np.testing.assert_array_equal(
            computed.compute(case, X, lambda rows: run_module(module, rows)), expected
        )
        if corrupt is not None:
            corrupt(_block_file(folder))
        folders[case] = str(folder)
    with open(tmp_path / "input.pkl", "wb") as handle:
        pickle.dump((module, X), handle)

    import json

    first = json.loads(_run_python(_READER, tmp_path / "input.pkl", json.dumps(folders)).stdout)
    for case, report in first.items():
        np.testing.assert_array_equal(np.load(f"{folders[case]}.npy"), expected, err_msg=case)
        if case == "intact":
            assert report == {"computed": 0, "warnings": []}
        else:
            assert report["computed"] == len(X), case
            assert len(report["warnings"]) == 1, (case, report)
            assert "corrupt or unreadable" in report["warnings"][0]

    # The damaged blocks were rewritten: a third process computes nothing.
    again = json.loads(_run_python(_READER, tmp_path / "input.pkl", json.dumps(folders)).stdout)
    assert all(report == {"computed": 0, "warnings": []} for report in again.values()), again
    for case, folder in folders.items():
        np.testing.assert_array_equal(np.load(f"{folder}.npy"), expected, err_msg=case)


def test_blocks_deleted_mid_run_are_recomputed_quietly(data, tmp_path, recwarn):
    import shutil

    X, _ = data
    module = pretrained()
    counter = RowCounter(module)
    disk = _disk._disk_store(Memory(tmp_path, verbose=0))
    cache = OutputCache(_MemoryStore(), disk)
    expected = cache.compute("fp", X, lambda rows: run_module(module, rows))
    assert counter.rows == len(X)
    # Indexed by this process, then removed (Memory.clear, reduce_size, a user).
    shutil.rmtree(disk.root)
    fresh = OutputCache(_MemoryStore(), disk)
    np.testing.assert_array_equal(
        fresh.compute("fp", X, lambda rows: run_module(module, rows)), expected
    )
    assert counter.rows == 2 * len(X)
    assert not [w for w in recwarn if w.category is UserWarning]
    assert _block_file(tmp_path).exists()  # written again


def test_concurrent_writers_never_show_half_a_block(data, tmp_path):
    """Two processes write the same blocks (and overlapping ones) over and over
    while this one reads: every block it finds passes its checks and holds
    the right values."""
    import subprocess
    import sys

    X, _ = data
    module = pretrained()
    values = run_module(module, X)
    keys = _row_keys(X)
    job = tmp_path / "job.pkl"
    with open(job, "wb") as handle:
        pickle.dump((keys, values, str(tmp_path), 0), handle)
    writers = []
    for seed in (1, 2):
        job = tmp_path / f"job{seed}.pkl"
        with open(job, "wb") as handle:
            pickle.dump((keys, values, str(tmp_path), seed), handle)
        writers.append(subprocess.Popen([sys.executable, "-c", _WRITER, str(job)]))
    reads = 0
    while any(w.poll() is None for w in writers) or reads == 0:
        store = _fresh_store(tmp_path)
        found, missing, bad = store.lookup("n0", keys)
        assert bad == 0
        for where, block, rows in found:
            np.testing.assert_array_equal(block[rows], values[where])
        reads += 1
    assert [w.wait() for w in writers] == [0, 0]
    store = _fresh_store(tmp_path)
    found, missing, bad = store.lookup("n0", keys)
    assert bad == 0 and len(missing) == 0
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_unwritable_folder_warns_and_still_answers(data, tmp_path):
    X, _ = data
    module = pretrained()
    disk = _disk._disk_store(Memory(tmp_path, verbose=0))
    with open(disk.root, "w") as handle:
        handle.write("a file where the cache folder should be")
    cache = OutputCache(_MemoryStore(), disk)
    with pytest.warns(UserWarning, match="could not write"):
        out = cache.compute("fp", X, lambda rows: run_module(module, rows))
    np.testing.assert_array_equal(out, run_module(module, X))


def test_auto_skips_the_fingerprint_of_a_net_it_runs(data, monkeypatch):
    """A net that "auto" judged not worth caching is run on later calls without
    fingerprinting its weights (a small net's 1-row call would spend longer on
    that than on the net), while a net worth caching is fingerprinted on every
    call, so changed weights are never served stale."""
    from skchain import _neural

    X, _ = data
    calls = []
    real = _neural._output_fingerprint
    monkeypatch.setattr(_neural, "_output_fingerprint", lambda s: calls.append(1) or real(s))
    cheap = NeuralTransformer(pretrained(), output="logits").fit(X)  # cache="auto"
    calls.clear()
    for _ in range(3):
        np.testing.assert_allclose(cheap.transform(X[:1]), run_module(cheap.module_, X[:1]),
                                   rtol=1e-5, atol=1e-6)
    assert calls == []
    assert _decisions() == [False]

    module = wide()
    costly = NeuralTransformer(module, output="logits").fit(X)
    first = costly.transform(X[:5])
    calls.clear()
    with torch.no_grad():
        module[0].weight.mul_(2.0)
    changed = costly.transform(X[:5])
    assert len(calls) == 1
    assert not np.allclose(changed, first)
    np.testing.assert_allclose(changed, run_module(module, X[:5]), rtol=1e-5, atol=1e-6)


def test_a_cleared_store_forgets_the_module_decisions(data):
    from skchain._neural import _owner

    X, _ = data
    module = pretrained()
    nt = NeuralTransformer(module, output="logits").fit(X)
    nt.transform(X[:3])
    owner, fmt = _owner(nt._state()), ("array", "<f4", (30,))
    assert _cache._MEMORY.owner_decision(owner, fmt) is False
    _cache._MEMORY.clear()
    assert _cache._MEMORY.owner_decision(owner, fmt) is None


@pytest.mark.parametrize("repeated", [False, True], ids=["distinct", "repeated-rows"])
def test_a_first_pass_holds_two_copies_of_the_output_at_most(repeated):
    # The cache keeps one copy and the caller gets one: a pass that found
    # a few rows (the row that fit ran) or has repeated rows must not
    # assemble the result through more output-sized temporaries.
    import tracemalloc

    rng = np.random.RandomState(0)
    rows = rng.rand(4_000, 8).astype(np.float32)
    if repeated:
        rows[1::2] = rows[::2]
    width = 1_024
    out_bytes = len(rows) * width * 4

    def compute(subset):
        return np.repeat(subset[:, :1], width, axis=1)  # fresh, like a model's output

    cache = OutputCache(_MemoryStore())
    cache.compute("model", rows[:3], compute)  # a few rows already held
    tracemalloc.start()
    try:
        out = cache.compute("model", rows, compute)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(out, compute(rows))
    assert out.flags.writeable and not np.shares_memory(out, rows)
    assert peak < 2.3 * out_bytes, peak / out_bytes
    again = cache.compute("model", rows, compute)  # every row now a hit
    np.testing.assert_array_equal(again, out)
