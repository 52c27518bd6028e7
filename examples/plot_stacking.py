"""
========================================================
Merging models that see different features (stacking)
========================================================

Model A was built on features A and B, model B on features C and D. We want a
model C over all of them. The practical answer is stacking: route each feature
group to its own net, feed both nets' **out-of-fold** outputs -- and the
original features, if they help ("passthrough") -- to a final estimator.

With :class:`skchain.NeuralTransformer` this is plain scikit-learn
composition: a :class:`~sklearn.compose.ColumnTransformer` routes pandas
columns by name, each net cross-fits by default (``cv="auto"``), and the whole
stack is one estimator for :func:`~sklearn.model_selection.cross_val_score`
and :class:`~sklearn.model_selection.GridSearchCV`.
"""

# %%
# Two column groups of one table
# ------------------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier
from torch import nn

from skchain import NeuralTransformer

torch.manual_seed(0)
data = load_breast_cancer(as_frame=True)
X, y = data.data, data.target
group_a = [c for c in X.columns if c.startswith("mean")]  # seen by model A
group_b = [c for c in X.columns if not c.startswith("mean")]  # seen by model B
print(len(group_a), "columns for model A,", len(group_b), "for model B")


class MLP(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.body = nn.Sequential(nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, x):
        return self.body(x)


def net():
    return NeuralNetClassifier(
        MLP, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=0.01,
        max_epochs=15, batch_size=64, train_split=None, verbose=0,
    )


def branch():
    # Each branch scales its columns and turns them into out-of-fold class
    # probabilities (cv="auto" cross-fits a net trained on a target).
    return make_pipeline(StandardScaler(), NeuralTransformer(net(), random_state=0))


# %%
# The stack: two nets, passthrough, final logistic regression
# -----------------------------------------------------------
stack = make_pipeline(
    ColumnTransformer([
        ("model_a", branch(), group_a),
        ("model_b", branch(), group_b),
        ("raw", StandardScaler(), group_a + group_b),  # passthrough, scaled
    ]),
    LogisticRegression(max_iter=2000),
)
stack.set_output(transform="pandas")
stack.fit(X, y)
print(stack[0].get_feature_names_out()[:6])

# %%
# Search across every part of it
# ------------------------------
# Parameters route by name, down to the nets' modules.
grid = {
    "columntransformer__model_a__neuraltransformer__net__module__hidden": [16, 64],
    "logisticregression__C": [0.1, 1.0],
}
outer = StratifiedKFold(5, shuffle=True, random_state=0)
search = GridSearchCV(stack, grid, cv=2).fit(X, y)
print("best:", search.best_params_, f"{search.best_score_:.3f}")

# %%
# Does the stack beat its parts?
# ------------------------------
models = {
    "logistic regression,\nall columns": make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000)
    ),
    "model A alone\n(group A)": make_pipeline(
        ColumnTransformer([("a", StandardScaler(), group_a)]), NeuralTransformer(net(), cv=None),
        LogisticRegression(),
    ),
    "model B alone\n(group B)": make_pipeline(
        ColumnTransformer([("b", StandardScaler(), group_b)]), NeuralTransformer(net(), cv=None),
        LogisticRegression(),
    ),
    "stack A + B\n+ passthrough": stack,
}
scores = {name: cross_val_score(m, X, y, cv=outer) for name, m in models.items()}
for name, s in scores.items():
    print(f"{name.replace(chr(10), ' '):40s} {s.mean():.3f} ± {s.std():.3f}")

fig, ax = plt.subplots(figsize=(7, 3.2))
means = np.array([s.mean() for s in scores.values()])
ax.barh(list(scores), means, xerr=[s.std() for s in scores.values()],
        color=["grey", "C0", "C1", "C2"])
ax.set_xlim(means.min() - 0.05, 1.0)
ax.set_xlabel("accuracy (5-fold CV)")
ax.invert_yaxis()
fig.tight_layout()
