"""ChainSearchCV / ChainRandomizedSearchCV: same results as scikit-learn's searches,
with each shared pipeline prefix fitted once per fold."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from _search_asserts import assert_same_search as _assert_same_search
from scipy.stats import loguniform
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris, load_wine
from sklearn.decomposition import PCA
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, RandomizedSearchCV, StratifiedKFold
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skchain import ChainRandomizedSearchCV, ChainSearchCV, NeuralTransformer
from skchain._testing import make_classifier_net

CV = StratifiedKFold(3, shuffle=True, random_state=0)


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def wine():
    X, y = load_wine(return_X_y=True)
    return X[::2], y[::2]


def _both(pipe, grid, X, y, **kwargs):
    ref = GridSearchCV(pipe, grid, **kwargs).fit(X, y)
    ours = ChainSearchCV(pipe, grid, **kwargs).fit(X, y)
    return ours, ref


def test_equal_to_gridsearch_without_net(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), PCA(random_state=0), LogisticRegression())
    grid = {
        "standardscaler__with_std": [True, False],
        "pca__n_components": [1, 2, 3],
        "logisticregression__C": [0.01, 1.0],
    }
    ours, ref = _both(pipe, grid, X, y, cv=CV, return_train_score=True)
    _assert_same_search(ours, ref)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.prefix_fits_ == {"standardscaler": 2 * 3, "pca": 2 * 3 * 3}


def test_equal_to_gridsearch_with_net(wine):
    X, y = wine
    net = make_classifier_net(n_classes=3, hidden=8, max_epochs=3)
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("nn", NeuralTransformer(net, random_state=0, cv=None)),
            ("pca", PCA(random_state=0)),
            ("clf", LogisticRegression()),
        ]
    )
    grid = {"nn__net__lr": [0.01, 0.05], "pca__n_components": [2, 3], "clf__C": [0.1, 1.0]}
    ours, ref = _both(pipe, grid, X, y, cv=CV, scoring="accuracy")
    _assert_same_search(ours, ref)
    # 2 nets per fold instead of 8
    assert ours.prefix_fits_ == {"scale": 3, "nn": 2 * 3, "pca": 4 * 3}


def test_equal_with_cross_fitting_net_and_train_scores(wine):
    """fit_transform (out-of-fold) feeds the next step; train scores use transform."""
    X, y = wine
    net = make_classifier_net(n_classes=3, hidden=8, max_epochs=2)
    pipe = make_pipeline(
        StandardScaler(), NeuralTransformer(net, random_state=0, cv=2), LogisticRegression()
    )
    grid = {"logisticregression__C": [0.1, 10.0]}
    ours, ref = _both(pipe, grid, X, y, cv=2, return_train_score=True)
    _assert_same_search(ours, ref)


def test_feature_union_and_column_transformer_inside(iris):
    X, y = iris
    union = FeatureUnion([("pca", PCA(random_state=0)), ("mm", MinMaxScaler())])
    columns = ColumnTransformer(
        [("std", StandardScaler(), [0, 1]), ("keep", "passthrough", [2, 3])]
    )
    pipe = Pipeline([("cols", columns), ("union", union), ("clf", LogisticRegression())])
    grid = {
        "cols__std": [StandardScaler(), "passthrough"],
        "union__pca__n_components": [1, 2],
        "clf__C": [0.1, 1.0],
    }
    ours, ref = _both(pipe, grid, X, y, cv=CV)
    _assert_same_search(ours, ref)
    assert ours.prefix_fits_ == {"cols": 2 * 3, "union": 4 * 3}


def test_dataframe_in_pandas_out():
    pytest.importorskip("pandas")
    X, y = load_iris(return_X_y=True, as_frame=True)
    columns = ColumnTransformer(
        [("std", StandardScaler(), ["sepal length (cm)", "sepal width (cm)"])],
        remainder="passthrough",
    )
    pipe = Pipeline(
        [("cols", columns), ("pca", PCA(random_state=0)), ("clf", LogisticRegression())]
    ).set_output(transform="pandas")
    grid = {"pca__n_components": [1, 2], "clf__C": [0.1, 1.0]}
    ours, ref = _both(pipe, grid, X, y, cv=CV)
    _assert_same_search(ours, ref)
    assert list(ours.feature_names_in_) == list(X.columns)
    assert ours.prefix_fits_ == {"cols": 3, "pca": 6}


def test_step_replacement_and_passthrough(iris):
    X, y = iris
    pipe = Pipeline([("scale", StandardScaler()), ("reduce", PCA()), ("clf", LogisticRegression())])
    grid = [
        {"reduce": ["passthrough"], "clf__C": [0.1, 1.0]},
        {"reduce": [PCA(2, random_state=0)], "clf__C": [0.1, 1.0]},
    ]
    ours, ref = _both(pipe, grid, X, y, cv=CV)
    _assert_same_search(ours, ref)


def test_grid_over_whole_steps_lists(iris):
    """Candidates may differ in their steps' names and number; nothing is shared across."""
    X, y = iris
    pipe = Pipeline([("pca", PCA()), ("clf", LogisticRegression())])
    grid = {
        "steps": [
            [("pca", PCA(2, random_state=0)), ("clf", LogisticRegression())],
            [
                ("sc", StandardScaler()),
                ("p", PCA(1, random_state=0)),
                ("clf", LogisticRegression()),
            ],
        ],
        "clf__C": [0.1, 1.0],
    }
    ours, ref = _both(pipe, grid, X, y, cv=CV)
    _assert_same_search(ours, ref)
    assert ours.prefix_fits_ == {"pca": 3, "sc": 3, "p": 3}


