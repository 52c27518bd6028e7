"""Out-of-fold ``fit_transform`` (cv=...) and the story-2 stacking recipe."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, make_classification
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, ShuffleSplit, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback

from skchain import NeuralTransformer
from skchain._testing import RowStats, make_classifier_net, make_regressor_net


@pytest.fixture(scope="module")
def noisy():
    # Few rows, flipped labels, a wide net and many epochs: the net memorises.
    X, y = make_classification(
        n_samples=80, n_features=10, n_informative=4, flip_y=0.2, random_state=0
    )
    return StandardScaler().fit_transform(X).astype(np.float32), y


def _memorising(**kwargs):
    net = make_classifier_net(n_classes=2, hidden=64, max_epochs=150, lr=0.01)
    return NeuralTransformer(net, output="proba", random_state=0, **kwargs)


def _confidence_in_true_label(P, y):
    return P[np.arange(len(y)), y].mean()


def test_out_of_fold_outputs_are_less_confident(noisy):
    X, y = noisy
    in_sample = _memorising(cv=None).fit(X, y).transform(X)
    oof = _memorising(cv=5).fit_transform(X, y)
    # In sample, the memorising net is near certain of every label, flipped
    # ones included; out of fold it is only as good as it generalises.
    assert _confidence_in_true_label(in_sample, y) > 0.95
    assert _confidence_in_true_label(oof, y) < _confidence_in_true_label(in_sample, y) - 0.15
    assert (oof.argmax(1) == y).mean() < (in_sample.argmax(1) == y).mean()


def test_default_cv_cross_fits_a_trained_classifier(noisy):
    X, y = noisy
    default = _memorising().fit_transform(X, y)
    explicit = _memorising(cv=5).fit_transform(X, y)
    np.testing.assert_array_equal(default, explicit)


def test_target_encoder_contract(noisy):
    """``fit_transform`` is out of fold; the kept net is the one ``fit`` trains."""
    X, y = noisy
    nt = _memorising(cv=4)
    oof = nt.fit_transform(X, y)
    plain = _memorising(cv=4).fit(X, y)
    assert not np.allclose(oof, plain.transform(X))
    np.testing.assert_array_equal(nt.transform(X), plain.transform(X))
    assert nt.net_ is not None and nt.n_features_in_ == X.shape[1]
    np.testing.assert_array_equal(nt.classes_, [0, 1])


class _RecordRows(Callback):
    """Records the training rows of every fit (in-process runs only)."""

    fits = []

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        type(self).fits.append(set())

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            type(self).fits[-1].update(map(bytes, np.asarray(batch[0])))


def test_each_fold_net_never_sees_its_held_out_rows(noisy):
    X, y = noisy
    _RecordRows.fits = []
    splits = list(KFold(4).split(X))
    net = make_classifier_net(n_classes=2, max_epochs=2, callbacks=[_RecordRows()])
    NeuralTransformer(net, cv=splits, random_state=0).fit_transform(X, y)
    rows = [bytes(row) for row in X]
    full, *folds = _RecordRows.fits
    assert full == set(rows)
    assert len(folds) == len(splits)
    for seen, (train, test) in zip(folds, splits, strict=True):
        assert seen == {rows[i] for i in train}
        assert seen.isdisjoint(rows[i] for i in test)


def test_fold_missing_a_class_keeps_column_meaning():
    rng = np.random.RandomState(0)
    y = np.array(["a", "b"] * 20 + ["z"] * 4, dtype=object)
    X = rng.normal(size=(len(y), 3)).astype(np.float32)
    X[y == "b"] += 3
    X[y == "z"] -= 3
    # The first fold holds out every "z": its net never sees that label.
    test0 = np.flatnonzero(y == "z")
    rest = np.setdiff1d(np.arange(len(y)), test0)
    first, second = rest[:20], rest[20:]
    splits = [(rest, test0), (np.r_[test0, second], first), (np.r_[test0, first], second)]
    nt = NeuralTransformer(
        make_classifier_net(n_classes=3, max_epochs=30), cv=splits, random_state=0
    )
    oof = nt.fit_transform(X, y)
    assert oof.shape == (len(y), 3)
    np.testing.assert_array_equal(nt.classes_, ["a", "b", "z"])
    b_rows = np.flatnonzero(y == "b")
    assert (oof[b_rows].argmax(1) == 1).mean() > 0.8


def test_parallel_folds_match_sequential(noisy):
    X, y = noisy
    net = make_classifier_net(n_classes=2, max_epochs=3)
    one = NeuralTransformer(net, cv=3, random_state=0).fit_transform(X, y)
    two_nt = NeuralTransformer(net, cv=3, n_jobs=2, random_state=0)
    two = two_nt.fit_transform(X, y)
    np.testing.assert_allclose(one, two, atol=1e-6)
    assert two_nt.transform(X).shape == one.shape


def test_regressor_predictions_out_of_fold():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X[:120])
    y = (y[:120] - y[:120].mean()) / y[:120].std()
    net = make_regressor_net(hidden=64, max_epochs=200, lr=0.01)
    nt = NeuralTransformer(net, cv=4, random_state=0)
    oof = nt.fit_transform(X, y)
    in_sample = nt.transform(X)
    assert oof.shape == (120, 1)
    # In sample the net fits the noise; out of fold its error is larger.
    assert np.mean((oof[:, 0] - y) ** 2) > 1.5 * np.mean((in_sample[:, 0] - y) ** 2)


def test_embedding_is_not_cross_fitted(noisy):
    X, y = noisy
    net = make_classifier_net(n_classes=2, max_epochs=3)
    auto = NeuralTransformer(net, output="embedding", random_state=0)
    np.testing.assert_array_equal(auto.fit_transform(X, y), auto.transform(X))
    with pytest.raises(ValueError, match="embedding.*own coordinates|coordinates"):
        NeuralTransformer(net, output="embedding", cv=3).fit_transform(X, y)
    with pytest.raises(ValueError, match="cv cross-fits"):
        NeuralTransformer(net, output=["encoder.1"], cv=3).fit_transform(X, y)


def test_pretrained_and_unsupervised_nets_are_not_cross_fitted(noisy):
    X, y = noisy
    frozen = NeuralTransformer(RowStats(), cv=5)
    np.testing.assert_array_equal(frozen.fit_transform(X, y), frozen.transform(X))
    net = make_classifier_net(n_classes=2, max_epochs=3).fit(X, y)
    frozen_net = NeuralTransformer(net, frozen=True, cv=5)
    np.testing.assert_array_equal(frozen_net.fit_transform(X, y), frozen_net.transform(X))


def test_cv_must_partition_the_rows(noisy):
    X, y = noisy
    nt = NeuralTransformer(make_classifier_net(max_epochs=1), cv=ShuffleSplit(3))
    with pytest.raises(ValueError, match="held out exactly once"):
        nt.fit_transform(X, y)


def test_pandas_output_with_cross_fitting(noisy):
    X, y = noisy
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    nt = NeuralTransformer(make_classifier_net(max_epochs=2), cv=3, random_state=0)
    out = nt.set_output(transform="pandas").fit_transform(df, y)
    assert list(out.columns) == ["proba_0", "proba_1"]
    np.testing.assert_array_equal(nt.feature_names_in_, df.columns)


# -- story 2: nets on feature subsets, stacked ---------------------------------------


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer(as_frame=True)
    X, y = data.data.iloc[:300], data.target.iloc[:300]
    return X, y


def _two_group_stack(cols_a, cols_b, passthrough=True):
    def branch():
        net = make_classifier_net(n_classes=2, max_epochs=5)
        return make_pipeline(StandardScaler(), NeuralTransformer(net, random_state=0))

    parts = [("net_a", branch(), cols_a), ("net_b", branch(), cols_b)]
    if passthrough:
        parts.append(("raw", StandardScaler(), cols_a + cols_b))
    return make_pipeline(
        ColumnTransformer(parts, verbose_feature_names_out=True),
        LogisticRegression(max_iter=500),
    )


def test_stacking_recipe_in_search_and_cross_validation(cancer):
    X, y = cancer
    cols = list(X.columns)
    cols_a, cols_b = cols[:15], cols[15:]
    stack = _two_group_stack(cols_a, cols_b)
    scores = cross_val_score(stack, X, y, cv=3)
    assert scores.mean() > 0.85

    grid = {
        "columntransformer__net_a__neuraltransformer__net__lr": [0.01, 0.05],
        "columntransformer__net_b__neuraltransformer__net__module__hidden": [8, 16],
        "logisticregression__C": [0.1, 1.0],
    }
    search = GridSearchCV(stack, grid, cv=2).fit(X, y)
    assert search.best_score_ > 0.85
    names = search.best_estimator_[:-1].get_feature_names_out()
    assert list(names[:4]) == [
        "net_a__proba_0",
        "net_a__proba_1",
        "net_b__proba_0",
        "net_b__proba_1",
    ]
    assert list(names[4:]) == [f"raw__{c}" for c in cols]


def test_stacking_recipe_trains_final_model_on_out_of_fold_outputs(cancer):
    X, y = cancer
    cols = list(X.columns)
    stack = _two_group_stack(cols[:15], cols[15:], passthrough=False).fit(X, y)
    union = stack[0]
    seen_by_final = union.fit_transform(X, y)
    in_sample = union.transform(X)
    assert not np.allclose(seen_by_final, in_sample)


def test_stacking_with_a_net_pretrained_on_another_dataset(cancer):
    X, y = cancer
    data = load_breast_cancer(as_frame=True)
    other_X, other_y = data.data.iloc[300:], data.target.iloc[300:]
    cols_a = list(X.columns[:10])
    scaler = StandardScaler().fit(other_X[cols_a])
    pretrained = make_classifier_net(n_classes=2, max_epochs=10).fit(
        scaler.transform(other_X[cols_a]).astype(np.float32), other_y.to_numpy()
    )
    before = {k: v.clone() for k, v in pretrained.module_.state_dict().items()}
    stack = make_pipeline(
        ColumnTransformer(
            [
                (
                    "model_a",
                    make_pipeline(scaler, NeuralTransformer(pretrained, frozen=True)),
                    cols_a,
                ),
                ("raw", "passthrough", list(X.columns[10:])),
            ]
        ),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    )
    scores = cross_val_score(stack, X, y, cv=3)
    assert scores.mean() > 0.85
    after = pretrained.module_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_regression_stack_with_ridge():
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X, y = X.iloc[:200], y.iloc[:200]
    net = make_regressor_net(hidden=16, max_epochs=20, lr=0.01)
    stack = make_pipeline(
        ColumnTransformer(
            [
                (
                    "net",
                    make_pipeline(StandardScaler(), NeuralTransformer(net, random_state=0)),
                    ["bmi", "bp", "s5"],
                ),
                ("raw", "passthrough", list(X.columns)),
            ]
        ),
        Ridge(),
    )
    # The net sees the raw target scale: it needs y standardised to train well,
    # but the stack must still run end to end and give a finite score.
    scores = cross_val_score(stack, X, y, cv=3)
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_a_diverged_fold_net_is_an_error_at_fit_transform(noisy, n_jobs):
    # Every fold's net and the net on all rows train through one routine that
    # checks for divergence, also in joblib's worker processes.
    X, y = noisy
    net = make_classifier_net(n_classes=2, max_epochs=3, lr=1e20)
    nt = NeuralTransformer(net, output="proba", cv=3, n_jobs=n_jobs, random_state=0)
    with pytest.raises(ValueError, match=r"(?s)diverged at epoch \d.*GradientNormClipping"):
        nt.fit_transform(X, y)
    assert not hasattr(nt, "module_")
