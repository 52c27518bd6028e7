"""The bad-input matrix: every public estimator x each method x each input kind.

Each case is either *the same* as the clean result (valid input in another
dtype, memory order or container) or *a clear error*: a ``ValueError`` or
``TypeError`` raised by skchain or scikit-learn -- never an error from deep
inside torch, never a silent result.
"""

import copy
import os
import shutil
import warnings

import _disk_forgery
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge
from skorch import NeuralNetClassifier, NeuralNetRegressor
from torch import nn

from skchain import (
    MergedHeadsClassifier,
    ModuleClassifier,
    NeuralTransformer,
    OutputEnsembleClassifier,
    OutputEnsembleRegressor,
    _cache_trust,
    _claims,
    _disk,
)

try:
    import fcntl
except ImportError:  # Windows: no claims
    fcntl = None

N_FEATURES = 16


def _data():
    # Digits pixels are integers 0..16: exact in float16, int8 and float32, so
    # every valid dtype must give bitwise the same float32 rows.
    X, y = load_digits(return_X_y=True)
    X = X[:300, ::4]  # 16 features, keeps the nets tiny
    return np.ascontiguousarray(X), y[:300]


def _mlp(n_out=10, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(N_FEATURES, 12), nn.ReLU(), nn.Linear(12, n_out))


def _skorch_classifier(X, y):
    torch.manual_seed(1)
    net = NeuralNetClassifier(
        _mlp, criterion=nn.CrossEntropyLoss, lr=0.05, max_epochs=2, train_split=None, verbose=0
    )
    return net.fit(X.astype(np.float32), y)


def _skorch_regressor(X, y):
    torch.manual_seed(2)
    net = NeuralNetRegressor(
        _mlp, module__n_out=1, lr=0.001, max_epochs=2, train_split=None, verbose=0
    )
    return net.fit(X.astype(np.float32), y.astype(np.float32).reshape(-1, 1))


def _estimators():
    """name -> (fitted estimator, methods to call, unfitted twin or None)."""
    X, y = _data()
    module = _mlp()
    clf_net = _skorch_classifier(X, y)
    reg_net = _skorch_regressor(X, y)
    classes = np.arange(10)
    made = {}

    def add(name, make, methods, fit_y=None):
        est = make()
        made[name] = (est.fit(X, fit_y) if fit_y is not None else est.fit(X), methods, make)

    add("nt_proba", lambda: NeuralTransformer(module, output="proba"), ["transform"])
    add("nt_layer", lambda: NeuralTransformer(module, output="0"), ["transform"])
    add("nt_embedding", lambda: NeuralTransformer(module, output="embedding"), ["transform"])
    add(
        "nt_trained",
        lambda: NeuralTransformer(
            NeuralNetClassifier(
                _mlp, criterion=nn.CrossEntropyLoss, lr=0.05, max_epochs=2,
                train_split=None, verbose=0,
            ),
            cv=None,
            random_state=0,
        ),
        ["transform"],
        fit_y=y,
    )
    add(
        "module_classifier",
        lambda: ModuleClassifier(module, classes),
        ["predict", "predict_proba"],
        fit_y=y,
    )
    add(
        "ensemble_classifier",
        lambda: OutputEnsembleClassifier(
            [
                ("module", ModuleClassifier(module, classes)),
                ("skorch", clf_net),
                ("sklearn", LogisticRegression(max_iter=200).fit(X, y)),
            ]
        ),
        ["predict", "predict_proba", "transform"],
        fit_y=y,
    )
    add(
        "ensemble_regressor",
        lambda: OutputEnsembleRegressor(
            [("skorch", reg_net), ("sklearn", Ridge().fit(X, y.astype(float)))]
        ),
        ["predict"],
        fit_y=y.astype(float),
    )
    torch.manual_seed(3)
    backbone = nn.Sequential(nn.Linear(N_FEATURES, 8), nn.Tanh())
    heads = [
        ("low", nn.Linear(8, 5), [0, 1, 2, 3, 4]),
        ("high", nn.Linear(8, 5), [5, 6, 7, 8, 9]),
    ]
    add(
        "merged_heads",
        lambda: MergedHeadsClassifier(backbone, heads, calibration="temperature"),
        ["predict", "predict_proba"],
        fit_y=y,
    )
    return made


@pytest.fixture(scope="module")
def fitted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _estimators()


# -- input kinds ----------------------------------------------------------------
# "same" kinds: (name, X -> X') whose result must equal the result on float32(X').


def _readonly(X):
    X = X.copy()
    X.setflags(write=False)
    return X


def _strided(X):
    wide = np.zeros((X.shape[0], 2 * X.shape[1]))
    wide[:, ::2] = X
    return wide[:, ::2]


def _mixed_frame(X):
    df = pd.DataFrame(X.astype(np.float32), columns=[f"f{i}" for i in range(X.shape[1])])
    return df.astype({"f0": "int64", "f1": "int8", "f2": "float64", "f3": "Int64"})


def _dask_array(X, chunks=(70, 5)):
    da = pytest.importorskip("dask.array")
    return da.from_array(X, chunks=chunks)