def test_multimetric_and_refit_callable(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), PCA(random_state=0), LogisticRegression())
    grid = {"pca__n_components": [1, 3], "logisticregression__C": [0.01, 1.0]}
    scoring = {"acc": "accuracy", "f1": "f1_macro", "ll": "neg_log_loss"}
    ours, ref = _both(pipe, grid, X, y, cv=CV, scoring=scoring, refit="f1")
    _assert_same_search(ours, ref)
    assert set(ours.scorer_) == {"acc", "f1", "ll"}

    def lowest_c(results):
        return int(np.argmin(results["param_logisticregression__C"]))

    ours, ref = _both(pipe, grid, X, y, cv=CV, scoring=scoring, refit=lowest_c)
    _assert_same_search(ours, ref)
    assert ours.best_index_ == ref.best_index_


def test_regression_and_sample_weight(iris):
    X, y = iris
    y = X[:, 3].copy()
    X = X[:, :3]
    weight = np.linspace(0.5, 2.0, len(y))
    pipe = make_pipeline(StandardScaler(), PCA(random_state=0), Ridge())
    grid = {"pca__n_components": [1, 2], "ridge__alpha": [0.1, 10.0]}
    kw = dict(cv=KFold(3, shuffle=True, random_state=0))
    ref = GridSearchCV(pipe, grid, **kw).fit(X, y, ridge__sample_weight=weight)
    ours = ChainSearchCV(pipe, grid, **kw).fit(X, y, ridge__sample_weight=weight)
    _assert_same_search(ours, ref)


class _Counting(TransformerMixin, BaseEstimator):
    """Scaler that records every fit in a module-level list."""

    fits = []

    def __init__(self, shift=0.0):
        self.shift = shift

    def fit(self, X, y=None):
        type(self).fits.append(self.shift)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return np.asarray(X) + self.shift


