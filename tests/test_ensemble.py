import pickle
import warnings

import numpy as np
import pytest
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.datasets import load_diabetes, load_digits
from sklearn.dummy import DummyRegressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import Bunch
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_array, check_X_y
from torch import nn

from skchain import ModuleClassifier, OutputEnsembleClassifier, OutputEnsembleRegressor
from skchain._testing import (
    MLP,
    RowStats,
    make_classifier_net,
    make_regressor_net,
    train_module,
)

# -- sklearn estimator checks ----------------------------------------------------


def _rowstats_member(seed):
    torch.manual_seed(seed)
    module = nn.Sequential(RowStats(n_out=8, seed=seed), nn.Linear(8, 4))
    return ModuleClassifier(module, [0, 1, 2, 3])


class _RowMeanRegressor(RegressorMixin, BaseEstimator):
    """A prefit regressor that accepts any width (the checks vary it)."""

    def __init__(self, scale=1.0):
        self.scale = scale

    def fit(self, X, y):
        # No n_features_in_: the checks vary the width, and the ensemble rejects
        # a member that recorded another width.
        X, y = check_X_y(X, y)
        self.offset_ = float(np.mean(y))
        return self

    def predict(self, X):
        X = check_array(X)
        return self.scale * X.mean(axis=1) + self.offset_


def _regressor_members():
    X = np.arange(12.0).reshape(6, 2)
    y = np.arange(6.0)
    return [
        ("a", _RowMeanRegressor(1.0).fit(X, y)),
        ("b", _RowMeanRegressor(-0.5).fit(X, y)),
    ]


_FIXED_CLASSES_REASON = (
    "classes_ comes from the prefit members (here [0, 1, 2, 3]), not from y: the check's y "
    "with other labels (strings) is rejected with a ValueError by "
    "design, and random members do not reach the check's accuracy."
)
_HASH_REASON = (
    "The check compares joblib.hash of a deep copy of the parameters with them after "
    "fit; torch pickles a tensor with its storage address, so even an untouched deep "
    "copy hashes differently. test_members_bitwise_unchanged checks the weights bitwise."
)
_FLOAT32_REASON = (
    "torch's float32 matrix products round differently for different batch sizes "
    "(its kernels depend on the shape), so a member's output for a row can differ by "
    "about one float32 ulp (~1e-7) between a subset and the whole batch, over the "
    "check's rtol=1e-7; whether it happens depends on the rows, so some instances pass "
    "(XPASS). test_subset_invariance_float32 checks it at rtol=1e-5."
)
_RANDOM_MEMBERS_REASON = (
    "The members are fixed, prefit functions of X (row means here), not fitted to the "
    "check's y, so the ensemble cannot reach the check's training score."
)
_ONE_LABEL_REASON = (
    "A pretrained module learns nothing from y, so one label in y is not an error: "
    "the predictions stay the module's own, not that label."
)
_PREFIT_REASON = (
    "A pretrained module needs no fit: like a frozen estimator it predicts right "
    "after construction, so there is no NotFittedError to raise."
)


def _expected_failures(estimator):
    failures = {
        "check_classifiers_classes": _FIXED_CLASSES_REASON,
        "check_classifiers_train": _FIXED_CLASSES_REASON,
        "check_classifiers_train(readonly_memmap=True)": _FIXED_CLASSES_REASON,
        "check_classifiers_train(readonly_memmap=True,X_dtype=float32)": _FIXED_CLASSES_REASON,
        "check_estimators_overwrite_params": _HASH_REASON,
        "check_methods_subset_invariance": _FLOAT32_REASON,
    }
    if isinstance(estimator, ModuleClassifier):
        failures["check_classifiers_one_label"] = _ONE_LABEL_REASON
        failures["check_estimators_unfitted"] = _PREFIT_REASON
        failures["check_fit_check_is_fitted"] = _PREFIT_REASON
    if isinstance(estimator, OutputEnsembleRegressor):
        failures = {
            "check_regressors_train": _RANDOM_MEMBERS_REASON,
            "check_regressors_train(readonly_memmap=True)": _RANDOM_MEMBERS_REASON,
            "check_regressors_train(readonly_memmap=True,X_dtype=float32)": _RANDOM_MEMBERS_REASON,
        }
    return failures


_CLASSIFIER_MEMBERS = [("a", _rowstats_member(0)), ("b", _rowstats_member(1))]


