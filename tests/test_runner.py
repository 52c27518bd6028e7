"""The runner: in-place writers never change X, chunked input checks, outputs
that never alias the caller's memory, and the quick finiteness test."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from skchain import NeuralTransformer, _inputs, _runner
from skchain._inputs import check_rows_deferred
from skchain._runner import run_module


class _Estimator:
    n_features_in_ = 4


def _rows(n, seed=0):
    return np.random.RandomState(seed).normal(size=(n, 4)).astype(np.float32)


def _reference(module, X):
    with torch.no_grad():
        return module(torch.from_numpy(X.copy())).numpy()


@pytest.mark.parametrize("n", [1, 5, 6, 23])
def test_a_module_writing_into_its_input_gets_copies(n):
    torch.manual_seed(0)
    module = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(4, 2))
    X = _rows(n)
    before = X.copy()
    expected = _reference(module, X)
    out = run_module(module, X, batch_size=5)
    np.testing.assert_array_equal(X, before)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    if n > 5:
        # Seen writing into the first batch: remembered, every batch is a copy.
        assert (None, False) in _runner._module_state(module).writes_input


class _WritesBigRows(nn.Module):
    """Writes into its input only when a row is large: a data-dependent writer
    that the first batch cannot reveal."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        if bool((x > 100).any()):
            x.clamp_(max=100)
        return self.linear(x)


@pytest.mark.parametrize("earlier_run", [False, True])
def test_a_writer_hidden_from_the_first_batch_is_a_clear_error_then_copied(earlier_run):
    torch.manual_seed(0)
    module = _WritesBigRows()
    if earlier_run:  # seen leaving its input alone: later runs read X from the start
        run_module(module, _rows(12), batch_size=4)
        assert (None, False) in _runner._module_state(module).reads_only
    X = _rows(12)
    X[9, 1] = 1000.0
    with pytest.raises(ValueError, match=r"wrote into its input in place for rows 8 to 11"):
        run_module(module, X, batch_size=4)
    assert X[9, 1] == 100.0  # said in the error: those rows were changed
    X[9, 1] = 1000.0
    before = X.copy()
    out = run_module(module, X, batch_size=4)  # now remembered as a writer
    np.testing.assert_array_equal(X, before)
    np.testing.assert_allclose(out, _reference(module, X), rtol=1e-6, atol=1e-7)


class _Identity(nn.Module):
    def forward(self, x):
        return x


class _ReturnsWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.arange(8.0).reshape(2, 4))

    def forward(self, x):
        return self.table[: x.shape[0]]


@pytest.mark.parametrize("n", [1, 2, 7])
def test_outputs_never_share_memory_with_the_input(n):
    X = _rows(n)
    for batch_size in (1, 3, 100):
        out = run_module(_Identity(), X, batch_size=batch_size)
        np.testing.assert_array_equal(out, X)
        assert not np.shares_memory(out, X)
        out[...] = 7.0
        np.testing.assert_array_equal(X, _rows(n))


def test_a_module_changed_to_write_into_its_input_is_caught_in_the_first_batch():
    torch.manual_seed(0)
    module = nn.Sequential(nn.ReLU(), nn.Linear(4, 2))
    X = _rows(6)
    run_module(module, X, batch_size=4)  # leaves its input alone: X read in place
    module[0].inplace = True
    with pytest.raises(ValueError, match=r"wrote into its input in place for rows 0 to 3"):
        run_module(module, X, batch_size=4)
    X = _rows(6)
    before = X.copy()
    np.testing.assert_allclose(
        run_module(module, X, batch_size=4), _reference(module, X), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(X, before)


def test_outputs_never_share_memory_with_the_weights():
    module = _ReturnsWeight()
    out = run_module(module, _rows(2), batch_size=8)
    out[...] = -1.0
    np.testing.assert_array_equal(module.table.detach().numpy(), np.arange(8.0).reshape(2, 4))


def test_a_captured_input_layer_does_not_alias_the_input():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 2))
    X = _rows(3)
    out = run_module(module, X, layers=["0"], layer_inputs=True)
    np.testing.assert_array_equal(out, X)
    assert not np.shares_memory(out, X)


