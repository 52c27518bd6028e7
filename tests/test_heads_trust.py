"""MergedHeadsClassifier holds the trust contract: validated input, no half
fitted state, the user's modules left alone and shared, threads."""

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.utils.validation import check_is_fitted
from torch import nn

from skchain import MergedHeadsClassifier

N_FEATURES = 5
LABELS = np.array([0, 1, 2, 3])


def _backbone(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(N_FEATURES, 8), nn.Tanh())


def _heads(seed=1):
    torch.manual_seed(seed)
    return [("a", nn.Linear(8, 2), [0, 1]), ("b", nn.Linear(8, 2), [2, 3])]


def _assert_same_proba(got, expected):
    """The same computation on the same rows: equal up to float32 rounding (a
    BLAS may round differently with the alignment of a batch's buffer). A run
    in train mode or mixed with another thread's rows differs by far more."""
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def _data(n=40, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, N_FEATURES) * 2
    return X, LABELS[np.arange(n) % 4]


# -- the bad-input matrix --------------------------------------------------------
#
# Each kind turns the float64 rows B into (X given to the estimator, the clean
# C-ordered float32 rows it must be equivalent to), or into an input that must
# be refused with a clear error.


def _frame_mixed(B):
    frame = pd.DataFrame(
        {
            0: B[:, 0],
            1: B[:, 1].astype(np.float32),
            2: np.round(B[:, 2]).astype(np.int64),
            3: B[:, 3] > 0,
            4: B[:, 4],
        }
    )
    clean = np.column_stack([B[:, 0], B[:, 1], np.round(B[:, 2]), B[:, 3] > 0, B[:, 4]])
    return frame, clean.astype(np.float32)


def _readonly(B):
    X = B.astype(np.float32)
    X.setflags(write=False)
    return X, B.astype(np.float32)


def _strided(B):
    wide = np.repeat(B.astype(np.float32), 2, axis=1)
    return wide[:, ::2], B.astype(np.float32)


EQUIVALENT = {
    "float32": lambda B: (B.astype(np.float32), B.astype(np.float32)),
    "float64": lambda B: (B, B.astype(np.float32)),
    "float16": lambda B: (B.astype(np.float16), B.astype(np.float16).astype(np.float32)),
    "int8": lambda B: (np.round(B).astype(np.int8), np.round(B).astype(np.float32)),
    "int64": lambda B: (np.round(B).astype(np.int64), np.round(B).astype(np.float32)),
    "bool": lambda B: (B > 0, (B > 0).astype(np.float32)),
    "fortran": lambda B: (np.asfortranarray(B.astype(np.float32)), B.astype(np.float32)),
    "read-only": _readonly,
    "strided view": _strided,
    "list of lists": lambda B: (B.tolist(), B.astype(np.float32)),
    "DataFrame": lambda B: (pd.DataFrame(B), B.astype(np.float32)),
    "DataFrame mixed dtypes": _frame_mixed,
}


def _with(B, row, col, value):
    X = B.copy()
    X[row, col] = value
    return X


INVALID = {
    "NaN": (lambda B: _with(B, 3, 1, np.nan), ValueError, "NaN"),
    "+inf": (lambda B: _with(B, 0, 0, np.inf), ValueError, "infinity"),
    "-inf": (lambda B: _with(B, 5, 4, -np.inf), ValueError, "infinity"),
    "beyond float32": (lambda B: _with(B, 2, 2, 1e300), ValueError, "infinity"),
    "strings": (lambda B: B.astype(str).astype(object) + "x", ValueError, "convert string"),
    "None in object array": (
        lambda B: _with(B.astype(object), 1, 1, None),
        ValueError,
        "NaN",
    ),
    "complex": (lambda B: B + 1j, ValueError, "Complex data"),
    "1-D": (lambda B: B[:, 0], ValueError, "Expected 2D array"),
    # N-D rows are images or sequences: a backbone that cannot take them says
    # so at fit, and rows of another shape than fit's are refused naming both.
    "3-D": (lambda B: B[:, :, None], ValueError,
            r"rows of shape \(5, 1\), but MergedHeadsClassifier was fitted on rows of "
            r"shape \(5,\)|backbone failed on input of shape \(n, 5, 1\)"),
    "scalar": (lambda B: np.float64(B[0, 0]), ValueError, "Expected 2D array"),
    "0 rows": (lambda B: B[:0], ValueError, "0 sample"),
    "0 columns": (lambda B: B[:, :0], ValueError, "0 feature"),
    "wrong width": (lambda B: B[:, :3], ValueError, "features"),
    "sparse": (lambda B: sp.csr_matrix(B), TypeError, "[Ss]parse"),
}