@parametrize_with_checks(
    [
        _rowstats_member(0),
        OutputEnsembleClassifier(_CLASSIFIER_MEMBERS, weights=[2, 1]),
        OutputEnsembleClassifier(_CLASSIFIER_MEMBERS, voting="hard", weights="learn"),
        OutputEnsembleClassifier(_CLASSIFIER_MEMBERS, final_estimator=LogisticRegression()),
        OutputEnsembleRegressor(_regressor_members(), weights="learn"),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# -- the demonstration: members of different quality on digits ------------------


@pytest.fixture(scope="module")
def digits_members():
    """Three nets of different quality and a noise net, each on its own rows.

    Rows 0-899 train the members (separate subsets), 900-1349 are held out to
    fit the ensemble, 1350- are the test rows.
    """
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    good = make_classifier_net(
        n_classes=10, hidden=32, max_epochs=30, lr=0.01, iterator_train__shuffle=True
    ).fit(X[:300], y[:300])
    medium = ModuleClassifier(
        train_module(MLP(hidden=16, n_out=10), X[300:500], y[300:500], epochs=15), range(10)
    )
    weak = LogisticRegression(C=0.01, max_iter=200).fit(X[500:650], y[500:650])
    noise = ModuleClassifier(
        train_module(MLP(hidden=32, n_out=10), X[650:900], rng.permutation(y[650:900]), epochs=30),
        range(10),
    )
    members = [("good", good), ("medium", medium), ("weak", weak), ("noise", noise)]
    return members, (X[900:1350], y[900:1350]), (X[1350:], y[1350:])


def _state(est):
    """Every parameter tensor / array of a member, copied."""
    if hasattr(est, "module_"):
        module = est.module_
    elif hasattr(est, "module"):
        module = est.module
    else:
        return {"coef": est.coef_.copy(), "intercept": est.intercept_.copy()}
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same(before, est):
    after = _state(est)
    assert before.keys() == after.keys()
    for k in before:
        a, b = before[k], after[k]
        same = torch.equal(a, b) if isinstance(a, torch.Tensor) else np.array_equal(a, b)
        assert same, k


def _proba(member, X):
    """float64 probabilities summing to one (skorch returns float32)."""
    p = member.predict_proba(X).astype(np.float64)
    return p / p.sum(axis=1, keepdims=True)


def test_learned_weights_find_the_good_members(digits_members):
    members, (X_ho, y_ho), (X_te, y_te) = digits_members
    ens = OutputEnsembleClassifier(members, weights="learn").fit(X_ho, y_ho)
    w = dict(zip([n for n, _ in members], ens.weights_, strict=True))
    assert ens.weights_.sum() == pytest.approx(1.0)
    assert np.all(ens.weights_ >= 0)
    assert w["noise"] < 0.02
    assert w["good"] + w["medium"] > 0.8
    member_scores = {n: accuracy_score(y_te, m.predict(X_te)) for n, m in members}
    assert member_scores["noise"] < 0.3 < member_scores["weak"] < member_scores["good"]
    assert ens.score(X_te, y_te) >= max(member_scores.values())
    best_ll = min(log_loss(y_te, _proba(m, X_te), labels=range(10)) for _, m in members)
    assert log_loss(y_te, ens.predict_proba(X_te)) <= best_ll
    # Equal weights let the noise net in: worse than learned weights.
    mean = OutputEnsembleClassifier(members).fit(X_ho, y_ho)
    assert log_loss(y_te, mean.predict_proba(X_te)) > log_loss(y_te, ens.predict_proba(X_te))


def test_soft_and_hard_voting_are_what_the_docs_say(digits_members):
    members, (X_ho, y_ho), (X_te, y_te) = digits_members
    probas = [m.predict_proba(X_te) for _, m in members]
    soft = OutputEnsembleClassifier(members, weights=[4, 3, 2, 1]).fit(X_ho, y_ho)
    expected = (0.4 * probas[0] + 0.3 * probas[1] + 0.2 * probas[2] + 0.1 * probas[3]) / 1.0
    np.testing.assert_allclose(soft.predict_proba(X_te), expected, rtol=1e-6)
    np.testing.assert_array_equal(soft.predict(X_te), np.argmax(expected, axis=1))

    hard = OutputEnsembleClassifier(members, voting="hard").fit(X_ho, y_ho)
    assert not hasattr(hard, "predict_proba")
    votes = np.stack([m.predict(X_te) for _, m in members])
    counts = np.stack([(votes == k).sum(axis=0) for k in range(10)], axis=1)
    np.testing.assert_array_equal(hard.predict(X_te), np.argmax(counts, axis=1))
    assert hard.score(X_te, y_te) > 0.8


def _constant_member(proba, classes):
    """A ModuleClassifier whose probabilities are ``proba`` for every row."""
    layer = nn.Linear(2, len(classes))
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.log(torch.tensor(proba)))
    return ModuleClassifier(layer, classes)


def test_hard_vote_tie_goes_to_the_first_class():
    X = np.zeros((3, 2), dtype=np.float32)
    a = _constant_member([0.1, 0.2, 0.7], ["x", "y", "z"])  # votes z
    b = _constant_member([0.1, 0.8, 0.1], ["x", "y", "z"])  # votes y
    ens = OutputEnsembleClassifier([("a", a), ("b", b)], voting="hard").fit(X)
    assert ens.predict(X).tolist() == ["y"] * 3  # tie: "y" sorts before "z"
    ens.set_params(weights=[2, 1]).fit(X)
    assert ens.predict(X).tolist() == ["z"] * 3


def test_members_classes_are_aligned_and_checked():
    X = np.zeros((2, 2), dtype=np.float32)
    a = _constant_member([0.2, 0.3, 0.5], ["x", "y", "z"])
    b = _constant_member([0.5, 0.3, 0.2], ["z", "y", "x"])  # same numbers, reversed order
    ens = OutputEnsembleClassifier([("a", a), ("b", b)]).fit(X)
    assert ens.classes_.tolist() == ["x", "y", "z"]
    np.testing.assert_allclose(ens.predict_proba(X), [[0.2, 0.3, 0.5]] * 2, rtol=1e-6)
    other = _constant_member([0.5, 0.5], ["x", "w"])
    with pytest.raises(ValueError, match="same labels"):
        OutputEnsembleClassifier([("a", a), ("c", other)]).fit(X)
    with pytest.raises(ValueError, match=r"labels \['q'\]"):
        OutputEnsembleClassifier([("a", a)], weights="learn").fit(X, ["q", "x"])


def test_members_bitwise_unchanged_and_shared_not_copied(digits_members):
    members, (X_ho, y_ho), (X_te, _) = digits_members
    objects = [m for _, m in members]
    before = {n: _state(m) for n, m in members}
    ens = OutputEnsembleClassifier(members, weights="learn")
    grid = GridSearchCV(ens, {"voting": ["soft", "hard"]}, cv=3).fit(X_ho, y_ho)
    cv = cross_validate(ens, X_ho, y_ho, cv=3, return_estimator=True)
    ens.fit(X_ho, y_ho)
    for name, member in members:
        _assert_same(before[name], member)
    # As FrozenEstimator: clone, search and cross-validation share the members.
    fitted = [clone(ens), grid.best_estimator_, *cv["estimator"], ens]
    for other in fitted[1:]:
        assert all(a is b for a, b in zip(other.estimators_, objects, strict=True))
        assert list(other.named_estimators_) == [n for n, _ in members]
        assert all(
            other.named_estimators_[n] is m for n, m in members
        )
    assert all(a is b for (_, a), b in zip(fitted[0].estimators, objects, strict=True))
    assert isinstance(ens.named_estimators_, Bunch)
    assert grid.best_params_["voting"] in {"soft", "hard"}
    restored = pickle.loads(pickle.dumps(ens))
    np.testing.assert_array_equal(restored.predict_proba(X_te), ens.predict_proba(X_te))
    for name, member in members:
        _assert_same(before[name], member)


def test_final_estimator_and_pipeline(digits_members):
    members, (X_ho, y_ho), (X_te, y_te) = digits_members
    stack = OutputEnsembleClassifier(members, final_estimator=LogisticRegression(max_iter=500))
    stack.fit(X_ho, y_ho)
    assert stack.weights_ is None
    assert stack.final_estimator_.n_features_in_ == 40
    # The combiner is the final estimator fit on the members' outputs on fit's rows.
    features = np.hstack([_proba(m, X_ho) for _, m in members])
    manual = LogisticRegression(max_iter=500).fit(features, y_ho)
    np.testing.assert_allclose(stack.final_estimator_.coef_, manual.coef_, rtol=1e-5, atol=1e-8)
    assert stack.score(X_te, y_te) > 0.85
    np.testing.assert_allclose(stack.predict_proba(X_te).sum(axis=1), 1.0)
    hard_stack = clone(stack).set_params(voting="hard").fit(X_ho, y_ho)
    assert hard_stack.score(X_te, y_te) > 0.8
    # As the last step of a Pipeline (identity preprocessing here).
    pipe = make_pipeline(FunctionTransformer(), OutputEnsembleClassifier(members))
    assert pipe.fit(X_ho, y_ho).score(X_te, y_te) > 0.8


def test_skorch_recipe_for_a_plain_module():
    """The documented alternative to ModuleClassifier: an initialised skorch net."""
    from skorch import NeuralNetClassifier

    torch.manual_seed(0)
    module = nn.Linear(4, 3)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    net = NeuralNetClassifier(module, criterion=nn.CrossEntropyLoss, classes=[0, 1, 2])
    net.initialize()
    X = np.random.RandomState(0).randn(6, 4).astype(np.float32)
    ens = OutputEnsembleClassifier([("net", net), ("wrap", ModuleClassifier(module, [0, 1, 2]))])
    proba = ens.fit(X).predict_proba(X)
    expected = softmax(X @ before["weight"].numpy().T + before["bias"].numpy(), axis=1)
    np.testing.assert_allclose(proba, expected, rtol=1e-5)
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k])