def _dask_frame(X):
    dd = pytest.importorskip("dask.dataframe")
    return dd.from_pandas(pd.DataFrame(X), npartitions=3)


def _dask_unknown_chunks(X):
    Xd = _dask_array(X)
    return Xd[Xd[:, 0] >= 0]


SAME = {
    "float64": lambda X: X.astype(np.float64),
    "float32_fortran": lambda X: np.asfortranarray(X.astype(np.float32)),
    "float16": lambda X: X.astype(np.float16),
    "int8": lambda X: X.astype(np.int8),
    "int64": lambda X: X.astype(np.int64),
    "uint8": lambda X: X.astype(np.uint8),
    "bool": lambda X: X > 8,
    "list": lambda X: X.tolist(),
    "tuple_rows": lambda X: tuple(tuple(r) for r in X.tolist()),
    "readonly": _readonly,
    "strided_view": _strided,
    "dataframe": lambda X: pd.DataFrame(X),
    "dataframe_mixed_dtypes": _mixed_frame,
    "numeric_strings": lambda X: X.astype(str).astype(object),
    "one_row": lambda X: X[:1],
    "two_rows": lambda X: X[:2],
    # Computed by _call: a lazy dask array, block by block (tests/test_dask.py).
    "dask_array": _dask_array,
    "dask_dataframe": _dask_frame,
}


def _with(value):
    def make(X):
        X = X.astype(np.float64).copy()
        X[1, 2] = value
        return X

    return make


def _with32(value):
    # float32 in C order takes the fast path that skips validate_data: NaN and
    # infinity must still be caught there (during the run, for NeuralTransformer).
    def make(X):
        X = np.ascontiguousarray(X, dtype=np.float32)
        X[-1, 2] = value
        return X

    return make


def _object_none(X):
    X = X.astype(object)
    X[0, 0] = None
    return X


def _frame_with_na(X):
    df = pd.DataFrame(X.astype(np.float64))
    df.iloc[3, 1] = np.nan
    return df


ERROR = {
    "nan": _with(np.nan),
    "pos_inf": _with(np.inf),
    "neg_inf": _with(-np.inf),
    "nan_float32": _with32(np.nan),
    "neg_inf_float32": _with32(-np.inf),
    "beyond_float32": _with(1e39),
    "words": lambda X: np.where(X > 8, "high", "low"),
    "object_none": _object_none,
    "dataframe_with_na": _frame_with_na,
    "one_d": lambda X: X[0],
    "three_d": lambda X: X[:, :, None],
    "zero_rows": lambda X: X[:0],
    "too_few_columns": lambda X: X[:, :-1],
    "too_many_columns": lambda X: np.hstack([X, X[:, :1]]),
    "sparse_csr": lambda X: sp.csr_matrix(X),
    "complex": lambda X: X.astype(np.complex128),
    "scalar": lambda X: 3.0,
    "none": lambda X: None,
    "dask_nan": lambda X: _dask_array(_with(np.nan)(X)),
    "dask_unknown_chunks": _dask_unknown_chunks,
    "dask_too_few_columns": lambda X: _dask_array(X[:, :-1]),
    "dask_one_d": lambda X: _dask_array(X[:, 0], chunks=70),
}


def _cases(fitted_names_methods):
    for name, methods in fitted_names_methods:
        for method in methods:
            for kind in SAME:
                yield pytest.param(name, method, kind, id=f"{name}-{method}-{kind}")


NAMES_METHODS = [
    ("nt_proba", ["transform"]),
    ("nt_layer", ["transform"]),
    ("nt_embedding", ["transform"]),
    ("nt_trained", ["transform"]),
    ("module_classifier", ["predict", "predict_proba"]),
    ("ensemble_classifier", ["predict", "predict_proba", "transform"]),
    ("ensemble_regressor", ["predict"]),
    ("merged_heads", ["predict", "predict_proba"]),
]


def _pairs():
    return [(name, m) for name, methods in NAMES_METHODS for m in methods]


def _call(est, method, X):
    with warnings.catch_warnings():
        # A DataFrame given to an estimator fitted on an array is a warning in
        # scikit-learn; the result must still be right.
        warnings.filterwarnings("ignore", message="X has feature names")
        result = getattr(est, method)(X)
    if hasattr(result, "dask"):  # a lazy dask result: its errors come at compute
        return result.compute()
    return result


@pytest.mark.parametrize("kind", sorted(SAME))
@pytest.mark.parametrize("name,method", _pairs())
def test_valid_input_gives_the_clean_result(fitted, name, method, kind):
    X, _ = _data()
    est = fitted[name][0]
    X_kind = SAME[kind](X)
    reference = np.asarray(X_kind, dtype=np.float64).astype(np.float32)
    expected = _call(est, method, reference)
    result = _call(est, method, X_kind)
    result = np.asarray(result)
    assert result.shape == expected.shape
    assert result.dtype == expected.dtype
    if result.dtype.kind == "f":
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-7)
    else:
        np.testing.assert_array_equal(result, expected)