@pytest.fixture(scope="module")
def fitted():
    X, y = _data()
    return MergedHeadsClassifier(_backbone(), _heads()).fit(X.astype(np.float32), y)


@pytest.mark.parametrize("kind", EQUIVALENT)
@pytest.mark.parametrize("method", ["predict_proba", "predict", "score"])
def test_equivalent_input_gives_the_clean_result(fitted, kind, method):
    B, y = _data(n=30, seed=1)
    X, clean = EQUIVALENT[kind](B)
    args = (y,) if method == "score" else ()
    got = getattr(fitted, method)(X, *args)
    expected = getattr(fitted, method)(clean, *args)
    # float32 work on the same float32 rows: equal up to float32 rounding.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", EQUIVALENT)
def test_fit_on_equivalent_input_gives_the_clean_model(kind):
    B, y = _data()
    X, clean = EQUIVALENT[kind](B)
    got = MergedHeadsClassifier(_backbone(), _heads()).fit(X, y)
    expected = MergedHeadsClassifier(_backbone(), _heads()).fit(clean, y)
    assert got.n_features_in_ == N_FEATURES
    np.testing.assert_allclose(
        got.predict_proba(clean), expected.predict_proba(clean), rtol=1e-5, atol=1e-7
    )


# 1e300 overflows to inf in the float32 conversion (numpy warns), then is refused.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("kind", INVALID)
@pytest.mark.parametrize("method", ["predict_proba", "predict", "score"])
def test_invalid_input_is_refused_with_a_clear_error(fitted, kind, method):
    B, y = _data(n=30, seed=1)
    make, error, match = INVALID[kind]
    args = (y,) if method == "score" else ()
    with pytest.raises(error, match=match):
        getattr(fitted, method)(make(B), *args)


# 1e300 overflows to inf in the float32 conversion (numpy warns), then is refused.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("kind", INVALID)
def test_fit_refuses_invalid_input_before_running_a_module(kind):
    B, y = _data()
    make, error, match = INVALID[kind]
    backbone = _backbone()
    calls = []
    backbone.register_forward_pre_hook(lambda *args: calls.append(1))
    clf = MergedHeadsClassifier(backbone, _heads())
    if kind == "wrong width":
        # The estimator learns the width in fit; the backbone names the misfit.
        match = r"backbone failed on input of shape \(n, 3\)"
    with pytest.raises(error, match=match):
        clf.fit(make(B), y)
    if kind not in ("wrong width", "3-D"):
        # (3-D rows are valid input, refused by the backbone that runs them.)
        assert calls == []
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)


@pytest.mark.parametrize(
    "y, error, match",
    [
        (np.linspace(0, 1, 40), ValueError, "Unknown label type"),
        (np.where(np.arange(40) == 3, np.nan, np.arange(40) % 4), ValueError, "NaN"),
        (np.arange(39) % 4, ValueError, "inconsistent numbers of samples"),
        (np.arange(40) % 5, ValueError, r"y has labels \[4\] that no head knows"),
        (None, ValueError, "y should be a 1d array"),
    ],
)
def test_bad_labels_are_refused(y, error, match):
    X, _ = _data()
    with pytest.raises(error, match=match):
        MergedHeadsClassifier(_backbone(), _heads()).fit(X, y)