def test_module_classifier():
    torch.manual_seed(0)
    clf = ModuleClassifier(nn.Sequential(nn.Linear(3, 2), nn.Softmax(dim=1)), ["a", "b"])
    X = np.random.RandomState(0).randn(5, 3)
    proba = clf.set_params(output="proba").predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    clf.fit(X, ["a", "b", "a", "a", "b"])
    assert clf.n_features_in_ == 3
    with pytest.raises(ValueError, match="3 features"):
        clf.predict(X[:, :2])
    with pytest.raises(ValueError, match=r"labels \['c'\]"):
        clf.fit(X, ["a", "b", "c", "a", "b"])
    with pytest.raises(ValueError, match="one label per output column"):
        ModuleClassifier(nn.Linear(3, 4), ["a", "b"]).predict_proba(X)
    with pytest.raises(ValueError, match="at least 2 distinct"):
        ModuleClassifier(nn.Linear(3, 2), ["a", "a"]).predict(X)


def test_classifier_errors():
    X = np.zeros((4, 2), dtype=np.float32)
    a = _constant_member([0.5, 0.5], [0, 1])
    with pytest.raises(TypeError, match="estimators"):
        OutputEnsembleClassifier({"a": a}).fit(X)
    with pytest.raises(ValueError, match="not fitted"):
        OutputEnsembleClassifier([("lr", LogisticRegression())]).fit(X, [0, 1, 0, 1])
    with pytest.raises(TypeError, match="not a classifier"):
        OutputEnsembleClassifier([("r", Ridge().fit(X, [0, 1, 0, 1]))]).fit(X)
    with pytest.raises(ValueError, match="one weight per member"):
        OutputEnsembleClassifier([("a", a)], weights=[1, 2]).fit(X)
    with pytest.raises(ValueError, match="cannot be combined"):
        OutputEnsembleClassifier([("a", a)], weights=[1], final_estimator=LogisticRegression()).fit(
            X, [0, 1, 0, 1]
        )
    with pytest.raises(ValueError, match="y is required"):
        OutputEnsembleClassifier([("a", a)], weights="learn").fit(X)
    with pytest.raises(ValueError, match="used twice"):
        OutputEnsembleClassifier([("a", a), ("a", a)]).fit(X)


