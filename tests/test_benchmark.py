"""``skchain.compare``: side-by-side cross validation that survives a failing model."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import load_diabetes, load_iris
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skchain import NeuralTransformer, compare
from skchain._testing import make_classifier_net
from skchain._zoo import DATASETS, bench_setup, default_models


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


class FailingFit(ClassifierMixin, BaseEstimator):
    """Raises in ``fit`` on every fold, or only on folds that train on ``row``."""

    def __init__(self, row=None):
        self.row = row

    def fit(self, X, y):
        if self.row is None or np.all(X == np.asarray(self.row), axis=1).any():
            raise ValueError("this model is broken on purpose")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


class FailingPredict(DummyClassifier):
    def predict(self, X):
        raise RuntimeError("predict exploded")


def test_scores_are_cross_validate_scores_on_shared_folds(iris):
    X, y = iris
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    models = {"logreg": LogisticRegression(max_iter=1000), "prior": DummyClassifier()}
    results = compare(models, X, y, cv=cv, scoring="accuracy", verbose=0)

    assert list(results.index) == ["logreg", "prior"]
    assert results.index.name == "model"
    for name, model in models.items():
        expected = cross_validate(model, X, y, cv=cv, scoring="accuracy")["test_score"]
        assert results.loc[name, "accuracy_mean"] == pytest.approx(expected.mean())
        assert results.loc[name, "accuracy_std"] == pytest.approx(expected.std())
    assert results.loc["logreg", "rank"] == 1 and results.loc["prior", "rank"] == 2
    assert (results["fit_time"] > 0).all() and (results["predict_time"] > 0).all()
    assert (results["n_failed"] == 0).all() and (results["error"] == "").all()
    # The user's estimators are cloned, never fitted in place.
    assert not hasattr(models["logreg"], "coef_")


def test_a_failing_model_does_not_lose_the_others(iris):
    X, y = iris
    cv = KFold(3, shuffle=True, random_state=0)
    test_fold_of_row_0 = next(i for i, (_, test) in enumerate(cv.split(X)) if 0 in test)
    models = [
        ("logreg", LogisticRegression(max_iter=1000)),
        ("broken fit", FailingFit()),
        ("broken predict", FailingPredict()),
        ("partly broken", FailingFit(row=tuple(X[0]))),
    ]
    with pytest.warns(FitFailedWarning, match="broken fit: 3/3 folds failed"):
        results, folds = compare(
            models, X, y, cv=cv, scoring="accuracy", verbose=0, return_folds=True
        )

    good = cross_validate(LogisticRegression(max_iter=1000), X, y, cv=cv)["test_score"]
    assert results.loc["logreg", "accuracy_mean"] == pytest.approx(good.mean())
    assert results.loc["logreg", "rank"] == 1

    assert results.loc["broken fit", "n_failed"] == 3
    assert results.loc["broken fit", "error"] == "ValueError: this model is broken on purpose"
    assert np.isnan(results.loc["broken fit", "accuracy_mean"])
    assert pd.isna(results.loc["broken fit", "rank"])
    assert results.loc["broken predict", "error"] == "RuntimeError: predict exploded"
    assert results.loc["broken predict", "n_failed"] == 3

    # Fails on the two folds that train on row 0, works on the one that tests it.
    mine = folds[folds["model"] == "partly broken"].set_index("fold")
    others = [i for i in range(3) if i != test_fold_of_row_0]
    assert mine.loc[test_fold_of_row_0, "error"] == ""
    assert 0.0 < mine.loc[test_fold_of_row_0, "test_accuracy"] < 1.0
    assert mine.loc[others, "error"].str.startswith("ValueError").all()
    assert mine.loc[others, "test_accuracy"].isna().all()
    assert results.loc["partly broken", "n_failed"] == 2
    assert np.isnan(results.loc["partly broken", "accuracy_mean"])


def test_numeric_error_score_counts_in_the_mean(iris):
    X, y = iris
    with pytest.warns(FitFailedWarning):
        results = compare(
            {"ok": DummyClassifier(), "broken": FailingFit()},
            X,
            y,
            cv=3,
            error_score=0.0,
            verbose=0,
        )
    assert results.loc["broken", "score_mean"] == 0.0
    assert results.loc["broken", "rank"] == 2


def test_error_score_raise_gives_the_original_exception(iris):
    X, y = iris
    with pytest.raises(ValueError, match="broken on purpose"):
        compare({"broken": FailingFit()}, X, y, cv=3, error_score="raise", verbose=0)


def test_every_model_failing_still_returns_a_table(iris):
    X, y = iris
    with pytest.warns(FitFailedWarning):
        results = compare(
            {"a": FailingFit(), "b": FailingFit()},
            X,
            y,
            cv=2,
            scoring=["accuracy", "f1_macro"],
            verbose=0,
        )
    assert list(results.columns[:4]) == [
        "accuracy_mean",
        "accuracy_std",
        "f1_macro_mean",
        "f1_macro_std",
    ]
    assert results["rank"].isna().all()


def test_several_metrics_first_one_ranks(iris):
    X, y = iris
    results, folds = compare(
        {"logreg": LogisticRegression(max_iter=1000), "prior": DummyClassifier()},
        X,
        y,
        cv=3,
        scoring=["neg_log_loss", "accuracy"],
        verbose=0,
        return_folds=True,
    )
    assert {"neg_log_loss_mean", "accuracy_mean", "accuracy_std"} <= set(results.columns)
    assert results.loc["logreg", "rank"] == 1
    assert list(folds.columns) == [
        "model",
        "fold",
        "test_neg_log_loss",
        "test_accuracy",
        "fit_time",
        "predict_time",
        "error",
    ]
    assert len(folds) == 6
    assert folds.groupby("model")["test_accuracy"].mean()["prior"] == pytest.approx(
        results.loc["prior", "accuracy_mean"]
    )


def test_regression_dict_scoring_and_default_kfold():
    X, y = load_diabetes(return_X_y=True)
    scoring = {"r2": "r2", "mae": "neg_mean_absolute_error"}
    results = compare([("ridge", Ridge())], X, y, cv=4, scoring=scoring, verbose=0)
    expected = cross_validate(Ridge(), X, y, cv=KFold(4), scoring=scoring)
    assert results.loc["ridge", "r2_mean"] == pytest.approx(expected["test_r2"].mean())
    assert results.loc["ridge", "mae_mean"] == pytest.approx(expected["test_mae"].mean())


def test_a_chain_with_a_net_on_a_dataframe(iris):
    X, y = load_iris(return_X_y=True, as_frame=True)
    chain = make_pipeline(
        StandardScaler(),
        NeuralTransformer(make_classifier_net(n_classes=3, max_epochs=3), cv=2, random_state=0),
        LogisticRegression(),
    )
    results = compare({"chain": chain, "prior": DummyClassifier()}, X, y, cv=2, verbose=0)
    assert results.loc["chain", "n_failed"] == 0
    assert 0.0 <= results.loc["chain", "score_mean"] <= 1.0
    again = compare({"chain": chain}, X, y, cv=2, verbose=0)
    assert again.loc["chain", "score_mean"] == results.loc["chain", "score_mean"]


def test_progress_lines_on_stderr(iris, capsys):
    X, y = iris
    with pytest.warns(FitFailedWarning):
        compare(
            {"logreg": LogisticRegression(max_iter=1000), "broken": FailingFit()},
            X,
            y,
            cv=2,
            scoring="accuracy",
            error_score=0.0,
        )
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "compare: 2 models x 2 folds = 4 fits"
    assert lines[1].startswith("[1/4] logreg | fold 1/2 | accuracy ")
    assert lines[2].startswith("[2/4] logreg | fold 2/2 | accuracy ")
    assert lines[4].startswith("[4/4] broken | fold 2/2 | FAILED after ")
    assert lines[4].endswith("ValueError: this model is broken on purpose")


def test_silent_with_verbose_0(iris, capsys):
    X, y = iris
    compare({"prior": DummyClassifier()}, X, y, cv=2, verbose=0)
    assert capsys.readouterr() == ("", "")


def test_parallel_gives_the_sequential_results(iris):
    X, y = iris
    models = {"logreg": LogisticRegression(max_iter=1000), "prior": DummyClassifier()}
    one = compare(models, X, y, cv=3, verbose=0)
    two = compare(models, X, y, cv=3, verbose=0, n_jobs=2)
    pd.testing.assert_series_equal(one["score_mean"], two["score_mean"])


@pytest.mark.parametrize(
    "estimators, error, match",
    [
        ({}, ValueError, "estimators is empty"),
        ({"a": LogisticRegression, "b": "svm"}, TypeError, r"estimators\['b'\] is a str"),
        ([("a", DummyClassifier()), ("a", DummyClassifier())], ValueError, "repeated: \\['a'\\]"),
        ([DummyClassifier()], TypeError, "list of \\(name, estimator\\) pairs"),
        ({1: DummyClassifier()}, TypeError, "names must be strings"),
    ],
)
def test_bad_estimators_are_named(iris, estimators, error, match):
    X, y = iris
    with pytest.raises(error, match=match):
        compare(estimators, X, y, verbose=0)


def test_bad_parameters(iris):
    X, y = iris
    with pytest.raises(ValueError, match="error_score"):
        compare({"a": DummyClassifier()}, X, y, error_score="ignore")
    with pytest.raises(ValueError, match="cv"):
        compare({"a": DummyClassifier()}, X, y, cv="five")


# -- the zoo of ``skchain bench`` ------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_zoo_has_chains_and_baselines(task):
    models = default_models(task, n_classes=3, n_train=100, quick=True, seed=0)
    kinds = [entry.kind for entry in models.values()]
    assert kinds.count("chain") == 4 and kinds.count("baseline") == 3
    assert "net alone" in models and "hist gradient boosting" in models
    for entry in models.values():
        clone(entry.estimator)  # scikit-learn estimators all the way down
        assert entry.description


def test_quick_setup_subsamples_and_seeds():
    setup = bench_setup("digits", cv=2, quick=True, seed=3)
    assert setup.X.shape == (300, 64) and setup.scoring == "accuracy"
    assert np.bincount(setup.y).min() >= 25  # stratified
    again = bench_setup("digits", cv=2, quick=True, seed=3)
    np.testing.assert_array_equal(setup.X, again.X)
    assert bench_setup("diabetes", quick=False).scoring == "r2"
    assert set(DATASETS) == {"digits", "iris", "wine", "breast_cancer", "diabetes"}
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'"):
        bench_setup("mnist")