@pytest.mark.parametrize("where", [0, 4, 29])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_checked_runs_catch_nan_and_infinity_in_any_chunk(monkeypatch, where, value):
    monkeypatch.setattr(_runner, "_COPY_BYTES", 4 * 16)  # chunks of 4 rows of 4 float32
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 2))
    X = _rows(30)
    X[where, 2] = value
    X_checked, scanned = check_rows_deferred(_Estimator(), X)
    assert not scanned and X_checked is X
    with pytest.raises(ValueError, match="Input X contains (NaN|infinity)"):
        run_module(module, X, batch_size=2, check_input=_Estimator())


def test_neural_transformer_reports_nan_in_the_last_chunk_like_validate_data(monkeypatch):
    monkeypatch.setattr(_runner, "_COPY_BYTES", 4 * 16)
    torch.manual_seed(0)
    X = _rows(30)
    nt = NeuralTransformer(nn.Sequential(nn.Linear(4, 2)), batch_size=2, cache=False).fit(X)
    bad = X.copy()
    bad[-1, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN") as fast:
        nt.transform(bad)
    with pytest.raises(ValueError, match="Input X contains NaN") as slow:
        nt.transform(bad.astype(np.float64))  # through validate_data
    assert str(fast.value) == str(slow.value)
    for cache in (True, "auto"):
        with pytest.raises(ValueError, match="Input X contains NaN"):
            nt.set_params(cache=cache).transform(bad)


@pytest.mark.parametrize("cache", [False, True, "auto"])
def test_neural_transformer_scans_each_input_value_once(monkeypatch, cache):
    """With or without a cache, each value of X is checked for NaN once: a
    cached transform checks the rows before hashing them, and its run does
    not check them again."""
    monkeypatch.setattr(_runner, "_COPY_BYTES", 4 * 8 * 64)
    scanned = []
    real = _inputs.all_finite

    def counting(array):
        if array.ndim == 2 and array.shape[1] == 8:
            scanned.append(array.size)
        return real(array)

    monkeypatch.setattr(_inputs._numeric, "all_finite", counting)  # where check_finite_input looks
    torch.manual_seed(0)
    X = np.random.RandomState(0).normal(size=(1000, 8)).astype(np.float32)
    module = nn.Sequential(nn.Linear(8, 512), nn.ReLU(), nn.Linear(512, 3))
    nt = NeuralTransformer(module, batch_size=64, cache=cache).fit(X[:5])
    for _ in range(2):  # a first call (all misses) and a second one (all hits)
        scanned.clear()
        nt.transform(X)
        assert sum(scanned) == X.size


def test_batches_for_another_device_come_in_order(monkeypatch):
    """The path for a GPU, run with the CPU standing in for it: whole chunks
    are moved (on a real device .to() makes the copy), then split in order."""
    monkeypatch.setattr(_runner, "_COPY_BYTES", 4 * 16)
    X = _rows(11)
    batches = list(_runner._copies(X, 2, torch.device("cpu"), None))
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2, 1]
    np.testing.assert_array_equal(torch.cat(batches).numpy(), X)


def test_assume_finite_skips_the_scan_as_in_scikit_learn():
    """Inside config_context(assume_finite=True) scikit-learn skips its NaN
    checks; the deferred scan does too, whatever the input's dtype (the
    fast path or validate_data), with or without a cache."""
    from sklearn import config_context
    from sklearn.preprocessing import StandardScaler

    torch.manual_seed(0)
    X = _rows(50)
    bad = X.copy()
    bad[7, 1] = np.nan
    for cache in (False, True):
        nt = NeuralTransformer(nn.Sequential(nn.Linear(4, 2)), cache=cache).fit(X)
        with pytest.raises(ValueError, match="Input X contains NaN"):
            nt.transform(bad)
        with config_context(assume_finite=True):
            StandardScaler().fit(X).transform(bad)  # scikit-learn: no check
            for rows in (bad, bad.astype(np.float64)):
                with pytest.warns(RuntimeWarning, match="NaN or infinity in 1 of 50 rows"):
                    out = nt.transform(rows)
                assert np.isnan(out[7]).all() and np.isfinite(np.delete(out, 7, 0)).all()