# -- regression ---------------------------------------------------------------------


def test_regressor_learns_nnls_weights():
    X, y = load_diabetes(return_X_y=True)
    rng = np.random.RandomState(0)
    members = [
        ("ridge", Ridge(alpha=0.1).fit(X[:150], y[:150])),
        ("linear", LinearRegression().fit(X[150:250], y[150:250])),
        ("noise", LinearRegression().fit(X[250:300], rng.permutation(y[250:300]))),
        ("dummy", DummyRegressor().fit(X[:150], y[:150])),
    ]
    before = [m.coef_.copy() for _, m in members[:3]]
    ens = OutputEnsembleRegressor(members, weights="learn").fit(X[300:370], y[300:370])
    w = dict(zip([n for n, _ in members], ens.weights_, strict=True))
    assert ens.weights_.sum() == pytest.approx(1.0)
    assert w["noise"] < 0.1
    assert w["ridge"] + w["linear"] > 0.7
    X_te, y_te = X[370:], y[370:]
    best = max(m.score(X_te, y_te) for _, m in members)
    assert ens.score(X_te, y_te) >= best - 0.02
    mean = OutputEnsembleRegressor(members).fit(X_te)
    expected = np.mean([m.predict(X_te) for _, m in members], axis=0)
    np.testing.assert_allclose(mean.predict(X_te), expected)
    fixed = OutputEnsembleRegressor(members, weights=[1, 1, 0, 0]).fit(X_te)
    expected = (members[0][1].predict(X_te) + members[1][1].predict(X_te)) / 2
    np.testing.assert_allclose(fixed.predict(X_te), expected)
    stack = OutputEnsembleRegressor(members, final_estimator=LinearRegression())
    assert stack.fit(X[300:370], y[300:370]).predict(X_te).shape == y_te.shape
    grid = GridSearchCV(ens, {"weights": [None, "learn"]}, cv=3).fit(X[300:370], y[300:370])
    assert grid.best_params_["weights"] in {None, "learn"}
    for (_, m), b in zip(members[:3], before, strict=True):
        np.testing.assert_array_equal(m.coef_, b)
    assert clone(ens).estimators[0][1] is members[0][1]