def test_column_vector_y_is_raveled_with_a_warning():
    X, y = _data()
    expected = MergedHeadsClassifier(_backbone(), _heads()).fit(X, y).predict_proba(X)
    with pytest.warns(UserWarning, match="column-vector y"):
        clf = MergedHeadsClassifier(_backbone(), _heads()).fit(X, y[:, None])
    _assert_same_proba(clf.predict_proba(X), expected)


def test_calls_before_fit_raise_not_fitted():
    X, y = _data()
    clf = MergedHeadsClassifier(_backbone(), _heads())
    for method in ["predict", "predict_proba"]:
        with pytest.raises(NotFittedError):
            getattr(clf, method)(X)
    with pytest.raises(NotFittedError):
        clf.score(X, y)


def test_heads_given_as_a_dict_get_the_conversion_message():
    X, y = _data()
    heads = {name: (module, labels) for name, module, labels in _heads()}
    with pytest.raises(TypeError, match=r"list of \(name, module, labels\) triples") as info:
        MergedHeadsClassifier(_backbone(), heads).fit(X, y)
    assert "for name, (m, labels) in d.items()" in str(info.value)


@pytest.mark.parametrize(
    "device, match",
    [
        ("tpu", "not a device torch knows"),
        ("gpu0", "not a device torch knows"),
        ("meta", "not supported"),
        (3, "'device' parameter"),
    ],
)
def test_bad_device_is_refused_before_anything_runs(device, match):
    X, y = _data()
    backbone = _backbone()
    calls = []
    backbone.register_forward_pre_hook(lambda *args: calls.append(1))
    clf = MergedHeadsClassifier(backbone, _heads(), device=device)
    with pytest.raises((ValueError, TypeError), match=match):
        clf.fit(X, y)
    assert calls == [] and not hasattr(clf, "n_features_in_")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    X, y = _data()
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        MergedHeadsClassifier(_backbone(), _heads(), device="cuda").fit(X, y)


# -- no half-fitted state --------------------------------------------------------


class _FailingHead(nn.Module):
    """A linear head that raises on its ``fail_on``-th call (counting from 1)."""

    def __init__(self, error, fail_on=2):
        super().__init__()
        torch.manual_seed(2)
        self.linear = nn.Linear(8, 2)
        self.error = error
        self.fail_on = fail_on
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_on:
            raise self.error
        return self.linear(x)


@pytest.mark.parametrize(
    "error", [RuntimeError("CUDA out of memory"), ValueError("bad batch"), KeyboardInterrupt()]
)
def test_failed_first_fit_leaves_no_fitted_state(error):
    X, y = _data()
    heads = [("a", nn.Linear(8, 2), [0, 1]), ("b", _FailingHead(error, fail_on=2), [2, 3])]
    clf = MergedHeadsClassifier(_backbone(), heads)
    # Call 1 is the two-row probe; call 2 is the pass over all rows.
    with pytest.raises(type(error)):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)
    assert _fitted(clf) == {}


def _fitted(estimator):
    return {k: v for k, v in vars(estimator).items() if k.endswith("_") and not k.startswith("_")}


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_refit_leaves_the_previous_state_intact(error):
    X, y = _data()
    frame = pd.DataFrame(X, columns=list("abcde"))
    clf = MergedHeadsClassifier(_backbone(), _heads()).fit(frame, y)
    before = _fitted(clf)
    assert {"merged_", "combiner_", "feature_names_in_", "n_features_in_"} <= before.keys()
    proba = clf.predict_proba(frame)
    heads = [("a", nn.Linear(8, 2), [0, 1]), ("b", _FailingHead(error), [2, 3])]
    clf.set_params(heads=heads, calibration="temperature")
    with pytest.raises(type(error)):
        clf.fit(X, y)  # a plain array: validation would drop feature_names_in_
    after = _fitted(clf)
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)
    _assert_same_proba(clf.predict_proba(frame), proba)