def test_prefix_fits_counted(iris):
    X, y = iris
    pipe = Pipeline(
        [
            ("first", _Counting()),
            ("second", _Counting()),
            ("pca", PCA(random_state=0)),
            ("clf", LogisticRegression()),
        ]
    )
    grid = {
        "second__shift": [0.0, 1.0],
        "pca__n_components": [1, 2, 3],
        "clf__C": [0.1, 1.0],
    }
    _Counting.fits.clear()
    search = ChainSearchCV(pipe, grid, cv=CV, refit=False).fit(X, y)
    n_splits = 3
    # "first" has 1 distinct prefix, "second" 2 (x "first"), pca 2 x 3.
    assert len(_Counting.fits) == (1 + 2) * n_splits
    assert search.prefix_fits_ == {"first": 3, "second": 6, "pca": 18}
    # only the final step varies: every transformer is fitted once per fold
    _Counting.fits.clear()
    search = ChainSearchCV(pipe, {"clf__C": [0.1, 1.0, 10.0]}, cv=CV, refit=False).fit(X, y)
    assert len(_Counting.fits) == 2 * n_splits
    assert search.prefix_fits_ == {"first": 3, "second": 3, "pca": 3}
    # GridSearchCV fits every step once per candidate and fold
    _Counting.fits.clear()
    GridSearchCV(pipe, grid, cv=CV, refit=False).fit(X, y)
    assert len(_Counting.fits) == 2 * 12 * n_splits


def test_time_attribution(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), PCA(random_state=0), LogisticRegression())
    grid = {"pca__n_components": [1, 2], "logisticregression__C": [0.1, 1.0, 10.0]}
    search = ChainSearchCV(pipe, grid, cv=CV).fit(X, y)
    res = search.cv_results_
    for key in ("mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"):
        assert res[key].shape == (6,)
        assert np.all(res[key] > 0)


def test_error_score(iris):
    X, y = iris
    pipe = make_pipeline(PCA(random_state=0), LogisticRegression())
    # 10 components do not exist for 4 features: the PCA prefix fails.
    grid = {"pca__n_components": [2, 10], "logisticregression__C": [0.1, 1.0]}
    with pytest.warns(FitFailedWarning):
        ref = GridSearchCV(pipe, grid, cv=CV, error_score=-1.0).fit(X, y)
    with pytest.warns(FitFailedWarning, match="2 fits failed|6 fits failed"):
        ours = ChainSearchCV(pipe, grid, cv=CV, error_score=-1.0).fit(X, y)
    _assert_same_search(ours, ref)
    assert np.all(ours.cv_results_["mean_test_score"][[1, 3]] == -1.0)
    with pytest.raises(ValueError, match="n_components"):
        ChainSearchCV(pipe, grid, cv=CV, error_score="raise").fit(X, y)
    # a failing final estimator fails only its own candidates
    grid = {"logisticregression__C": [1.0, -1.0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitFailedWarning)
        ref = GridSearchCV(pipe, grid, cv=CV).fit(X, y)
        ours = ChainSearchCV(pipe, grid, cv=CV).fit(X, y)
    _assert_same_search(ours, ref)
    assert np.isnan(ours.cv_results_["mean_test_score"][1])


def test_randomized_matches_randomizedsearch(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), PCA(random_state=0), LogisticRegression())
    space = {"pca__n_components": [1, 2, 3], "logisticregression__C": loguniform(1e-2, 1e2)}
    kw = dict(n_iter=6, cv=CV, random_state=0)
    ref = RandomizedSearchCV(pipe, space, **kw).fit(X, y)
    ours = ChainRandomizedSearchCV(pipe, space, **kw).fit(X, y)
    _assert_same_search(ours, ref)
    assert ours.prefix_fits_["pca"] <= 3 * 3


def test_parallel_equals_sequential(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), PCA(random_state=0), LogisticRegression())
    grid = {"pca__n_components": [1, 2], "logisticregression__C": [0.1, 1.0]}
    one = ChainSearchCV(pipe, grid, cv=CV).fit(X, y)
    two = ChainSearchCV(pipe, grid, cv=CV, n_jobs=2).fit(X, y)
    _assert_same_search(two, one)


def test_dask_local_cluster_same_results(iris):
    distributed = pytest.importorskip(
        "dask.distributed", reason="dask.distributed is not installed (extra 'dask')"
    )
    import joblib

    X, y = iris
    pipe = make_pipeline(StandardScaler(), PCA(random_state=0), LogisticRegression())
    grid = {"pca__n_components": [1, 2], "logisticregression__C": [0.1, 1.0]}
    local = ChainSearchCV(pipe, grid, cv=CV).fit(X, y)
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=False,
            protocol="tcp://",
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
            remote = ChainSearchCV(pipe, grid, cv=CV, n_jobs=2).fit(X, y)
    # the work ran as tasks on the cluster (joblib batches the 3 prefix and
    # 6 (fold, PCA) tasks, so count batches, not tasks)
    assert len(stream.data) >= 2
    assert all(task["worker"].startswith("tcp://127.0.0.1:") for task in stream.data)
    _assert_same_search(remote, local)