def test_regressor_with_a_skorch_net_member():
    X, y = load_diabetes(return_X_y=True)
    X, y = X.astype(np.float32), ((y - y.mean()) / y.std()).astype(np.float32)
    torch.manual_seed(0)
    net = make_regressor_net(max_epochs=20, lr=0.01).fit(X[:200], y[:200, None])
    ridge = Ridge(alpha=0.1).fit(X[200:300], y[200:300])
    before = _state(net)
    ens = OutputEnsembleRegressor([("net", net), ("ridge", ridge)], weights="learn")
    grid = GridSearchCV(ens, {"weights": [None, "learn"]}, cv=3).fit(X[300:400], y[300:400])
    ens.fit(X[300:400], y[300:400])
    pred = ens.predict(X[400:])
    assert pred.shape == (len(X) - 400,)  # skorch's (n, 1) follows Ridge's (n,)
    expected = ens.weights_[0] * net.predict(X[400:])[:, 0] + ens.weights_[1] * ridge.predict(
        X[400:]
    )
    np.testing.assert_allclose(pred, expected, rtol=1e-5, atol=1e-6)
    assert grid.best_params_["weights"] in {None, "learn"}
    _assert_same(before, net)
    assert clone(ens).estimators[0][1] is net


def test_regressor_errors():
    X = np.zeros((4, 2))
    clf = LogisticRegression().fit(np.eye(2), [0, 1])
    with pytest.raises(TypeError, match="not a regressor"):
        OutputEnsembleRegressor([("c", clf)]).fit(X)
    reg = DummyRegressor().fit(X, np.arange(4.0))
    with pytest.raises(ValueError, match="y is required"):
        OutputEnsembleRegressor([("r", reg)], weights="learn").fit(X)


# -- one path, validated input, threads, failed fits (issues 14 and 15) -------------