def _assert_clear_error(excinfo):
    assert excinfo.type in (ValueError, TypeError) or issubclass(
        excinfo.type, (ValueError, TypeError)
    ), f"{excinfo.type.__name__}: {excinfo.value}"
    # Raised by skchain or scikit-learn at the public call, not from deep
    # inside torch or numpy with a message about tensors.
    frame = excinfo.traceback[-1]
    path = str(frame.path)
    assert "/torch/" not in path, f"raised inside torch: {path}: {excinfo.value}"
    assert len(str(excinfo.value)) > 20


@pytest.mark.parametrize("kind", sorted(ERROR))
@pytest.mark.parametrize("name,method", _pairs())
def test_invalid_input_is_a_clear_error(fitted, name, method, kind):
    X, _ = _data()
    est = fitted[name][0]
    with pytest.raises(Exception) as excinfo:
        _call(est, method, ERROR[kind](X))
    _assert_clear_error(excinfo)


FIT_KINDS = ["nan", "pos_inf", "words", "one_d", "three_d", "zero_rows", "sparse_csr", "none"]


@pytest.mark.parametrize("kind", FIT_KINDS)
@pytest.mark.parametrize("name", [n for n, _ in NAMES_METHODS])
def test_fit_on_invalid_input_is_a_clear_error(fitted, name, kind):
    X, y = _data()
    make = fitted[name][2]
    y_fit = y.astype(float) if name == "ensemble_regressor" else y
    X_bad = ERROR[kind](X)
    with pytest.raises(Exception) as excinfo:
        make().fit(X_bad, y_fit)
    _assert_clear_error(excinfo)


