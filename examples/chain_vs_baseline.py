"""
Chained net vs plain baseline
=============================

A small MLP trained inside a pipeline turns digits into a 32-number embedding;
PCA and a logistic regression take it from there. Cross validation compares the
chain with a logistic regression on the raw pixels.
"""

import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skchain import NeuralTransformer
from skchain._testing import make_classifier_net

torch.set_num_threads(1)
X, y = load_digits(return_X_y=True)

net = make_classifier_net(n_classes=10, hidden=32, max_epochs=20, lr=0.01)
chain = make_pipeline(
    StandardScaler(),
    NeuralTransformer(net, output="embedding", random_state=0),
    PCA(n_components=16),
    LogisticRegression(max_iter=1000),
)
baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))

for name, model in [("net embedding -> PCA -> logreg", chain), ("logreg", baseline)]:
    scores = cross_val_score(model, X, y, cv=5)
    print(f"{name:32s} accuracy {scores.mean():.3f} +/- {scores.std():.3f}")