class _RecordTasks:
    """scikit-learn fit callback that records the names of the tasks it sees."""

    def __init__(self):
        self.tasks = []

    def setup(self, estimator, context):
        pass

    def teardown(self, estimator, context):
        pass

    def on_fit_task_begin(self, estimator, context, **kwargs):
        self.tasks.append(context.task_name)

    def on_fit_task_end(self, estimator, context, **kwargs):
        pass


def test_fit_callbacks_see_search_and_refit(iris):
    pytest.importorskip("sklearn.callback", reason="scikit-learn < 1.9 has no callbacks")
    X, y = iris
    recorder = _RecordTasks()
    pipe = make_pipeline(PCA(random_state=0), LogisticRegression())
    search = ChainSearchCV(pipe, {"pca__n_components": [1, 2]}, cv=CV)
    search.set_callbacks(recorder).fit(X, y)
    assert recorder.tasks == ["fit", "search", "refit-with-best-params"]


def test_rejects_non_pipeline_and_passthrough_final(iris):
    X, y = iris
    with pytest.raises(TypeError, match="make_pipeline"):
        ChainSearchCV(LogisticRegression(), {"C": [1.0]}).fit(X, y)
    pipe = Pipeline([("pca", PCA()), ("clf", "passthrough")])
    with pytest.raises(ValueError, match="final estimator"):
        ChainSearchCV(pipe, {"pca__n_components": [1]}).fit(X, y)
    with pytest.raises(ValueError, match="names no pipeline step"):
        ChainSearchCV(make_pipeline(PCA(), LogisticRegression()), {}).fit(X, y, nope=1)


def test_clone_and_pickle(iris):
    X, y = iris
    pipe = make_pipeline(PCA(random_state=0), LogisticRegression())
    search = ChainSearchCV(pipe, {"pca__n_components": [1, 2]}, cv=CV)
    assert clone(search).get_params()["param_grid"] == {"pca__n_components": [1, 2]}
    search.fit(X, y)
    again = pickle.loads(pickle.dumps(search))
    np.testing.assert_array_equal(again.predict(X), search.predict(X))


@parametrize_with_checks(
    [
        ChainSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression()),
            {"logisticregression__C": [0.1, 1.0]},
            cv=2,
        ),
    ]
)
def test_sklearn_compatible(estimator, check):
    # ChainRandomizedSearchCV shares all its code but the candidate sampling
    check(estimator)


def test_a_diverged_candidate_fails_alone(iris):
    # A training that diverges is a failed fit: error_score (nan, the default)
    # keeps the search going with FitFailedWarning carrying the message, as
    # GridSearchCV does; error_score="raise" raises it.
    X, y = iris
    net = make_classifier_net(n_classes=3, max_epochs=3)
    pipe = make_pipeline(StandardScaler(), NeuralTransformer(net, random_state=0),
                         LogisticRegression())
    grid = {"neuraltransformer__net__lr": [0.05, 1e20]}
    with pytest.warns(FitFailedWarning, match="(?s)3 fits failed.*diverged at epoch"):
        ours = ChainSearchCV(pipe, grid, cv=CV).fit(X, y)
    with pytest.warns(FitFailedWarning):
        ref = GridSearchCV(pipe, grid, cv=CV).fit(X, y)
    _assert_same_search(ours, ref)
    scores = ours.cv_results_["mean_test_score"]
    assert np.isfinite(scores[0]) and np.isnan(scores[1])
    assert ours.best_params_ == {"neuraltransformer__net__lr": 0.05}
    with pytest.raises(ValueError, match="diverged at epoch"):
        ChainSearchCV(pipe, grid, cv=CV, error_score="raise").fit(X, y)