@pytest.mark.parametrize("kind", ["float64", "float32_fortran", "int64", "dataframe", "list"])
@pytest.mark.parametrize("name", [n for n, _ in NAMES_METHODS])
def test_fit_on_valid_input_gives_the_clean_model(fitted, name, kind):
    X, y = _data()
    make = fitted[name][2]
    method = fitted[name][1][-1]
    y_fit = y.astype(float) if name == "ensemble_regressor" else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = make().fit(X.astype(np.float32), y_fit)
        other = make().fit(SAME[kind](X), y_fit)
    np.testing.assert_allclose(
        np.asarray(_call(other, method, X), dtype=float),
        np.asarray(_call(clean, method, X), dtype=float),
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("name,method", _pairs())
def test_call_before_fit_is_not_fitted_error(fitted, name, method):
    if name == "module_classifier":
        pytest.skip("a ModuleClassifier is fitted by construction (a pretrained module)")
    est = fitted[name][2]()
    X, _ = _data()
    with pytest.raises(NotFittedError):
        getattr(est, method)(X)


BAD_LABELS = {
    "nan_label": lambda y: np.where(np.arange(len(y)) == 0, np.nan, y.astype(float)),
    "wrong_length": lambda y: y[:-1],
    "two_d_wide": lambda y: np.c_[y, y],
}


@pytest.mark.parametrize("kind", sorted(BAD_LABELS))
@pytest.mark.parametrize(
    "name", ["nt_trained", "ensemble_classifier", "merged_heads", "ensemble_regressor"]
)
def test_bad_labels_are_a_clear_error(fitted, name, kind):
    X, y = _data()
    make = fitted[name][2]
    with pytest.raises(Exception) as excinfo:
        make().fit(X, BAD_LABELS[kind](y))
    _assert_clear_error(excinfo)


def _bad_params():
    module = _mlp()
    classes = np.arange(10)
    return {
        "nt_output_typo": lambda: NeuralTransformer(module, output="logit"),
        "nt_batch_size_zero": lambda: NeuralTransformer(module, batch_size=0),
        "nt_device_tpu": lambda: NeuralTransformer(module, device="tpu"),
        "nt_device_gpu0": lambda: NeuralTransformer(module, device="gpu0"),
        "nt_net_none": lambda: NeuralTransformer(None),
        "nt_cache_int": lambda: NeuralTransformer(module, cache=3),
        "mc_output_typo": lambda: ModuleClassifier(module, classes, output="logit"),
        "mc_batch_size_zero": lambda: ModuleClassifier(module, classes, batch_size=0),
        "mc_batch_size_negative": lambda: ModuleClassifier(module, classes, batch_size=-1),
        "mc_module_none": lambda: ModuleClassifier(None, classes),
        "mc_too_few_classes": lambda: ModuleClassifier(module, [0, 1, 2]),
        "mc_duplicate_classes": lambda: ModuleClassifier(module, [0] * 10),
        "oec_empty": lambda: OutputEnsembleClassifier([]),
        "oec_voting_typo": lambda: OutputEnsembleClassifier(
            [("a", ModuleClassifier(module, classes))], voting="sofft"
        ),
        "oec_not_a_list": lambda: OutputEnsembleClassifier(ModuleClassifier(module, classes)),
        "oer_negative_weights": lambda: OutputEnsembleRegressor(
            [("a", Ridge()), ("b", Ridge())], weights=[-1, 2]
        ),
        "mhc_heads_dict": lambda: MergedHeadsClassifier(
            nn.Identity(), {"a": (nn.Linear(N_FEATURES, 2), [0, 1])}
        ),
        "mhc_calibration_typo": lambda: MergedHeadsClassifier(
            nn.Identity(), [("a", nn.Linear(N_FEATURES, 2), [0, 1])], calibration="temp"
        ),
    }


@pytest.mark.parametrize("case", sorted(_bad_params()))
def test_bad_constructor_params_are_a_clear_error_at_first_use(case):
    X, y = _data()
    est = _bad_params()[case]()
    with pytest.raises(Exception) as excinfo:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if case.startswith("mc_"):
                # ModuleClassifier's documented use is without fit.
                est.predict_proba(X)
            else:
                est.fit(X, y)
                getattr(est, "predict", getattr(est, "transform", None))(X)
    _assert_clear_error(excinfo)


# -- the disk cache's folder, key and blocks ---------------------------------------
# A folder or key others could write: a clear error. Blocks damaged, planted
# without the key, of another key or an older format, or left half-written by a
# killed writer: the clean result (tests/test_disk.py and tests/test_cache.py
# hold the detailed cases).


def _chmod(relative, mode):
    def make(folder):
        os.chmod(folder / relative, mode)

    return make


def _another_owner(folder):
    # Tests run as root here: the folder really is another user's. Elsewhere
    # the case is covered by tests/test_disk.py's simulated owner.
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder to another user")
    os.chown(folder, 4242, 4242)


def _key_mode(mode):
    def make(folder):
        os.chmod(_cache_trust.key_file()[0], mode)

    return make


def _not_a_key(folder):
    with open(_cache_trust.key_file()[0], "w") as handle:
        handle.write("0123\n")


def _group_writable(folder):
    # By a group with other members than the user (their own private group
    # would be accepted).
    if os.geteuid() != 0:
        pytest.skip("needs root to give a folder another group")
    os.chown(folder, -1, 4242)
    os.chmod(folder, 0o770)


UNSAFE_CACHES = {
    "folder_world_writable": _chmod(".", 0o777),
    "folder_group_writable": _group_writable,
    "subfolder_world_writable": _chmod("joblib/skchain_outputs", 0o777),
    "folder_of_another_user": _another_owner,
    "key_readable_by_others": _key_mode(0o644),
    "key_writable_by_group": _key_mode(0o620),
    "key_not_a_key": _not_a_key,
}


def _each_block(change):
    def make(folder):
        for path in folder.rglob("output.pkl"):
            change(path)

    return make


def _half_written(folder):
    # What a writer killed mid-block leaves: a temporary file, no block.
    for path in folder.rglob("output.pkl"):
        data = path.read_bytes()
        (path.parent / ".tmp-killed").write_bytes(data[: len(data) // 2])
        path.unlink()


def _claims_on_missing_blocks(claim):
    # The blocks are gone, so the rows are computed again, under a claim fault
    # (skchain/_claims.py; tests/test_claims.py holds the detailed cases).
    def make(folder):
        key = _cache_trust.load_key(_cache_trust.key_file()[0])
        for path in list(folder.rglob("output.pkl")):
            namespace = path.parent.parent.name[1:]
            keys, _ = _disk._read_index(str(path), key, namespace)
            path.unlink()
            claims = path.parent.parent.parent / "claims" / ("m" + namespace)
            claims.mkdir(parents=True, exist_ok=True)
            claim(claims, keys)

    return make


def _dead_claim(folder, keys):
    # What a claimer killed mid-rows leaves: its file, no lock.
    data = _claims._MAGIC + len(keys[0]).to_bytes(4, "little") + b"".join(keys)
    (folder / f"dead{len(keys)}-{keys[0].hex()}.claim").write_bytes(data)


_HELD = []  # files the faulty cases keep locked, closed by the test


def _held_damaged_claim(folder, keys):
    handle = open(folder / f"damaged{len(_HELD)}.claim", "wb")
    handle.write(b"garbage")
    handle.flush()
    fcntl.flock(handle, fcntl.LOCK_EX)  # as a live process holds it
    _HELD.append(handle)


def _claims_folder_a_file(folder):
    for path in list(folder.rglob("output.pkl")):
        path.unlink()
    claims = folder / "joblib" / "skchain_outputs" / "claims"
    shutil.rmtree(claims, ignore_errors=True)  # the fixture's run made it
    claims.write_text("not a folder")


FAULTY_CACHES = {
    "block_planted_unkeyed_checksums": _each_block(_disk_forgery.plant),
    "block_of_another_key": _each_block(_disk_forgery.with_key(b"x" * 32)),
    "block_of_the_older_format": _each_block(_disk_forgery.old_format),
    "block_half_written_by_a_killed_writer": _half_written,
    "block_truncated": _each_block(lambda p: p.write_bytes(p.read_bytes()[:-4])),
    "claim_left_by_a_dead_process": _claims_on_missing_blocks(_dead_claim),
    "claims_folder_is_a_file": _claims_folder_a_file,
}
if fcntl is not None:
    FAULTY_CACHES["claim_damaged_and_held_by_a_live_process"] = _claims_on_missing_blocks(
        _held_damaged_claim
    )


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    """A private cache folder holding the blocks of ``_mlp()`` on ``_data()``,
    and a key of this test's own; the in-process stores are fresh."""
    from skchain import _cache
    from skchain._cache import _MemoryStore

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(_cache_trust, "_KEYS", {})
    monkeypatch.setattr(_disk, "_DISKS", {})
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    folder = tmp_path / "cache"
    X, _ = _data()
    NeuralTransformer(_mlp(), cache=folder).fit(X).transform(X)
    assert any(folder.rglob("output.pkl"))
    # As a new process: nothing in memory, nothing indexed.
    monkeypatch.setattr(_cache_trust, "_KEYS", {})
    monkeypatch.setattr(_disk, "_DISKS", {})
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    return folder


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and owners")
@pytest.mark.parametrize("kind", sorted(UNSAFE_CACHES))
def test_unsafe_cache_is_a_clear_error(cache_folder, kind):
    X, _ = _data()
    UNSAFE_CACHES[kind](cache_folder)
    with pytest.raises(Exception) as excinfo:
        NeuralTransformer(_mlp(), cache=cache_folder).fit(X).transform(X)
    _assert_clear_error(excinfo)
    assert excinfo.type is ValueError
    # Names what is wrong, and the fix.
    assert any(fix in str(excinfo.value) for fix in ("chmod", "Delete it")), excinfo.value


@pytest.mark.parametrize("kind", sorted(FAULTY_CACHES))
def test_faulty_cache_gives_the_clean_result(cache_folder, kind):
    X, _ = _data()
    expected = NeuralTransformer(_mlp(), cache=False).fit(X).transform(X)
    try:
        FAULTY_CACHES[kind](cache_folder)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="skchain found .* corrupt")
            result = NeuralTransformer(_mlp(), cache=cache_folder).fit(X).transform(X)
    finally:
        while _HELD:
            _HELD.pop().close()
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-7)


def test_matrix_size():
    # The issue asks for at least 20 input kinds per public method.
    assert len(SAME) + len(ERROR) >= 20
    n_methods = len(_pairs())
    assert n_methods >= 12


# -- parameters set after fit ---------------------------------------------------
# set_params on a fitted estimator (in a notebook, by a search's refit tooling)
# must be validated by every method that uses the parameters, with fit's error.


def _runner_of(name, est):
    """The estimator whose batch_size the calls of ``name`` use: its own, or an
    ensemble's first member (a ModuleClassifier, a skorch regressor)."""
    return est.estimators[0][1] if name.startswith("ensemble") else est


@pytest.mark.parametrize("value", [0, -1, "x", 2.5, None])
@pytest.mark.parametrize("name,method", _pairs())
def test_batch_size_set_after_fit_is_a_clear_error(fitted, name, method, value):
    X, _ = _data()
    est = copy.deepcopy(fitted[name][0])  # the fixture's estimators stay as they are
    expected = _call(est, method, X)
    runner = _runner_of(name, est)
    if name == "ensemble_regressor" and value in (-1, None):
        # skorch's own meaning: all rows in one batch.
        runner.set_params(batch_size=value)
        np.testing.assert_allclose(_call(est, method, X), expected, rtol=1e-5, atol=1e-7)
        return
    runner.set_params(batch_size=value)
    with pytest.raises(Exception, match="batch_size") as excinfo:
        _call(est, method, X)
    _assert_clear_error(excinfo)
    # Set right again, the estimator gives its clean result again.
    runner.set_params(batch_size=7)
    result = _call(est, method, X)
    if np.asarray(result).dtype.kind == "f":
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-7)
    else:
        np.testing.assert_array_equal(result, expected)


