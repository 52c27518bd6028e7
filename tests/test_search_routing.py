"""ChainSearchCV under scikit-learn's metadata routing: the same as GridSearchCV."""

import warnings

import numpy as np
import pytest
import sklearn
from _search_asserts import assert_same_search as _assert_same_search
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_iris
from sklearn.decomposition import PCA
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, make_scorer
from sklearn.model_selection import GridSearchCV, GroupKFold, RandomizedSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skchain import ChainRandomizedSearchCV, ChainSearchCV


@pytest.fixture
def routing():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


@pytest.fixture(scope="module")
def data():
    X, y = load_iris(return_X_y=True)
    rng = np.random.RandomState(0)
    weight = rng.uniform(0.05, 3.0, len(y))
    groups = np.arange(len(y)) % 10
    return X, y, weight, groups


def _pipe():
    return Pipeline(
        [
            ("scale", StandardScaler().set_fit_request(sample_weight=True)),
            ("pca", PCA(random_state=0)),
            ("clf", LogisticRegression().set_fit_request(sample_weight=True)),
        ]
    )


def _scorer():
    return make_scorer(accuracy_score).set_score_request(sample_weight=True)


GRID = {
    "scale__with_mean": [True, False],
    "pca__n_components": [2, 3],
    "clf__C": [1.0],
}


def test_equal_to_gridsearch_under_routing(routing, data):
    X, y, weight, groups = data
    kw = dict(cv=GroupKFold(3), scoring=_scorer(), return_train_score=True)
    ref = GridSearchCV(_pipe(), GRID, **kw).fit(X, y, sample_weight=weight, groups=groups)
    ours = ChainSearchCV(_pipe(), GRID, **kw).fit(X, y, sample_weight=weight, groups=groups)
    _assert_same_search(ours, ref)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.prefix_fits_ == {"scale": 2 * 3, "pca": 4 * 3}
    # The weights matter here: without them (or unweighted scoring) the
    # scores differ, so the equality above is about routed weights.
    unweighted = GridSearchCV(_pipe(), GRID, cv=GroupKFold(3), scoring=_scorer()).fit(
        X, y, sample_weight=np.ones_like(weight), groups=groups
    )
    assert not np.array_equal(
        unweighted.cv_results_["mean_test_score"], ours.cv_results_["mean_test_score"]
    )


def test_randomized_equal_under_routing(routing, data):
    X, y, weight, groups = data
    kw = dict(cv=GroupKFold(3), scoring=_scorer(), n_iter=3, random_state=0)
    ref = RandomizedSearchCV(_pipe(), GRID, **kw).fit(X, y, sample_weight=weight, groups=groups)
    ours = ChainRandomizedSearchCV(_pipe(), GRID, **kw).fit(
        X, y, sample_weight=weight, groups=groups
    )
    _assert_same_search(ours, ref)


class _Recorder(TransformerMixin, BaseEstimator):
    """Identity step that records the sample_weight its fit received."""

    seen = []

    def fit(self, X, y=None, sample_weight=None):
        type(self).seen.append(None if sample_weight is None else np.array(sample_weight))
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return X


def test_weights_reach_requesting_steps_only_cut_by_fold(routing, data):
    X, y, weight, groups = data
    cv = GroupKFold(3)
    pipe = Pipeline(
        [
            ("asks", _Recorder().set_fit_request(sample_weight=True)),
            ("declines", _Recorder().set_fit_request(sample_weight=False)),
            ("clf", LogisticRegression().set_fit_request(sample_weight=False)),
        ]
    )
    _Recorder.seen.clear()
    search = ChainSearchCV(pipe, {"clf__C": [0.1, 1.0]}, cv=cv, refit=False)
    search.fit(X, y, sample_weight=weight, groups=groups)
    trains = [train for train, _ in cv.split(X, y, groups)]
    # one fit of each step per fold: "asks" got the fold's weights, "declines" none
    assert len(_Recorder.seen) == 2 * len(trains)
    asked = [w for w in _Recorder.seen if w is not None]
    assert len(asked) == len(trains)
    for got, train in zip(asked, trains, strict=True):
        np.testing.assert_array_equal(got, weight[train])


def test_groups_reach_the_splitter(routing, data):
    X, y, _, groups = data
    pipe = Pipeline([("pca", PCA(2)), ("clf", LogisticRegression())])
    search = ChainSearchCV(pipe, {"clf__C": [1.0]}, cv=GroupKFold(3))
    with pytest.raises(ValueError, match="groups"):
        search.fit(X, y)  # GroupKFold without groups: scikit-learn's own error
    search.fit(X, y, groups=groups)
    ref = GridSearchCV(pipe, {"clf__C": [1.0]}, cv=GroupKFold(3)).fit(X, y, groups=groups)
    _assert_same_search(search, ref)


def test_unrequested_metadata_raises_like_gridsearch(routing, data):
    X, y, weight, _ = data
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    grid = {"clf__C": [1.0]}
    with pytest.raises(Exception) as ref_error:
        GridSearchCV(pipe, grid, cv=3).fit(X, y, sample_weight=weight)
    with pytest.raises(type(ref_error.value), match="sample_weight"):
        ChainSearchCV(pipe, grid, cv=3).fit(X, y, sample_weight=weight)


def test_step_swapped_in_without_request_fails_like_gridsearch(routing, data):
    """A grid may swap in a step that does not request what was passed."""
    X, y, weight, groups = data
    grid = {"scale": [StandardScaler().set_fit_request(sample_weight=True), StandardScaler()]}
    kw = dict(cv=GroupKFold(3), scoring=_scorer())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (FitFailedWarning, UserWarning))
        ref = GridSearchCV(_pipe(), grid, **kw).fit(X, y, sample_weight=weight, groups=groups)
        ours = ChainSearchCV(_pipe(), grid, **kw).fit(X, y, sample_weight=weight, groups=groups)
    assert np.isnan(ref.cv_results_["mean_test_score"][1])
    _assert_same_search(ours, ref)


def test_transform_input_is_refused(routing, data):
    X, y, weight, _ = data
    pipe = Pipeline(
        [("scale", StandardScaler()), ("clf", LogisticRegression())], transform_input=["X_val"]
    )
    with pytest.raises(ValueError, match="transform_input"):
        ChainSearchCV(pipe, {"clf__C": [1.0]}, cv=3).fit(X, y)


def test_routing_off_keeps_step_param_spelling(data):
    X, y, weight, _ = data
    assert not sklearn.get_config()["enable_metadata_routing"]
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    grid = {"clf__C": [0.1, 1.0]}
    ref = GridSearchCV(pipe, grid, cv=3).fit(X, y, clf__sample_weight=weight)
    ours = ChainSearchCV(pipe, grid, cv=3).fit(X, y, clf__sample_weight=weight)
    _assert_same_search(ours, ref)
