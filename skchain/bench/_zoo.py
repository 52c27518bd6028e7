"""The default models of ``skchain bench`` and its tabular datasets.

Chained models -- a net's outputs feeding a classic estimator -- next to the
plain baselines a newcomer would try first, built for one of scikit-learn's
bundled datasets. Every net is a small skorch MLP trained inside the model, so
cross validation retrains it on each outer training fold and the scores are
honest. Everything is seeded from one ``seed``.

``quick=True`` shrinks all of it (a few hundred rows, 2-3 epochs, 2 inner
folds) so that a whole run takes seconds: it exercises every model, it does not
measure them.
"""

import math
from typing import NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    load_wine,
)
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    VotingClassifier,
    VotingRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR
from sklearn.utils.validation import check_is_fitted

from .._neural import NeuralTransformer
from .._testing import make_classifier_net, make_regressor_net
from ..ensemble import ModuleClassifier

__all__ = ["DATASETS", "Entry", "load_dataset", "default_models"]

# name -> (loader, task)
DATASETS = {
    "digits": (load_digits, "classification"),
    "iris": (load_iris, "classification"),
    "wine": (load_wine, "classification"),
    "breast_cancer": (load_breast_cancer, "classification"),
    "diabetes": (load_diabetes, "regression"),
}

_QUICK_ROWS = 300


class Entry(NamedTuple):
    """One model of the zoo: ``kind`` is ``"chain"`` or ``"baseline"``."""

    kind: str
    estimator: object
    description: str


