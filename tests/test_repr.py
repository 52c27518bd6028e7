import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from torch import nn

import skchain
from skchain import (
    ChainRandomizedSearchCV,
    ChainSearchCV,
    MergedHeadsClassifier,
    ModuleClassifier,
    NeuralTransformer,
    OutputEnsembleClassifier,
    OutputEnsembleRegressor,
    TextEmbedder,
)

ESTIMATORS = [
    NeuralTransformer(nn.Linear(4, 2)),
    ModuleClassifier(nn.Linear(4, 2), [0, 1]),
    OutputEnsembleClassifier([("a", LogisticRegression())]),
    OutputEnsembleRegressor([("a", LogisticRegression())]),
    MergedHeadsClassifier(nn.Identity(), [("a", nn.Linear(4, 2), [0, 1])]),
    TextEmbedder(),
    ChainSearchCV(make_pipeline(LogisticRegression()), {"logisticregression__C": [1]}),
    ChainRandomizedSearchCV(make_pipeline(LogisticRegression()), {"logisticregression__C": [1]}),
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_html_repr_links_to_the_api_page(estimator):
    name = type(estimator).__name__
    assert name in skchain.__all__
    url = estimator._get_doc_link()
    assert url.endswith(f"/generated/skchain.{name}.html")
    assert url in estimator._repr_html_()


def test_scikit_learn_steps_keep_their_own_links():
    pipe = make_pipeline(NeuralTransformer(nn.Linear(4, 2)), LogisticRegression())
    html = pipe._repr_html_()
    assert "skchain.NeuralTransformer.html" in html
    assert "sklearn.linear_model.LogisticRegression.html" in html
    assert np.char.count(html, "skchain.readthedocs.io") >= 1
