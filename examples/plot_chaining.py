"""
=====================================================
One net's outputs as features on another dataset
=====================================================

A net trained on *dataset 1* (here: recognising the ten digits) gives outputs
-- a probability vector, an embedding -- that become features of a second
model trained on *dataset 2*, which has a different target (here: is the digit
odd?) and only a few labelled rows.

We compare, with cross-validation on dataset 2:

* the plain baseline: logistic regression on the pixels;
* the pretrained net's probabilities, used as they are
  (:class:`skchain.NeuralTransformer` on a plain module never trains it),
  scaled and fed to logistic regression next to the pixels;
* a net trained *inside* the pipeline on dataset 2, with in-sample outputs
  (``cv=None``) and with out-of-fold outputs (``cv=5``, the default).
"""

# %%
# Two datasets
# ------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline, make_union
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, StandardScaler
from skorch import NeuralNetClassifier
from torch import nn

from skchain import NeuralTransformer


def make_classifier_net(n_classes, hidden, max_epochs, lr):
    """A small skorch MLP; ``LazyLinear`` takes any number of input features."""
    module = nn.Sequential(
        nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )
    return NeuralNetClassifier(
        module, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=lr,
        max_epochs=max_epochs, batch_size=64, train_split=None, verbose=0,
    )


torch.manual_seed(0)
X, digit = load_digits(return_X_y=True)
X = X / 16.0
X1, y1 = X[:1200], digit[:1200]  # dataset 1: ten classes, many labels
X2, y2 = X[1200:1400], digit[1200:1400] % 2  # dataset 2: odd or even, 200 labels

# %%
# Model 1, trained once on dataset 1
# ----------------------------------
# Any fitted torch module works; here a small MLP trained with skorch. From
# now on it is "pretrained": we only use its module.
net1 = make_classifier_net(n_classes=10, hidden=64, max_epochs=30, lr=0.01)
net1.fit(X1.astype(np.float32), y1)
pretrained = net1.module_
weights_before = {k: v.clone() for k, v in pretrained.state_dict().items()}

# %%
# Model 2 on dataset 2
# --------------------
# The pretrained net's ten probabilities are min-max scaled and joined to the
# pixels. ``make_union(..., FunctionTransformer())`` passes the pixels through.
outer = StratifiedKFold(5, shuffle=True, random_state=0)


def logreg():
    return LogisticRegression(max_iter=2000)


def trained_in_pipeline(cv):
    net = make_classifier_net(n_classes=2, hidden=64, max_epochs=30, lr=0.01)
    nn_step = NeuralTransformer(net, output="proba", cv=cv, random_state=0)
    return make_pipeline(StandardScaler(), make_union(nn_step, FunctionTransformer()), logreg())


models = {
    "pixels only\n(baseline)": make_pipeline(StandardScaler(), logreg()),
    "pretrained net\nprobabilities": make_pipeline(
        make_union(
            make_pipeline(NeuralTransformer(pretrained, output="proba"), MinMaxScaler()),
            FunctionTransformer(),
        ),
        logreg(),
    ),
    "net trained here,\nin-sample (cv=None)": trained_in_pipeline(cv=None),
    "net trained here,\nout-of-fold (cv=5)": trained_in_pipeline(cv=5),
}
scores = {name: cross_val_score(model, X2, y2, cv=outer) for name, model in models.items()}
for name, s in scores.items():
    print(f"{name.replace(chr(10), ' '):45s} {s.mean():.3f} ± {s.std():.3f}")

# %%
# The pretrained weights were never touched
# -----------------------------------------
after = pretrained.state_dict()
assert all(torch.equal(weights_before[k], after[k]) for k in after)

# %%
# Cross-validated accuracy on dataset 2
# -------------------------------------
fig, ax = plt.subplots(figsize=(7, 3.5))
names = list(scores)
means = [scores[n].mean() for n in names]
stds = [scores[n].std() for n in names]
ax.barh(names, means, xerr=stds, color=["grey", "C0", "C3", "C2"])
ax.set_xlim(min(means) - 0.1, 1.0)
ax.set_xlabel("accuracy (5-fold CV on dataset 2)")
ax.invert_yaxis()
fig.tight_layout()