def load_dataset(name, *, quick=False, seed=0):
    """``X, y, task`` of a bundled dataset; ``quick`` keeps a stratified sample."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {sorted(DATASETS)}.")
    loader, task = DATASETS[name]
    X, y = loader(return_X_y=True)
    if quick and len(X) > _QUICK_ROWS:
        stratify = y if task == "classification" else None
        X, _, y, _ = train_test_split(
            X, y, train_size=_QUICK_ROWS, stratify=stratify, random_state=seed
        )
    return X, y, task


def _epochs(n_train, quick):
    # About the same number of optimiser steps whatever the dataset's size:
    # 150-row iris needs many more epochs than 1,800-row digits.
    if quick:
        return 3
    return int(min(100, max(20, math.ceil(30_000 / n_train))))


# -- the net alone ---------------------------------------------------------------


class _NetAlone(BaseEstimator):
    """A net predicting on its own, trained and run by skchain's public estimators.

    skorch nets are estimators already, but they expect float32 inputs and
    (for regression) a 2-D float32 target; :class:`~skchain.NeuralTransformer`
    does those conversions and the seeding, so the net alone is trained
    exactly as the nets inside the chains are.
    """

    def __init__(self, net, random_state=None):
        self.net = net
        self.random_state = random_state


class _NetClassifier(ClassifierMixin, _NetAlone):
    """Trained by ``NeuralTransformer``, predicting through ``ModuleClassifier``."""

    def fit(self, X, y):
        transformer = NeuralTransformer(
            self.net, output="logits", cv=None, random_state=self.random_state
        ).fit(X, y)
        # The trained module as a classifier: the one public path from a
        # module's logits to probabilities.
        self.classifier_ = ModuleClassifier(transformer.module_, classes=transformer.classes_)
        self.classifier_.fit(X, y)
        self.classes_ = self.classifier_.classes_
        self.n_features_in_ = self.classifier_.n_features_in_
        return self

    def predict_proba(self, X):
        check_is_fitted(self)
        return self.classifier_.predict_proba(X)

    def predict(self, X):
        check_is_fitted(self)
        return self.classifier_.predict(X)


class _NetRegressor(RegressorMixin, _NetAlone):
    def fit(self, X, y):
        self.transformer_ = NeuralTransformer(
            self.net, output="predict", cv=None, random_state=self.random_state
        ).fit(X, y)
        self.n_features_in_ = self.transformer_.n_features_in_
        return self

    def predict(self, X):
        check_is_fitted(self)
        return self.transformer_.transform(X)[:, 0].astype(np.float64)


# -- the zoo ----------------------------------------------------------------------


def default_models(task, *, n_classes=None, n_train, quick=False, seed=0, preprocess=None):
    """The models ``skchain bench`` compares, as ``{name: Entry}``.

    Parameters
    ----------
    task : {"classification", "regression"}
    n_classes : int
        Number of classes (classification only): the nets' output width.
    n_train : int
        Rows in a training fold; sets the nets' epochs.
    quick : bool
        Tiny nets, few epochs, 2 inner folds.
    seed : int
        Seeds the nets (weights, batch order), the inner folds, boosting.
    preprocess : transformer or None
        First step of every model (cloned), in place of the ``StandardScaler``
        that the bundled numeric datasets get: the column preprocessing of a
        user's table.
    """
    epochs = _epochs(n_train, quick)
    hidden = 16 if quick else 64
    lr = 0.05 if quick else 0.01  # quick: a few epochs must still learn something
    batch_size = 32 if quick else 64
    inner_cv = 2 if quick else 5
    n_members = 2 if quick else 3
    pca = PCA(n_components=min(16, hidden), whiten=True, random_state=seed)
    classify = task == "classification"

    def first():
        return StandardScaler() if preprocess is None else clone(preprocess)

    def net(member=0):
        width = hidden // 2 if member % 2 else hidden  # vary the ensemble members
        if classify:
            return make_classifier_net(
                n_classes=n_classes, hidden=width, max_epochs=epochs, lr=lr, batch_size=batch_size
            )
        return make_regressor_net(hidden=width, max_epochs=epochs, lr=lr / 3, batch_size=batch_size)

    def nt(output, cv="auto"):
        return NeuralTransformer(net(), output=output, cv=cv, random_state=seed)

    def inner_folds():
        splitter = StratifiedKFold if classify else KFold
        return splitter(inner_cv, shuffle=True, random_state=seed)

    if classify:
        alone, linear, kernel = _NetClassifier, LogisticRegression(max_iter=2000), SVC()
        boosting = HistGradientBoostingClassifier(max_iter=20 if quick else 100, random_state=seed)
        out, word, final = "proba", "probabilities", "logreg"
        names = {"linear": "logistic regression", "kernel": "SVC"}
    else:
        alone, linear, kernel = _NetRegressor, Ridge(), SVR()
        boosting = HistGradientBoostingRegressor(max_iter=20 if quick else 100, random_state=seed)
        out, word, final = "predict", "predictions", "ridge"
        names = {"linear": "ridge", "kernel": "SVR"}
    members = [
        (f"net{i}", make_pipeline(first(), alone(net(i), random_state=seed + i)))
        for i in range(n_members)
    ]
    ensemble = VotingClassifier(members, voting="soft") if classify else VotingRegressor(members)
    label = "proba" if classify else "prediction"

    entries = {
        f"net {label} -> {final}": Entry(
            "chain",
            make_pipeline(first(), nt(out, inner_folds()), clone(linear)),
            f"out-of-fold net {word} ({inner_cv} inner folds) -> {names['linear']}",
        ),
        f"net embedding -> PCA -> {names['kernel']}": Entry(
            "chain",
            make_pipeline(first(), nt("embedding"), pca, kernel),
            f"net embedding (last hidden layer) -> whitened PCA -> RBF {names['kernel']}",
        ),
        f"stack: net {label} + features -> {final}": Entry(
            "chain",
            make_pipeline(
                first(),
                FeatureUnion([("net", nt(out, inner_folds())), ("features", "passthrough")]),
                clone(linear),
            ),
            f"out-of-fold net {word} next to the scaled features -> {names['linear']}",
        ),
        f"ensemble of {n_members} nets": Entry(
            "chain",
            ensemble,
            f"average of the {word} of {n_members} nets (different widths and seeds)",
        ),
        names["linear"]: Entry(
            "baseline",
            make_pipeline(first(), clone(linear)),
            f"{names['linear']} on the scaled features",
        ),
        "hist gradient boosting": Entry(
            "baseline",
            boosting if preprocess is None else make_pipeline(first(), boosting),
            "HistGradientBoosting on the raw features"
            if preprocess is None
            else "HistGradientBoosting on the preprocessed columns",
        ),
        "net alone": Entry(
            "baseline",
            make_pipeline(first(), alone(net(), random_state=seed)),
            f"the net's own {'predicted class' if classify else 'prediction'}",
        ),
    }
    if not classify:
        # Nets train badly on targets in the hundreds: every regression model
        # (baselines too, to keep it fair) sees a standardised target.
        entries = {
            name: entry._replace(
                estimator=TransformedTargetRegressor(entry.estimator, transformer=StandardScaler())
            )
            for name, entry in entries.items()
        }
    return entries