@pytest.fixture(scope="module")
def mixed():
    """A skorch net, a plain module and a scikit-learn member on iris-like rows."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = ((X - X.mean(axis=0)) / X.std(axis=0)).astype(np.float32)
    torch.manual_seed(0)
    net = make_classifier_net(n_classes=3, hidden=8, max_epochs=5, lr=0.05).fit(X[::2], y[::2])
    trained = train_module(MLP(hidden=8, n_out=3), X[::2], y[::2], epochs=3)
    module = ModuleClassifier(trained, [0, 1, 2])
    lr = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    members = [("net", net), ("module", module), ("lr", lr)]
    clf = OutputEnsembleClassifier(members, weights="learn").fit(X[1::2], y[1::2])
    rnet = make_regressor_net(max_epochs=3).fit(X[::2], y[::2, None].astype(np.float32))
    ridge = Ridge().fit(X[::2], y[::2])
    reg = OutputEnsembleRegressor([("net", rnet), ("ridge", ridge)]).fit(X[1::2], y[1::2])
    only_net = OutputEnsembleRegressor([("net", rnet)]).fit(X[1::2])
    return X, y, clf, reg, only_net


# Every kind of valid input is built from the same values, exactly representable
# in each dtype (0/1), so each must give the clean float32 result.
def _base_rows():
    return np.random.RandomState(0).randint(0, 2, size=(7, 4)).astype(np.float32)


def _readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


_VALID_KINDS = {
    "float64": lambda a: a.astype(np.float64),
    "float16": lambda a: a.astype(np.float16),
    "int8": lambda a: a.astype(np.int8),
    "bool": lambda a: a.astype(bool),
    "list": lambda a: a.tolist(),
    "fortran": lambda a: np.asfortranarray(a),
    "readonly": _readonly,
    "strided": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
    "dataframe": lambda a: __import__("pandas").DataFrame(a),
    "int64_dataframe": lambda a: __import__("pandas").DataFrame(a.astype(np.int64)),
}

_INVALID_KINDS = {
    "nan": (lambda a: np.where(np.eye(7, 4, dtype=bool), np.nan, a), ValueError, "NaN"),
    "inf": (lambda a: np.where(np.eye(7, 4, dtype=bool), np.inf, a), ValueError, "infinity"),
    "huge": (lambda a: a.astype(np.float64) * 1e300 + 1e300, ValueError, "float32"),
    "1d": (lambda a: a[0], ValueError, "2D array"),
    # N-D rows (images, sequences) are taken by all-torch ensembles, and then
    # must keep the fitted shape; a module that cannot take them says so.
    "3d": (lambda a: a[:, :, None], ValueError,
           r"dim 3|rows of shape \(4, 1\), but .* fitted on rows of shape \(4,\)|"
           r"could not run on X of shape \(7, 4, 1\)"),
    "0 rows": (lambda a: a[:0], ValueError, "0 sample"),
    "narrow": (lambda a: a[:, :3], ValueError, "3 features"),
    "wide": (lambda a: np.hstack([a, a]), ValueError, "8 features"),
    "strings": (lambda a: a.astype(str).astype(object) + "x", ValueError, "convert"),
    "sparse": (lambda a: __import__("scipy.sparse").sparse.csr_matrix(a), TypeError, "(?i)sparse"),
}


def _methods(est):
    names = ["predict", "transform"]
    if hasattr(est, "predict_proba"):
        names.append("predict_proba")
    return names


@pytest.mark.parametrize("which", ["clf", "reg", "only_net", "module"])
@pytest.mark.parametrize("kind", sorted(_VALID_KINDS))
def test_valid_input_gives_the_clean_result(mixed, which, kind):
    _, _, clf, reg, only_net = mixed
    module = clf.named_estimators_["module"]  # used without fit, as documented
    est = {"clf": clf, "reg": reg, "only_net": only_net, "module": module}[which]
    clean = _base_rows()
    methods = ["predict", "predict_proba"] if which == "module" else _methods(est)
    for method in methods:
        expected = getattr(est, method)(clean)
        got = getattr(est, method)(_VALID_KINDS[kind](clean))
        if method == "predict" and which in ("clf", "module"):
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("which", ["clf", "reg", "only_net", "module"])
@pytest.mark.parametrize("kind", sorted(_INVALID_KINDS))
def test_invalid_input_is_a_clear_error(mixed, which, kind):
    _, _, clf, reg, only_net = mixed
    if which == "module":
        est = clf.named_estimators_["module"]  # used without fit: width unknown
        if kind in ("narrow", "wide"):
            pytest.skip("covered by test_module_classifier_checks_at_first_use")
    else:
        est = {"clf": clf, "reg": reg, "only_net": only_net}[which]
    make, error, match = _INVALID_KINDS[kind]
    X = make(_base_rows())
    methods = ["predict", "predict_proba"] if which == "module" else _methods(est)
    for method in methods:
        with pytest.raises(error, match=match):
            getattr(est, method)(X)
    if which != "module":
        # fit validates the same way, before any member runs.
        with pytest.raises((ValueError, TypeError)):
            clone(est).fit(X)


def test_nan_row_is_never_silently_class_zero(mixed):
    _, _, clf, _, _ = mixed
    X = _base_rows()
    X[3, 1] = np.nan
    for est in (clf, clf.named_estimators_["module"]):
        with pytest.raises(ValueError, match="NaN"):
            est.predict(X)


def test_probabilities_are_float64_rows_summing_to_one(mixed):
    X, _, clf, _, _ = mixed
    for est in (clf, clf.named_estimators_["module"], clone(clf).set_params(weights=None)):
        proba = est.fit(X[1::2], np.arange(75) % 3).predict_proba(X)
        assert proba.dtype == np.float64
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    member = clf.transform(X).reshape(len(X), 3, 3)
    assert member.dtype == np.float64
    np.testing.assert_allclose(member.sum(axis=2), 1.0, rtol=0, atol=1e-12)


def test_skorch_members_run_through_the_runner_like_skorch(mixed):
    """Same numbers as the net's own predict_proba / predict, up to float32 rounding."""
    from skorch import NeuralNetBinaryClassifier

    X, y, clf, reg, _ = mixed
    net = clf.named_estimators_["net"]
    np.testing.assert_allclose(clf.transform(X)[:, :3], net.predict_proba(X), rtol=1e-5, atol=1e-7)
    rnet = reg.named_estimators_["net"]
    np.testing.assert_allclose(reg.transform(X)[:, :1], rnet.predict(X), rtol=1e-5, atol=1e-6)
    # The binary net: skorch's sigmoid-pair nonlinearity and its threshold.
    class Squeeze(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)[:, 0]

    torch.manual_seed(0)
    binary = NeuralNetBinaryClassifier(
        Squeeze(MLP(hidden=8, n_out=1)), max_epochs=3, lr=0.05, train_split=None, verbose=0,
        threshold=0.3,
    ).fit(X, (y == 2).astype(np.float32))
    ens = OutputEnsembleClassifier([("b", binary)]).fit(X)
    np.testing.assert_allclose(ens.predict_proba(X), binary.predict_proba(X), rtol=1e-5, atol=1e-7)
    hard = OutputEnsembleClassifier([("b", binary)], voting="hard").fit(X)
    np.testing.assert_array_equal(hard.predict(X), binary.predict(X))


def test_skorch_subclass_that_overrides_predict_proba_is_called():
    from skorch import NeuralNetClassifier

    class Shifted(NeuralNetClassifier):
        def predict_proba(self, X):
            p = super().predict_proba(X)
            return np.roll(p, 1, axis=1)

    torch.manual_seed(0)
    X = np.random.RandomState(0).randn(20, 4).astype(np.float32)
    net = Shifted(nn.Linear(4, 3), criterion=nn.CrossEntropyLoss, classes=[0, 1, 2]).initialize()
    ens = OutputEnsembleClassifier([("s", net)]).fit(X.astype(np.float64))
    np.testing.assert_allclose(ens.predict_proba(X), net.predict_proba(X), rtol=1e-5, atol=1e-7)


