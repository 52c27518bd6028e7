"""ChainSearchCV can be trusted: Ctrl+C ends it, a failed fit leaves nothing
half-fitted, and seeded searches give GridSearchCV's results under threads."""

from contextlib import nullcontext

import joblib
import numpy as np
import pytest
from _search_asserts import assert_same_search
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_iris, load_wine
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from skchain import ChainSearchCV, NeuralTransformer
from skchain._testing import make_classifier_net

CV = StratifiedKFold(3, shuffle=True, random_state=0)


class _Interrupt(TransformerMixin, BaseEstimator):
    """Identity step whose fit is "interrupted by Ctrl+C" when ``stop`` is set."""

    def __init__(self, stop=False):
        self.stop = stop

    def fit(self, X, y=None):
        if self.stop:
            raise KeyboardInterrupt
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return X


class _InterruptingClassifier(LogisticRegression):
    def __init__(self, C=1.0, stop=False):
        super().__init__(C=C)
        self.stop = stop

    def fit(self, X, y, sample_weight=None):
        if self.stop:
            raise KeyboardInterrupt
        return super().fit(X, y, sample_weight=sample_weight)


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


def _fitted_search(X, y, pipe, grid):
    search = ChainSearchCV(pipe, grid, cv=CV, error_score=np.nan)
    search.fit(X, y)
    assert hasattr(search, "best_estimator_")
    return search


def _assert_not_fitted(search):
    for attr in ("best_estimator_", "cv_results_", "best_params_", "n_splits_", "prefix_fits_"):
        assert not hasattr(search, attr), attr
    with pytest.raises(NotFittedError):
        check_is_fitted(search)


@pytest.mark.parametrize("n_jobs, backend", [(1, None), (2, "threading")])
@pytest.mark.parametrize("where", ["shared prefix", "branch", "final step"])
def test_keyboard_interrupt_ends_the_search(iris, where, n_jobs, backend):
    X, y = iris
    pipe = Pipeline(
        [
            ("first", _Interrupt()),
            ("pca", PCA(2, random_state=0)),
            ("clf", _InterruptingClassifier()),
        ]
    )
    search = _fitted_search(X, y, pipe, {"clf__C": [0.1, 1.0]})
    grid = {
        "shared prefix": {"first__stop": [True], "clf__C": [0.1, 1.0]},
        "branch": {"pca__n_components": [1, 2], "first__stop": [False, True]},
        "final step": {"clf__stop": [False, True], "pca__n_components": [1, 2]},
    }[where]
    # error_score=nan would record an Exception as a failed candidate; an
    # interrupt is never one
    search.set_params(param_grid=grid, n_jobs=n_jobs)
    with joblib.parallel_backend(backend) if backend else nullcontext():
        with pytest.raises(KeyboardInterrupt):
            search.fit(X, y)
    # nothing of the earlier fit is left beside a half-done new one
    _assert_not_fitted(search)


class _FailsOnAllRows(TransformerMixin, BaseEstimator):
    """Fits on a fold of iris, fails on all 150 rows: a failing refit."""

    def fit(self, X, y=None):
        if len(X) == 150:
            raise ValueError("refit on all rows fails")
        return self

    def transform(self, X):
        return X


def test_failed_search_leaves_no_half_fitted_state(iris):
    X, y = iris
    pipe = Pipeline([("pca", PCA(random_state=0)), ("clf", LogisticRegression())])
    search = _fitted_search(X, y, pipe, {"pca__n_components": [1, 2]})
    # a candidate that fails with error_score="raise"
    search.set_params(param_grid={"pca__n_components": [2, 10]}, error_score="raise")
    with pytest.raises(ValueError, match="n_components"):
        search.fit(X, y)
    _assert_not_fitted(search)
    # a refit that fails after every candidate was evaluated
    pipe = Pipeline([("big", _FailsOnAllRows()), ("clf", LogisticRegression())])
    search = _fitted_search(X[:100], y[:100], pipe, {"clf__C": [0.1, 1.0]})
    with pytest.raises(ValueError, match="refit"):
        search.fit(X, y)
    _assert_not_fitted(search)
    # and a successful fit after a failed one is complete
    search.fit(X[:100], y[:100])
    check_is_fitted(search)
    assert search.cv_results_["params"] == [{"clf__C": 0.1}, {"clf__C": 1.0}]


def test_refit_false_after_refit_true_drops_best_estimator(iris):
    X, y = iris
    pipe = Pipeline([("pca", PCA(random_state=0)), ("clf", LogisticRegression())])
    search = _fitted_search(X, y, pipe, {"pca__n_components": [1, 2]})
    search.set_params(refit=False).fit(X, y)
    assert not hasattr(search, "best_estimator_")
    assert hasattr(search, "cv_results_")


def test_seeded_threads_equal_gridsearch():
    """Seeded nets in joblib threads: the same results as one at a time."""
    X, y = load_wine(return_X_y=True)
    X, y = X[::2], y[::2]
    net = make_classifier_net(n_classes=3, hidden=16, max_epochs=8, batch_size=16)
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("nn", NeuralTransformer(net, random_state=0, cv=None)),
            ("clf", LogisticRegression()),
        ]
    )
    grid = {"nn__net__lr": [0.01, 0.02, 0.05], "clf__C": [0.1, 1.0]}
    ref = GridSearchCV(pipe, grid, cv=CV).fit(X, y)
    with joblib.parallel_backend("threading"):
        ours = ChainSearchCV(pipe, grid, cv=CV, n_jobs=2).fit(X, y)
    assert_same_search(ours, ref)