class _FileCountedLinear(torch.nn.Module):
    """A pretrained linear layer that appends each forward pass's rows to a
    file: counts passes over every worker process."""

    def __init__(self, path):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)
        self.path = str(path)

    def forward(self, x):
        with open(self.path, "a") as f:
            f.write(f"{x.shape[0]}\n")
        return self.linear(x)


def _rows_run(path):
    return sum(int(line) for line in open(path)) if path.exists() else 0


def test_a_frozen_head_runs_each_row_once_on_processes_without_a_cache(iris, tmp_path):
    """A pretrained step heading every candidate is run over all rows once,
    before the folds, in disjoint pieces: with loky workers and no cache at
    all, each row runs once (GridSearchCV: once per candidate and fold)."""
    X, y = iris
    X = X.astype(np.float32)
    grid = {"pca__n_components": [2, 3], "logisticregression__C": [0.1, 1.0]}

    def pipe(path):
        nt = NeuralTransformer(_FileCountedLinear(path), batch_size=64, cache=False)
        return make_pipeline(nt, PCA(random_state=0), LogisticRegression())

    ours = ChainSearchCV(pipe(tmp_path / "ours"), grid, cv=CV, n_jobs=2, refit=False).fit(X, y)
    ref = GridSearchCV(pipe(tmp_path / "ref"), grid, cv=CV, refit=False).fit(X, y)
    assert _rows_run(tmp_path / "ours") == len(X)
    assert _rows_run(tmp_path / "ref") >= 4 * len(X)
    assert ours.prefix_fits_ == {"neuraltransformer": 1, "pca": 2 * 3}
    _assert_same_search(ours, ref)
    # The frozen step's time is shared by every candidate and fold.
    assert np.all(ours.cv_results_["mean_fit_time"] > 0)


def test_a_frozen_head_that_fails_is_fitted_by_the_folds(iris):
    """NaN rows: the head fails as a whole, the folds then fit it themselves
    and fail with error_score on each fold, as in GridSearchCV."""
    X, y = iris
    X = X.astype(np.float32).copy()
    X[5, 0] = np.nan  # in the test fold of one split, the training rows of two
    torch.manual_seed(0)
    nt = NeuralTransformer(torch.nn.Linear(4, 3))
    pipe = make_pipeline(nt, LogisticRegression())
    grid = {"logisticregression__C": [0.1, 1.0]}
    with pytest.warns(FitFailedWarning):
        ours = ChainSearchCV(pipe, grid, cv=CV, refit=False).fit(X, y)
    with pytest.warns(FitFailedWarning):
        ref = GridSearchCV(pipe, grid, cv=CV, refit=False).fit(X, y)
    for key in ["mean_test_score"] + [f"split{i}_test_score" for i in range(3)]:
        np.testing.assert_array_equal(ours.cv_results_[key], ref.cv_results_[key])
    assert np.isnan(ours.cv_results_["mean_test_score"]).all()
    with pytest.raises(ValueError, match="NaN"):
        ChainSearchCV(pipe, grid, cv=CV, error_score="raise").fit(X, y)


def test_frozen_head_pieces_batch_rows_as_one_transform():
    """Pieces start at multiples of batch_size: computed one by one, they give
    one transform's values to the last bit (a piece boundary inside a batch
    changes what a forward pass holds, and so the last bits)."""
    from skchain.search._frozen import _piece_rows, _run_piece

    rng = np.random.RandomState(0)
    X = rng.randn(230, 6).astype(np.float32)
    torch.manual_seed(5)
    module = torch.nn.Sequential(torch.nn.Linear(6, 512), torch.nn.ReLU(),
                                 torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                 torch.nn.Linear(512, 4))
    steps = [("nt", NeuralTransformer(module, batch_size=32, cache=False))]
    expected = clone(steps[0][1]).fit(X).transform(X)
    for n_jobs, size in [(1, 256), (2, 128), (3, 96), (8, 32)]:
        assert _piece_rows(steps, len(X), n_jobs) == size
        pieces = [_run_piece(steps, X[i : i + size], None)[0] for i in range(0, len(X), size)]
        np.testing.assert_array_equal(np.concatenate(pieces), expected)
