"""ChainSearchCV trains a net once per fold for several ``max_epochs``.

Candidates that differ in a NeuralTransformer step only by ``net__max_epochs``
share one training for the longest length; the shorter ones are evaluated
from checkpoints. The scores must be GridSearchCV's, exactly, and the
trainings must really be shared (counted) -- or not shared at all where
sharing could not be exact.
"""

import numpy as np
import pytest
import torch
from _search_asserts import assert_same_search
from sklearn.base import clone
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import LRScheduler
from skorch.dataset import ValidSplit

import skchain._neural
from skchain import ChainSearchCV, NeuralTransformer
from skchain._testing import make_classifier_net

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
CV = StratifiedKFold(3, shuffle=True, random_state=0)
EPOCHS = [2, 4, 6]


@pytest.fixture
def trainings(monkeypatch):
    """The ``max_epochs`` of every net trained, in order."""
    seen = []
    train = skchain._neural.train_net

    def counting(net, *args, **kwargs):
        seen.append(net.max_epochs)
        return train(net, *args, **kwargs)

    monkeypatch.setattr(skchain._neural, "train_net", counting)
    return seen


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[::3].astype(np.float32), y[::3]


def _pipe(n_classes, output="embedding", cv="auto", **net_params):
    net = make_classifier_net(n_classes=n_classes, hidden=8, lr=0.05, **net_params)
    nt = NeuralTransformer(net, output=output, random_state=0, cv=cv)
    return Pipeline(
        [("scale", StandardScaler()), ("nt", nt), ("lr", LogisticRegression(max_iter=200))]
    )


def _both(pipe, grid, X, y, trainings, **kwargs):
    ours = ChainSearchCV(pipe, grid, cv=CV, **kwargs).fit(X, y)
    n_ours = len(trainings)
    ref = GridSearchCV(pipe, grid, cv=CV, **kwargs).fit(X, y)
    return ours, ref, list(trainings[:n_ours])


@pytest.mark.parametrize("data", ["iris", "digits"])
def test_epochs_share_one_training_and_equal_gridsearch(data, request, trainings):
    X, y = request.getfixturevalue(data)
    pipe = _pipe(len(np.unique(y)))
    grid = {"nt__net__max_epochs": EPOCHS, "lr__C": [0.1, 1.0]}
    ours, ref, trained = _both(pipe, grid, X, y, trainings, return_train_score=True)
    assert_same_search(ours, ref)
    # one training per fold, for the longest length; then the refit of the best
    assert trained == [6, 6, 6, ours.best_params_["nt__net__max_epochs"]]
    assert ours.prefix_fits_ == {"scale": 3, "nt": 3}
    # the refit trains normally: its history has the best length
    best = ours.best_estimator_.named_steps["nt"]
    assert len(best.net_.history) == ours.best_params_["nt__net__max_epochs"]
    # the shorter lengths do score differently: no candidate reused another's net
    assert len(set(ours.cv_results_["split0_test_score"][::2])) > 1


def test_one_training_per_other_setting(iris, trainings):
    X, y = iris
    grid = {
        "nt__net__max_epochs": EPOCHS,
        "nt__net__module__hidden": [4, 8],
        "lr__C": [0.1, 1.0],
    }
    ours, ref, trained = _both(_pipe(3), grid, X, y, trainings, refit=False)
    assert_same_search(ours, ref)
    assert trained == [6] * (3 * 2)
    assert ours.prefix_fits_["nt"] == 3 * 2


def test_epochs_with_list_grid_and_a_step_before(iris, trainings):
    # Candidates that set max_epochs and candidates that keep the net's own
    # (5) share only among themselves; a different scaler setting splits them.
    X, y = iris
    grid = [
        {"nt__net__max_epochs": [2, 4], "scale__with_std": [True, False]},
        {"lr__C": [0.5]},
    ]
    ours, ref, trained = _both(_pipe(3), grid, X, y, trainings, refit=False)
    assert_same_search(ours, ref)
    assert sorted(trained) == sorted([4] * (3 * 2) + [5] * 3)