def test_refit_with_other_width_that_fails_keeps_the_old_width():
    X, y = _data()
    clf = MergedHeadsClassifier(_backbone(), _heads()).fit(X, y)
    with pytest.raises(ValueError, match="backbone failed"):
        clf.fit(np.hstack([X, X]), y)
    assert clf.n_features_in_ == N_FEATURES
    clf.predict(X)


def test_refit_drops_attributes_of_the_previous_calibration():
    X, y = _data()
    clf = MergedHeadsClassifier(_backbone(), _heads()).fit(X, y)
    assert hasattr(clf, "combiner_")
    clf.set_params(calibration=None).fit(X, y)
    assert not hasattr(clf, "combiner_")
    assert clf.merged_.combiner is None


# -- the user's modules: shared, never changed -----------------------------------


def _train_mode_backbone():
    """A backbone left in train mode, with Dropout and BatchNorm: a run in
    train mode would give random outputs and move the running statistics."""
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Linear(N_FEATURES, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Tanh()
    )
    with torch.no_grad():
        backbone[1].running_mean.uniform_(-1, 1)
        backbone[1].running_var.uniform_(0.5, 2)
    return backbone.train()


def _state(module):
    return {
        "tensors": {k: v.detach().clone() for k, v in module.state_dict().items()},
        "flags": [m.training for m in module.modules()],
        "grad": [p.requires_grad for p in module.parameters()],
        "devices": {t.device for t in module.state_dict().values()},
        "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()],
    }


def _assert_same_state(before, module):
    after = _state(module)
    assert before["tensors"].keys() == after["tensors"].keys()
    for k, v in before["tensors"].items():
        assert torch.equal(v, after["tensors"][k]), k
    assert before["flags"] == after["flags"]
    assert before["grad"] == after["grad"]
    assert before["devices"] == after["devices"]
    assert before["hooks"] == after["hooks"]


@pytest.mark.parametrize("calibration", [None, "temperature_bias", "combiner"])
@pytest.mark.parametrize("device", [None, "cpu", "auto"])
def test_fit_and_predict_leave_the_users_modules_as_they_were(calibration, device):
    X, y = _data()
    backbone = _train_mode_backbone()
    heads = _heads()
    heads[1][1].train()
    modules = [backbone] + [m for _, m, _ in heads]
    before = [_state(m) for m in modules]
    clf = MergedHeadsClassifier(backbone, heads, calibration=calibration, device=device)
    clf.fit(X, y)
    first = clf.predict_proba(X)
    # Dropout in train mode would make two calls differ: the run is in eval mode.
    _assert_same_proba(clf.predict_proba(X), first)
    for state, module in zip(before, modules, strict=True):
        _assert_same_state(state, module)
    if device != "auto" or not torch.cuda.is_available():
        assert clf.merged_.backbone is backbone  # on its device already: no copy


def test_lazy_modules_are_refused_and_left_lazy():
    X, y = _data()
    backbone = nn.Sequential(nn.LazyLinear(8), nn.Tanh())
    with pytest.raises(ValueError, match="uninitialised lazy parameters"):
        MergedHeadsClassifier(backbone, _heads()).fit(X, y)
    assert nn.parameter.is_lazy(backbone[0].weight)


class _NoCopyModule(nn.Sequential):
    """A module that counts deep copies (and pickling) of itself."""

    copies = 0

    def __deepcopy__(self, memo):
        type(self).copies += 1
        other = type(self).__new__(type(self))
        memo[id(self)] = other
        other.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return other

    def __reduce_ex__(self, protocol):
        type(self).copies += 1
        return super().__reduce_ex__(protocol)