def _other_members(est):
    # Other member objects: the weights and class alignment fit learned were
    # for the members it saw.
    return [(n, copy.deepcopy(m)) for n, m in est.estimators]


# name -> {case: params to set after fit}
AFTER_FIT = {
    "nt_proba": {"cache_int": {"cache": 3}, "frozen_str": {"frozen": "yes"},
                 "n_jobs_str": {"n_jobs": "all"}},
    "nt_trained": {"cache_int": {"cache": 3}, "cv_str": {"cv": "five"}},
    "module_classifier": {"output_typo": {"output": "logit"},
                          "module_none": {"module": None},
                          "too_few_classes": {"classes": [0, 1, 2]}},
    "merged_heads": {"calibration_typo": {"calibration": "temp"},
                     "combiner_str": {"combiner": "lr"}},
    "ensemble_classifier": {"voting_typo": {"voting": "sofft"},
                            "weights_str": {"weights": "equal"},
                            "estimators_not_a_list": {"estimators": "all"},
                            "estimators_changed": {"estimators": _other_members},
                            "estimators_fewer": {"estimators": lambda est: est.estimators[:1]}},
    "ensemble_regressor": {"weights_str": {"weights": "equal"},
                           "estimators_changed": {"estimators": _other_members}},
}


def _after_fit_cases():
    for name, cases in AFTER_FIT.items():
        for method in dict(NAMES_METHODS)[name]:
            for case in cases:
                yield pytest.param(name, method, case, id=f"{name}-{method}-{case}")