def test_regressor_predicts_one_dimension_for_one_target(mixed):
    X, _, _, reg, only_net = mixed
    assert reg.predict(X).shape == (len(X),)
    assert only_net.predict(X).shape == (len(X),)  # skorch members alone give (n, 1)
    np.testing.assert_allclose(
        only_net.predict(X), only_net.estimators_[0].predict(X)[:, 0], rtol=1e-6
    )
    assert reg.n_targets_ == 1
    stack = OutputEnsembleRegressor(reg.estimators, final_estimator=LinearRegression())
    assert stack.fit(X, np.arange(len(X), dtype=float)).predict(X).shape == (len(X),)


def test_module_classifier_checks_at_first_use():
    X = np.random.RandomState(0).randn(5, 3)
    torch.manual_seed(0)
    good = nn.Linear(3, 2)
    bad_params = [
        (dict(output="logit"), ValueError, "output"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(batch_size=-1), ValueError, "batch_size"),
        (dict(module=None), TypeError, "module"),
        # A string is the path of an ONNX file (skchain.OnnxModel).
        (dict(module="a module"), ValueError, "'a module' does not exist"),
    ]
    for params, error, match in bad_params:
        clf = ModuleClassifier(good, ["a", "b"]).set_params(**params)
        for method in ("predict", "predict_proba"):
            with pytest.raises(error, match=match):
                getattr(clf, method)(X)
        with pytest.raises(error, match=match):
            OutputEnsembleClassifier([("m", clf)]).fit(X)
    clf = ModuleClassifier(good, ["a", "b"])
    with pytest.raises(ValueError, match=r"could not run on X of shape \(5, 4\)"):
        clf.predict(np.hstack([X, X[:, :1]]))
    with pytest.raises(ValueError, match=r"Member 'm'.*could not run"):
        OutputEnsembleClassifier([("m", clf)]).fit(X[:, :2])
    with pytest.raises(ValueError, match="one label per output column"):
        ModuleClassifier(nn.Linear(3, 4), ["a", "b", "c"]).predict(X)
    # output="proba" on a module that returns logits is not a silent wrong answer.
    with pytest.raises(ValueError, match='use output="logits"'):
        ModuleClassifier(good, ["a", "b"], output="proba").predict_proba(X)
    soft = nn.Sequential(nn.Linear(3, 2), nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match='output="proba"'):
        ModuleClassifier(soft, ["a", "b"]).predict_proba(X)
    # One logit column is a binary classifier (sigmoid pair), as in skorch.
    proba = ModuleClassifier(nn.Linear(3, 1), ["no", "yes"]).predict_proba(X)
    assert proba.shape == (5, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_module_classifier_leaves_the_module_as_it_was():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 2))
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    X = np.random.RandomState(0).randn(9, 3)
    clf = ModuleClassifier(module, [0, 1])
    first = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.predict_proba(X), first)  # eval mode: no dropout
    assert module.training and all(m.training for m in module.modules())
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_failed_fit_keeps_the_previous_state(mixed):
    X, y, clf, reg, _ = mixed
    ens = clone(clf).fit(X[1::2], y[1::2])
    weights, proba = ens.weights_.copy(), ens.predict_proba(X)
    with pytest.raises(ValueError, match="labels"):
        ens.fit(X[:4], [0, 1, 2, 7])
    np.testing.assert_array_equal(ens.weights_, weights)
    np.testing.assert_array_equal(ens.predict_proba(X), proba)
    with pytest.raises(ValueError, match="features"):
        ens.fit(X[:, :3], y)
    assert ens.n_features_in_ == 4
    # A first fit that fails leaves no fitted state at all.
    fresh = clone(clf)
    with pytest.raises(ValueError):
        fresh.fit(X, np.full(len(X), 9))
    with pytest.raises(NotFittedError):
        fresh.predict(X)
    assert not [k for k in vars(fresh) if k.endswith("_") and not k.startswith("__")]
    r = clone(reg).fit(X[1::2], y[1::2])
    with pytest.raises(ValueError):
        r.fit(X[:, :2])
    assert r.n_features_in_ == 4 and r.n_targets_ == 1
    module = clf.named_estimators_["module"]
    mc = clone(module).fit(X)
    with pytest.raises(ValueError, match="labels"):
        mc.fit(X[:, :2], np.full(len(X), 5))
    assert mc.n_features_in_ == 4