def test_shorter_step_is_the_shorter_training(iris):
    # The checkpointed step equals a net trained for that length on its own:
    # same weights, same history length, same outputs.
    from skchain.search._epochs import fit_epochs

    X, y = iris
    nt = _pipe(3).named_steps["nt"]
    steps = {k: clone(nt).set_params(net__max_epochs=k) for k in (2, 5)}
    fitted, _ = fit_epochs(steps, lambda step: (step.fit_transform(X, y), step), X)
    for k in (2, 5):
        step, Xt = fitted[k]
        alone = clone(steps[k]).fit(X, y)
        assert len(step.net_.history) == k == len(alone.net_.history)
        assert step.net_.max_epochs == k
        for (name, a), (_, b) in zip(
            step.module_.state_dict().items(), alone.module_.state_dict().items(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
        np.testing.assert_allclose(Xt, alone.transform(X), rtol=1e-5, atol=1e-6)
    # the longest training's history is left whole
    assert len(fitted[5][0].net_.history) == 5


def _cosine(max_epochs):
    return LRScheduler(policy=torch.optim.lr_scheduler.CosineAnnealingLR, T_max=max_epochs)


@pytest.mark.parametrize(
    "case",
    ["callbacks", "warm_start", "train_split", "cross_fit"],
)
def test_fallback_trains_each_length(case, iris, trainings):
    X, y = iris
    grid = {"nt__net__max_epochs": [2, 4], "lr__C": [0.1, 1.0]}
    folds_per_fit = 1
    if case == "callbacks":
        # a schedule over the total length: 2 epochs of a 4-epoch cosine
        # are not a 2-epoch cosine, so nothing may be shared
        pipe = _pipe(3, callbacks=[("sched", _cosine(4))])
    elif case == "warm_start":
        pipe = _pipe(3, warm_start=True)
    elif case == "train_split":
        pipe = _pipe(3, train_split=ValidSplit(3, stratified=True))
    else:
        pipe = _pipe(3, output="proba", cv=2)
        folds_per_fit = 2 + 1  # two fold nets and the net on all rows
    ours, ref, trained = _both(pipe, grid, X, y, trainings, refit=False)
    assert_same_search(ours, ref)
    assert sorted(trained) == sorted([2, 4] * 3 * folds_per_fit)
    assert ours.prefix_fits_["nt"] == 3 * 2


def test_a_shared_training_that_diverges_fails_only_the_longer_lengths(iris, trainings):
    # 100 training rows per fold in batches of 64: 2 batches per epoch, so the
    # net's outputs turn NaN from epoch 4 on (from epoch 3 in the refit on all
    # 150 rows). A 2-epoch training alone never gets there: its candidates
    # must score as in GridSearchCV, where they train on their own; the 4-
    # and 6-epoch candidates fail.
    from _diverging import DivergingMLP
    from sklearn.exceptions import FitFailedWarning

    X, y = iris
    pipe = _pipe(3, module=DivergingMLP, module__nan_from=7)
    grid = {"nt__net__max_epochs": EPOCHS, "lr__C": [0.1, 1.0]}
    with pytest.warns(FitFailedWarning, match="(?s)12 fits failed.*diverged at epoch 4"):
        ours = ChainSearchCV(pipe, grid, cv=CV).fit(X, y)
    n_ours = len(trainings)
    with pytest.warns(FitFailedWarning):
        ref = GridSearchCV(pipe, grid, cv=CV).fit(X, y)
    assert_same_search(ours, ref)
    scores = ours.cv_results_["mean_test_score"]
    short = np.asarray(ours.cv_results_["param_nt__net__max_epochs"]) == 2
    assert np.isfinite(scores[short]).all() and np.isnan(scores[~short]).all()
    # per fold: the shared 6-epoch training, then the 2-epoch length alone;
    # then the refit of the best (2 epochs)
    assert sorted(trainings[:n_ours]) == sorted([6, 2] * 3 + [2])