@pytest.mark.parametrize("name,method,case", list(_after_fit_cases()))
def test_params_set_after_fit_are_a_clear_error(fitted, name, method, case):
    X, _ = _data()
    est = copy.deepcopy(fitted[name][0])
    params = {k: v(est) if callable(v) else v for k, v in AFTER_FIT[name][case].items()}
    est.set_params(**params)
    with pytest.raises(Exception) as excinfo:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _call(est, method, X)
    _assert_clear_error(excinfo)
    assert any(key in str(excinfo.value) for key in [*params, "classes"])


# -- diverged training ------------------------------------------------------------


@pytest.mark.parametrize("how", ["fit", "fit_transform", "fit_transform_cv_none"])
def test_diverged_training_is_a_clear_error_at_fit(fitted, how):
    # lr=1e20 trains the weights to NaN: the fit says so, naming the epoch,
    # the loss and the fix, instead of a transform of NaN.
    X, y = _data()
    est = fitted["nt_trained"][2]().set_params(net__lr=1e20, cv="auto")
    if how == "fit_transform_cv_none":
        est.set_params(cv=None)
    with pytest.raises(Exception, match=r"(?s)diverged at epoch \d.*nan.*lr=1e\+20.*"
                                        r"GradientNormClipping") as excinfo:
        getattr(est, "fit" if how == "fit" else "fit_transform")(X, y)
    _assert_clear_error(excinfo)
    with pytest.raises(NotFittedError):
        est.transform(X)


# -- texts ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder():
    pytest.importorskip("sentence_transformers")
    from skchain import TextEmbedder

    return TextEmbedder(cache=False).fit(["a text"])


UNENCODABLE = {
    "lone_high_surrogate": ["ok", "\ud800"],
    "lone_low_surrogate": ["ok", "x \udfff y"],
    "half_emoji": ["ok", "smile \ud83d"],
    "surrogateescape": ["ok", b"caf\xe9".decode("utf-8", "surrogateescape")],
    "bytes": ["ok", b"bytes"],
    "none": ["ok", None],
    "number": ["ok", 3],
}


@pytest.mark.parametrize("method", ["fit", "transform"])
@pytest.mark.parametrize("kind", sorted(UNENCODABLE))
def test_text_rows_the_tokenizer_cannot_take_are_a_clear_error(embedder, kind, method):
    texts = UNENCODABLE[kind]
    est = copy.deepcopy(embedder) if method == "transform" else clone(embedder)
    with pytest.raises(Exception, match="(?i)row 1") as excinfo:
        getattr(est, method)(texts)
    _assert_clear_error(excinfo)


@pytest.mark.parametrize("value", [0, -1, "x"])
def test_text_batch_size_set_after_fit_is_a_clear_error(embedder, value):
    est = copy.deepcopy(embedder).set_params(batch_size=value)
    with pytest.raises(Exception, match="batch_size") as excinfo:
        est.transform(["a text"])
    _assert_clear_error(excinfo)


# -- ImageEmbedder: images in -------------------------------------------------------
# Its input is images, not a table: files, PIL images and pixel arrays. Each
# "same" kind must give the rows of the uint8 (n, H, W, C) array; each error
# kind a clear error naming the file or row.


def _image_net():
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, 3),
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    pytest.importorskip("PIL")
    from PIL import Image

    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 256, size=(6, 12, 10, 3)).astype(np.uint8)
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, p in enumerate(pixels):
        paths.append(str(folder / f"img_{i}.png"))
        Image.fromarray(p).save(paths[-1])
    png = open(paths[0], "rb").read()
    (folder / "cut.png").write_bytes(png[: len(png) // 2])
    (folder / "readme.txt").write_text("plain text")
    Image.fromarray(pixels[0, :, :5]).save(folder / "narrow.png")
    Image.fromarray(pixels[0, :, :, 0]).save(folder / "grey.png")
    return pixels, paths, folder


def _image_same(pixels, paths):
    from PIL import Image

    strided = np.zeros((6, 12, 20, 3), np.uint8)
    strided[:, :, ::2] = pixels
    return {
        "files": paths,
        "pathlib": [__import__("pathlib").Path(p) for p in paths],
        "pil": [Image.open(p) for p in paths],
        "uint8_channels_first": np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)),
        "list_of_arrays": list(pixels),
        "tuple_of_arrays": tuple(pixels),
        "series_of_paths": pd.Series(paths),
        "frame_of_paths": pd.DataFrame({"image": paths}),
        "object_array": np.asarray(paths, dtype=object),
        "str_array": np.asarray(paths),
        "readonly": _readonly(pixels),
        "fortran": np.asfortranarray(pixels),
        "strided_view": strided[:, :, ::2],
        "float_unit": pixels / 255.0,
        "float32_unit": (pixels / 255.0).astype(np.float32),
        "one_image": pixels[:1],
    }