def test_transform_feature_names_and_set_output(mixed):
    import pandas as pd

    X, y, clf, reg, _ = mixed
    Xt = clf.transform(X)
    assert Xt.shape == (len(X), 9)
    names = clf.get_feature_names_out()
    assert names.tolist()[:4] == [
        "outputensembleclassifier_net0",
        "outputensembleclassifier_net1",
        "outputensembleclassifier_net2",
        "outputensembleclassifier_module0",
    ]
    np.testing.assert_allclose(
        Xt[:, 6:], clf.named_estimators_["lr"].predict_proba(X), rtol=1e-6
    )
    hard = clone(clf).set_params(voting="hard").fit(X[1::2], y[1::2])
    votes = hard.transform(X)
    assert votes.shape == (len(X), 3)
    np.testing.assert_array_equal(votes[:, 2], clf.named_estimators_["lr"].predict(X))
    assert hard.get_feature_names_out().tolist() == [
        "outputensembleclassifier_net",
        "outputensembleclassifier_module",
        "outputensembleclassifier_lr",
    ]
    assert reg.get_feature_names_out().tolist() == [
        "outputensembleregressor_net",
        "outputensembleregressor_ridge",
    ]
    np.testing.assert_allclose(
        reg.transform(X)[:, 1], reg.named_estimators_["ridge"].predict(X), rtol=1e-12
    )
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    for est in (clf, reg):
        out = clone(est).set_output(transform="pandas").fit(frame, y).transform(frame)
        assert isinstance(out, pd.DataFrame)
        assert out.columns.tolist() == est.get_feature_names_out().tolist()
    assert clone(clf).set_output(transform="pandas")._sklearn_output_config == {
        "transform": "pandas"
    }


def test_threads_give_the_sequential_results(mixed):
    from concurrent.futures import ThreadPoolExecutor

    X, _, clf, reg, _ = mixed
    hard = clone(clf).set_params(voting="hard", weights=None).fit(X)
    chunks = [X[i::4] for i in range(4)]
    calls = [
        (est, method, i)
        for est in (clf, reg, hard)
        for method in _methods(est)
        for i in range(4)
    ]
    modules = [clf.named_estimators_["net"].module_, clf.named_estimators_["module"].module]
    modules[0].train()  # a member left in train mode (as skorch leaves it) stays so
    flags = [[m.training for m in mod.modules()] for mod in modules]
    expected = [getattr(est, m)(chunks[i]) for est, m, i in calls]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda c: getattr(c[0], c[1])(chunks[c[2]]), calls * 3))
    for k, result in enumerate(got):
        np.testing.assert_allclose(
            np.asarray(result, dtype=float), np.asarray(expected[k % len(calls)], dtype=float),
            rtol=1e-6, atol=1e-9,
        )
    for mod, before in zip(modules, flags, strict=True):
        assert [m.training for m in mod.modules()] == before
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in mod.modules())


def test_subset_invariance_float32(mixed):
    X, _, clf, reg, _ = mixed
    for est in (clf, reg):
        for method in _methods(est):
            whole = np.asarray(getattr(est, method)(X), dtype=float)
            part = np.asarray(getattr(est, method)(X[5:17]), dtype=float)
            np.testing.assert_allclose(part, whole[5:17], rtol=1e-5, atol=1e-7)


def test_estimators_only_of_scikit_learn_keep_their_own_input():
    """No torch member: NaN passes when every member allows it, DataFrames stay."""
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.RandomState(0)
    X = rng.randn(60, 3)
    y = (X[:, 0] > 0).astype(int)
    X[::7, 1] = np.nan
    hgb = HistGradientBoostingClassifier(max_iter=5).fit(X, y)
    ens = OutputEnsembleClassifier([("h", hgb)]).fit(X)
    assert ens.__sklearn_tags__().input_tags.allow_nan
    np.testing.assert_allclose(ens.predict_proba(X), hgb.predict_proba(X), rtol=1e-12)
    frame = pd.DataFrame(np.nan_to_num(X), columns=["a", "b", "c"])
    lr = LogisticRegression().fit(frame, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X has feature names" warning
        both = OutputEnsembleClassifier([("lr", lr), ("h", hgb)]).fit(frame)
        both.predict_proba(frame)
    with pytest.raises(ValueError, match="NaN"):
        both.predict(X)


def test_a_diverged_net_in_the_final_estimator_is_an_error_at_fit():
    # The ensemble's final_estimator is fitted here: a net trained inside it
    # goes through skchain's training, which stops a diverged one.
    from sklearn.preprocessing import StandardScaler

    from skchain import NeuralTransformer

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    members = [
        ("a", LogisticRegression(max_iter=200).fit(X[:300], y[:300])),
        ("b", LogisticRegression(C=0.01, max_iter=200).fit(X[300:600], y[300:600])),
    ]
    net = make_classifier_net(n_classes=10, max_epochs=3, lr=1e20)
    final = make_pipeline(StandardScaler(), NeuralTransformer(net, random_state=0),
                          LogisticRegression())
    ens = OutputEnsembleClassifier(members, final_estimator=final)
    with pytest.raises(ValueError, match=r"(?s)diverged at epoch \d.*GradientNormClipping"):
        ens.fit(X[600:900], y[600:900])
    assert not hasattr(ens, "final_estimator_")
