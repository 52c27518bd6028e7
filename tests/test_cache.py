import collections
import functools
import itertools
import pickle
import time

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

from skchain import NeuralTransformer, _cache
from skchain._cache import (
    OutputCache,
    _MemoryStore,
    callable_id,
    model_fingerprint,
    row_digests,
    weights_digest,
)
from skchain._runner import run_module
from skchain._testing import make_classifier_net


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch):
    """Each test starts with empty in-process stores, as a new process would."""
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    monkeypatch.setattr(_cache, "_DISKS", {})


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


# -- keys --------------------------------------------------------------------


def test_row_digests_follow_row_content():
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    keys = row_digests(X)
    assert len(set(keys)) == 4 and all(len(k) == 16 for k in keys)
    assert row_digests(X.copy()) == keys
    assert row_digests(X[[2, 0]]) == [keys[2], keys[0]]
    # Fortran order or a strided view hashes the row values, not the memory layout.
    assert row_digests(np.asfortranarray(X)) == keys
    bumped = X.copy()
    bumped[1, 2] = np.nextafter(bumped[1, 2], np.float32(np.inf))
    assert row_digests(bumped)[1] != keys[1]
    assert row_digests(bumped)[0] == keys[0]
    texts = ["a cat", "a dog", "a cat"]
    digests = row_digests(texts)
    assert digests[0] == digests[2] != digests[1]


def _sgd_step(module):
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    module(torch.randn(4, 30)).sum().backward()
    opt.step()


def _adam_step(module):
    opt = torch.optim.Adam(module.parameters(), lr=0.1)
    module(torch.randn(4, 30)).sum().backward()
    opt.step()


def _load_other(module):
    module.load_state_dict(pretrained(seed=1).state_dict())


def _no_grad_add(module):
    with torch.no_grad():
        module[0].weight.add_(1e-3)


def _data_mul(module):
    # Writes through .data bypass autograd's version counter.
    module[2].weight.data.mul_(2.0)


def _numpy_write(module):
    module[2].bias.detach().numpy()[:] = 0.5


def _replace_parameter(module):
    module[2].weight = nn.Parameter(module[2].weight.detach() + 1.0)


def _init_normal(module):
    nn.init.normal_(module[0].weight)


def _single_element(module):
    with torch.no_grad():
        module[0].weight[3, 7] += 1.0


@pytest.mark.parametrize(
    "write",
    [
        _sgd_step,
        _adam_step,
        _load_other,
        _no_grad_add,
        _data_mul,
        _numpy_write,
        _replace_parameter,
        _init_normal,
        _single_element,
    ],
)
def test_weights_digest_sees_every_kind_of_write(write):
    module = pretrained()
    before = weights_digest(module)
    write(module)
    after = weights_digest(module)
    assert after != before
    assert after == _cache._hash_weights(module)  # the memo never lags the weights


def test_weights_digest_sees_buffers():
    module = nn.Sequential(nn.Linear(30, 4), nn.BatchNorm1d(4))
    before = weights_digest(module)
    module.train()(torch.randn(8, 30))  # updates running statistics only
    assert weights_digest(module) != before


def test_weights_digest_is_memoised_until_a_write(monkeypatch):
    module = pretrained()
    calls = []
    real = _cache._hash_weights
    monkeypatch.setattr(_cache, "_hash_weights", lambda m: calls.append(1) or real(m))
    digest = weights_digest(module)
    assert weights_digest(module) == weights_digest(module) == digest
    assert len(calls) == 1
    _no_grad_add(module)
    weights_digest(module)
    assert len(calls) == 2


def test_fingerprint_covers_structure_and_output_description():
    a, b = pretrained(), pretrained()
    assert model_fingerprint(a, "proba") == model_fingerprint(b, "proba")
    assert model_fingerprint(a, "proba") != model_fingerprint(a, "logits")
    b[1] = nn.Tanh()  # same weights, another activation
    assert model_fingerprint(a, "proba") != model_fingerprint(b, "proba")


def test_callable_id_is_stable_and_tells_bodies_apart():
    softmax = functools.partial(torch.softmax, dim=-1)
    assert callable_id(softmax) == callable_id(functools.partial(torch.softmax, dim=-1))
    assert "0x" not in repr(callable_id(softmax))
    assert callable_id(softmax) != callable_id(functools.partial(torch.softmax, dim=0))
    assert callable_id(lambda t: t * 2) != callable_id(lambda t: t * 3)


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


# -- "auto" --------------------------------------------------------------------


class Slow(nn.Module):
    """A net that takes ``delay`` seconds per call: far slower than a lookup."""

    def __init__(self, delay=0.02):
        super().__init__()
        self.delay = delay
        self.linear = nn.Linear(30, 2)

    def forward(self, x):
        time.sleep(self.delay)
        return self.linear(x)


def test_auto_caches_a_slow_net(data):
    X, _ = data
    module = Slow()
    nt = NeuralTransformer(module, batch_size=50).fit(X)  # cache="auto"
    nt.transform(X)
    counter = RowCounter(module)
    nt.transform(X[:100])
    assert counter.rows == 0


def test_auto_runs_a_net_that_is_cheaper_than_a_lookup(data, monkeypatch):
    X, _ = data
    # Pretend a lookup is very expensive, so that any net is cheaper.
    monkeypatch.setattr(_cache, "_AUTO_MIN_SECONDS", 0.0)
    monkeypatch.setattr(_cache, "_AUTO_FACTOR", 1e12)
    module = pretrained()
    nt = NeuralTransformer(module, output="logits").fit(X)
    nt.transform(X)
    counter = RowCounter(module)
    out = nt.transform(X)
    assert counter.rows == len(X)
    assert _cache._MEMORY.nbytes == 0
    np.testing.assert_allclose(out, run_module(module, X), rtol=1e-5, atol=1e-6)


def test_auto_judges_a_net_only_on_a_long_enough_call(data, monkeypatch):
    X, _ = data
    monkeypatch.setattr(_cache, "_AUTO_MIN_SECONDS", 0.2)
    slow = NeuralTransformer(Slow(delay=0.3)).fit(X[:2])  # 0.3 s for 2 rows: judged
    assert _cache._MEMORY.nbytes > 0
    NeuralTransformer(pretrained()).fit(X).transform(X[:3])  # microseconds: not judged
    assert list(_cache._MEMORY._decisions.values()) == [True]
    counter = RowCounter(slow.module_)
    slow.transform(X[:2])
    assert counter.rows == 0


# -- bounded memory ------------------------------------------------------------


def test_memory_is_bounded_and_evicts_least_recently_used():
    row_bytes = 8 * 4 + _cache._INDEX_BYTES_PER_ROW
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
    monkeypatch.setattr(_cache, "_DISKS", {})
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
    monkeypatch.setattr(_cache, "_DISKS", {})
    expected = run_module(module, X)
    counter = RowCounter(module)
    nt = NeuralTransformer(module, cache=tmp_path).fit(X[:2])
    np.testing.assert_allclose(nt.transform(X), expected, rtol=1e-5, atol=1e-6)
    assert counter.rows == 0