def _image_errors(pixels, paths, folder):
    from PIL import Image

    nan = pixels / 255.0
    nan[2, 3, 4, 1] = np.nan
    inf = pixels / 255.0
    inf[1, 0, 0, 0] = np.inf
    return {
        "missing_file": paths[:2] + [str(folder / "missing.png")],
        "truncated_file": paths[:2] + [str(folder / "cut.png")],
        "text_file": [str(folder / "readme.txt")] + paths[:2],
        "folder": [str(folder)],
        "mixed_sizes": paths[:2] + [str(folder / "narrow.png")],
        "mixed_size_arrays": list(pixels[:2]) + [np.ascontiguousarray(pixels[0, :, :5])],
        "nan": nan,
        "inf": inf,
        "float_0_255": pixels.astype(np.float32),
        "negative_floats": pixels / 255.0 - 0.5,
        "int64": pixels.astype(np.int64),
        "int8": pixels.astype(np.int8),
        "bool": pixels > 100,
        "complex": pixels.astype(np.complex128),
        "empty_list": [],
        "zero_images": pixels[:0],
        "table": pixels.reshape(6, -1).astype(np.float64),
        "one_d_numbers": np.arange(6.0),
        "five_d": pixels[:, None],
        "no_channel_axis": np.zeros((2, 6, 7, 8), np.uint8),
        "ambiguous_layout": np.zeros((2, 3, 5, 3), np.uint8),
        "single_path": paths[0],
        "single_pil": Image.open(paths[0]),
        "number_in_list": paths[:1] + [1.5],
        "none_in_list": [None] + paths[:1],
        "bytes_in_list": [b"img.png"],
        "two_columns": pd.DataFrame({"a": paths, "b": paths}),
        "scalar": 3.0,
        "none": None,
    }


_IMAGE_SAME = [
    "files", "pathlib", "pil", "uint8_channels_first", "list_of_arrays", "tuple_of_arrays",
    "series_of_paths", "frame_of_paths", "object_array", "str_array", "readonly", "fortran",
    "strided_view", "float_unit", "float32_unit", "one_image",
]
_IMAGE_ERRORS = [
    "missing_file", "truncated_file", "text_file", "folder", "mixed_sizes", "mixed_size_arrays",
    "nan", "inf",
    "float_0_255", "negative_floats", "int64", "int8", "bool", "complex", "empty_list",
    "zero_images", "table", "one_d_numbers", "five_d", "no_channel_axis", "ambiguous_layout",
    "single_path", "single_pil", "number_in_list", "none_in_list", "bytes_in_list",
    "two_columns", "scalar", "none",
]