def test_clone_and_searches_share_the_pretrained_modules():
    X, y = _data(n=60)
    torch.manual_seed(0)
    backbone = _NoCopyModule(nn.Linear(N_FEATURES, 8), nn.Tanh())
    _NoCopyModule.copies = 0
    clf = MergedHeadsClassifier(backbone, _heads())
    twin = clone(clf)
    assert twin.backbone is backbone and twin.heads is clf.heads
    search = GridSearchCV(clf, {"calibration": [None, "combiner"]}, cv=3).fit(X, y)
    cross_val_score(clf, X, y, cv=3)
    assert _NoCopyModule.copies == 0
    assert search.best_estimator_.merged_.backbone is backbone


# -- threads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "calibration, combiner",
    [
        ("combiner", None),
        ("temperature_bias", None),
        ("combiner", HistGradientBoostingClassifier(max_iter=5)),
    ],
)
def test_predict_proba_from_threads_equals_the_sequential_result(calibration, combiner):
    X, y = _data(n=400)
    backbone = _train_mode_backbone()
    heads = _heads()
    clf = MergedHeadsClassifier(
        backbone, heads, calibration=calibration, combiner=combiner, batch_size=16
    ).fit(X, y)
    # A clone shares the modules: its runs must not interleave with clf's.
    other = clone(clf).fit(X[::-1], y[::-1])
    chunks = [X[i : i + 50] for i in range(0, len(X), 50)]
    expected = [(clf.predict_proba(c), other.predict_proba(c)) for c in chunks]
    before = _state(backbone)

    def job(i):
        chunk = chunks[i % len(chunks)]
        return i, clf.predict_proba(chunk), other.predict_proba(chunk)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(job, range(4 * len(chunks))))
    for i, ours, theirs in results:
        _assert_same_proba(ours, expected[i % len(chunks)][0])
        _assert_same_proba(theirs, expected[i % len(chunks)][1])
    _assert_same_state(before, backbone)


def test_fits_in_threads_equal_sequential_fits():
    X, y = _data(n=200)
    clf = MergedHeadsClassifier(_train_mode_backbone(), _heads(), batch_size=16)
    expected = clone(clf).fit(X, y).predict_proba(X)
    with ThreadPoolExecutor(max_workers=4) as pool:
        fits = list(pool.map(lambda _: clone(clf).fit(X, y), range(4)))
    for fit in fits:
        _assert_same_proba(fit.predict_proba(X), expected)


# -- outputs ---------------------------------------------------------------------


class _Log(nn.Module):
    def forward(self, x):
        return torch.log(x)


def test_nan_from_the_network_is_reported():
    rng = np.random.RandomState(0)
    X = rng.uniform(0.5, 2, size=(20, 8)).astype(np.float32)
    y = np.arange(20) % 4
    clf = MergedHeadsClassifier(_Log(), _heads(), calibration=None).fit(X, y)
    X[[2, 5, 7], 0] = -1.0  # log(-1) is NaN
    with pytest.warns(RuntimeWarning, match="MergedHeadsClassifier produced NaN or infinity in 3"):
        clf.predict_proba(X)


@pytest.mark.parametrize("calibration", ["temperature", "combiner"])
def test_fit_on_nan_from_the_network_is_a_clear_error(calibration):
    rng = np.random.RandomState(0)
    X = rng.uniform(0.5, 2, size=(20, 8)).astype(np.float32)
    X[[4, 9], 3] = -1.0  # log(-1) is NaN: X is finite, the network's output is not
    y = np.arange(20) % 4
    clf = MergedHeadsClassifier(_Log(), _heads(), calibration=calibration)
    with pytest.raises(ValueError, match=r"heads produced NaN or infinity on 2 of 20 rows"):
        clf.fit(X, y)
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)


def test_deep_copy_of_a_fitted_classifier_is_independent():
    # copy.deepcopy is the explicit way to get a copy (clone shares).
    X, y = _data()
    clf = MergedHeadsClassifier(_backbone(), _heads()).fit(X, y)
    twin = copy.deepcopy(clf)
    assert twin.merged_.backbone is not clf.merged_.backbone
    _assert_same_proba(twin.predict_proba(X), clf.predict_proba(X))
