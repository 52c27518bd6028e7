"""
==========================================
Your own models in ``skchain bench``
==========================================

A models file for ``skchain bench --models``: it defines ``models()``, which
returns a dict mapping a name to an *unfitted* scikit-learn estimator. Every
model is cross-validated on the same folds as the bundled ones (or alone, with
``--only``). A model that contains a skchain estimator counts as a chain; any
other model is a baseline, and each chain is judged against the best baseline.

The models get the rows as ``skchain bench`` holds them: for ``--data
table.csv``, a pandas DataFrame of every column but the target, so each model
does its own preprocessing (here: numeric columns scaled, string columns
one-hot encoded). Run it on a classification table::

    skchain bench --data table.csv --target label --models examples/bench_models.py

This file is shown in the gallery, not run there; the test suite runs it.
"""

import torch
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from skorch import NeuralNetClassifier
from torch import nn

from skchain import NeuralTransformer


class MLP(nn.Module):
    # LazyLinear: the width of the preprocessed table is known only in fit.
    def __init__(self, hidden=32, n_out=2):
        super().__init__()
        self.body = nn.Sequential(nn.LazyLinear(hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.head(self.body(x))


def preprocessing():
    # Dense output: a net takes a dense float matrix.
    return make_column_transformer(
        (
            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
            make_column_selector(dtype_include="number"),
        ),
        (
            make_pipeline(
                SimpleImputer(strategy="most_frequent"),
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
            ),
            make_column_selector(dtype_exclude="number"),  # strings, categories
        ),
        sparse_threshold=0.0,
    )


def models():
    net = NeuralNetClassifier(
        MLP,
        module__n_out=4,  # the number of classes of the table's target
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=0.01,
        max_epochs=30,
        train_split=None,
        verbose=0,
    )
    return {
        # A chain: out-of-fold probabilities of the net -> logistic regression.
        "my net -> logreg": make_pipeline(
            preprocessing(),
            NeuralTransformer(net, output="proba", cv=3, random_state=0),
            LogisticRegression(max_iter=1000),
        ),
        # A baseline: no skchain estimator inside.
        "my random forest": make_pipeline(
            preprocessing(), RandomForestClassifier(n_estimators=100, random_state=0)
        ),
    }