@pytest.mark.parametrize("kind", _IMAGE_SAME)
def test_image_embedder_valid_input_gives_the_clean_result(images, kind):
    from skchain import ImageEmbedder

    pixels, paths, _ = images
    embedder = ImageEmbedder(_image_net(), cache=False).fit(pixels)
    expected = embedder.transform(pixels)
    X = _image_same(pixels, paths)[kind]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X has feature names")
        result = embedder.transform(X)
    n = len(result)
    assert result.dtype == np.float32 and result.shape == (n, 4 * 4)
    np.testing.assert_allclose(result, expected[:n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["fit_transform", "transform"])
@pytest.mark.parametrize("kind", _IMAGE_ERRORS)
def test_image_embedder_invalid_input_is_a_clear_error(images, kind, method):
    from skchain import ImageEmbedder

    pixels, paths, folder = images
    X = _image_errors(pixels, paths, folder)[kind]
    with pytest.raises(Exception) as excinfo:
        if method == "fit_transform":
            # (fit alone checks what needs no decoding: a corrupt file that is
            # not the first is found when decoded.)
            ImageEmbedder(_image_net(), cache=False).fit_transform(X)
        else:
            # With the cache, files are hashed before anything is decoded.
            ImageEmbedder(_image_net(), cache=True).fit(paths).transform(X)
    _assert_clear_error(excinfo)
    message = str(excinfo.value)
    if kind.endswith("_file") or kind == "mixed_sizes":
        assert str(folder) in message  # names the file
    if kind == "mixed_size_arrays":
        assert "row 2 " in message  # names the row of X, cached or not


def test_image_embedder_converts_grey_files_to_rgb(images):
    from skchain import ImageEmbedder

    pixels, paths, folder = images
    embedder = ImageEmbedder(_image_net(), cache=False).fit(pixels)
    grey = embedder.transform([str(folder / "grey.png")])
    np.testing.assert_allclose(
        grey, embedder.transform(np.repeat(pixels[:1, :, :, :1], 3, axis=3)), atol=1e-6
    )


# -- ONNX and Keras models as members ---------------------------------------------
# Each bad model is a clear error at the first call, naming the file or the
# shape (and so the fix).


def _onnx_file(tmp_path):
    """A tiny conv net on (n, 1, 8, 8) images, as an ONNX file."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 10)).eval()
    path = tmp_path / "conv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
                          input_names=["images"], dynamic_axes={"images": {0: "n"}})
    return path


def _onnx_external(tmp_path):
    """:func:`_onnx_file` saved with its weights in ``conv.onnx.data`` beside it."""
    import onnx

    path = _onnx_file(tmp_path)
    proto = onnx.load(path)
    path.unlink()
    onnx.save_model(proto, str(path), save_as_external_data=True,
                    location="conv.onnx.data", size_threshold=0)
    return path


def _onnx_without_its_data(tmp_path):
    path = _onnx_external(tmp_path)
    (tmp_path / "conv.onnx.data").unlink()
    return path


def _images(layout="nchw"):
    X, _ = load_digits(return_X_y=True)
    X = X[:20].reshape(-1, 1, 8, 8).astype(np.float32)
    return X.transpose(0, 2, 3, 1) if layout == "nhwc" else X


BAD_MODELS = {
    # name: (build the model argument from tmp_path, X, what the message names)
    "onnx_shape_mismatch": (_onnx_file, lambda: _images("nhwc"),
                            r"shape \(n, 1, 8, 8\).*X has shape \(n, 8, 8, 1\)"),
    "onnx_wrong_size": (_onnx_file, lambda: _images()[:, :, :6, :6],
                        r"shape \(n, 1, 8, 8\).*\(n, 1, 6, 6\)"),
    "onnx_table_for_images": (_onnx_file, lambda: _data()[0], r"\(n, 1, 8, 8\).*\(n, 16\)"),
    "onnx_corrupt_file": (lambda p: (p / "bad.onnx").write_bytes(b"\x08\x07garbage")
                          and p / "bad.onnx", _images, "bad.onnx could not be read"),
    "onnx_text_file": (lambda p: (p / "notes.txt").write_text("not a model")
                       and p / "notes.txt", _images, "notes.txt could not be read"),
    "onnx_missing_path": (lambda p: p / "missing.onnx", _images,
                          "missing.onnx' does not exist"),
    "onnx_directory": (lambda p: p, _images, "does not exist \\(or is not a file\\)"),
    "onnx_not_a_model_proto": (lambda p: __import__("onnx").TensorProto(), _images,
                               "ONNX model is given as"),
    "onnx_uint8_given_fractions": (lambda p: _uint8_onnx(), lambda: _images() / 16,
                                   r"takes uint8 input.*not integers"),
    "onnx_unsupported_operator": (lambda p: _uint8_onnx(op=("NoSuchOp", "com.example")),
                                  _images, "onnxruntime could not load"),
    "onnx_external_data_missing": (_onnx_without_its_data, _images,
                                   r"external data file 'conv.onnx.data'.*does not exist"),
    "onnx_external_data_not_loaded": (
        lambda p: __import__("onnx").load(_onnx_external(p), load_external_data=False),
        _images, r"'conv.onnx.data', which this ModelProto does not hold"),
}


def _uint8_onnx(op=("Flatten", "")):
    """A graph on uint8 images (n, 1, 8, 8): Cast to float, then ``op``
    (Flatten; an operator of a custom domain onnxruntime does not know)."""
    from onnx import TensorProto, helper

    name, domain = op
    graph = helper.make_graph(
        [helper.make_node("Cast", ["pixels"], ["as_float"], to=TensorProto.FLOAT),
         helper.make_node(name, ["as_float"], ["flat"], domain=domain, axis=1)],
        "uint8_images",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["n", 64])],
    )
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)]
                                               if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize("wrapper", ["nt", "mc"])
@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_onnx_models_are_a_clear_error(case, wrapper, tmp_path):
    pytest.importorskip("onnxruntime")
    make, X, message = BAD_MODELS[case]
    model = make(tmp_path)
    if wrapper == "nt":
        est = NeuralTransformer(model)
    else:
        est = ModuleClassifier(model, classes=np.arange(10))
    with pytest.raises(Exception, match=message) as excinfo:
        est.fit(X())
    _assert_clear_error(excinfo)


# Merged heads given as (onnx_model, value) pairs: a bad pair is a clear error
# at fit, naming the value, the type or the file.
BAD_ONNX_HEADS = {
    # name: (heads from the ONNX file at path, what the message names)
    "onnx_head_unknown_value": (lambda path: [("a", (path, "fc"), [0, 1])],
                                "computes no value named 'fc'; its values are"),
    "onnx_head_value_not_a_name": (lambda path: [("a", (path, 3), [0, 1])],
                                   r"\(model, value_name\).*a str; got int"),
    "onnx_head_not_a_model": (lambda path: [("a", (42, "x"), [0, 1])],
                              "must be a torch.nn.Module, an ONNX model"),
    "onnx_head_missing_file": (lambda path: [("a", (path.parent / "gone.onnx", "x"), [0, 1])],
                               "gone.onnx' does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_ONNX_HEADS))
def test_bad_onnx_heads_are_a_clear_error(case, tmp_path):
    pytest.importorskip("onnxruntime")
    heads, message = BAD_ONNX_HEADS[case]
    est = MergedHeadsClassifier(nn.Identity(), heads(_onnx_file(tmp_path)))
    with pytest.raises(Exception, match=message) as excinfo:
        est.fit(_images(), np.arange(20) % 2)
    _assert_clear_error(excinfo)


def test_keras_model_on_another_backend_names_the_fix():
    # What Keras 3 on the TensorFlow or JAX backend hands over: a Keras model
    # that is no torch module.
    Model = type("Functional", (), {"__module__": "keras.src.models.functional",
                                    "get_weights": lambda self: [],
                                    "predict_on_batch": lambda self, x: x})
    for est in (NeuralTransformer(Model()), ModuleClassifier(Model(), classes=[0, 1])):
        with pytest.raises(TypeError, match="KERAS_BACKEND=torch") as excinfo:
            est.fit(_data()[0])
        _assert_clear_error(excinfo)
