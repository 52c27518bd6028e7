"""
=========================================================
Does the chain pay off? Comparing models with ``compare``
=========================================================

:func:`skchain.compare` cross-validates several models on the same folds and
returns one table: mean and spread of each score, fit and predict times, the
best ranked first. Here it answers the question skchain users bring -- does
feeding a net's outputs to a classic estimator beat the classic estimator
alone? -- on the breast cancer dataset, and shows that a model that fails does not take
the others' results down with it.

``skchain bench`` runs such comparisons from the command line, on bundled
scenarios or on your own table and models file, with a verdict per chain; this
is the version inside Python.
"""

# %%
# The models: chains and a plain baseline
# ---------------------------------------
# Each net is a small skorch MLP trained inside the pipeline, so every outer
# fold retrains it. ``NeuralTransformer`` hands on out-of-fold probabilities
# when it is trained inside a pipeline (``cv="auto"``), so the step after it
# does not learn from over-confident in-sample outputs.
import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from skorch import NeuralNetClassifier
from torch import nn

from skchain import NeuralTransformer, compare

torch.set_num_threads(1)  # tiny nets: more threads only wait on each other
X, y = load_breast_cancer(return_X_y=True)


class MLP(nn.Module):
    def __init__(self, hidden=32, n_out=2):
        super().__init__()
        self.body = nn.Sequential(
            nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.head(self.body(x))


def net(**module_params):
    return NeuralNetClassifier(
        MLP,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=0.01,
        max_epochs=20,
        batch_size=64,
        train_split=None,
        verbose=0,
        **{f"module__{k}": v for k, v in module_params.items()},
    )


def nt(output="proba", **module_params):
    # 3 inner folds for the out-of-fold probabilities; embeddings are not
    # cross-fitted (cv="auto" knows)
    cv = 3 if output == "proba" else "auto"
    return NeuralTransformer(net(**module_params), output=output, cv=cv, random_state=0)


models = {
    "logistic regression": make_pipeline(StandardScaler(), LogisticRegression()),
    "net proba -> logreg": make_pipeline(StandardScaler(), nt(), LogisticRegression()),
    "net embedding -> PCA -> SVC": make_pipeline(StandardScaler(), nt("embedding"), PCA(8), SVC()),
    "stack: net proba + features -> logreg": make_pipeline(
        StandardScaler(),
        FeatureUnion([("net", nt()), ("features", "passthrough")]),
        LogisticRegression(),
    ),
    # A mistake users make: one output for two classes (a BCE-style head
    # under a cross-entropy loss).
    "misconfigured net": make_pipeline(StandardScaler(), nt(n_out=1), LogisticRegression()),
}

# %%
# Cross-validate them all on the same folds
# -----------------------------------------
# Progress lines (model, fold, score) go to stderr as the folds finish. The
# misconfigured model fails on every fold; ``compare`` records why, warns, and
# keeps the other results.
import warnings  # noqa: E402

cv = StratifiedKFold(5, shuffle=True, random_state=0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    results, folds = compare(
        models, X, y, cv=cv, scoring=["accuracy", "roc_auc"], return_folds=True
    )
print(caught[0].message)
print(
    results[["accuracy_mean", "accuracy_std", "roc_auc_mean", "fit_time", "rank"]]
    .round(3)
    .to_string()
)
print(results.loc["misconfigured net", "error"])

# %%
# Read the differences fold by fold
# ---------------------------------
# Every model saw the same splits, so the fairest comparison with the baseline
# is per fold: the differences are paired, and the fold-to-fold spread that
# every model shares cancels out. A chain that wins on average but loses on
# half of the folds has not shown much.
scored = results[results["n_failed"] == 0].index
per_fold = folds.pivot(index="fold", columns="model", values="test_accuracy")[scored]

fig, (left, right) = plt.subplots(
    1, 2, figsize=(10, 3.6), width_ratios=[3, 2], layout="constrained"
)
means, stds = results.loc[scored, "accuracy_mean"], results.loc[scored, "accuracy_std"]
left.barh(
    scored,
    means,
    xerr=stds,
    capsize=3,
    color=["C7" if name == "logistic regression" else "C0" for name in scored],
)
# The whole accuracy range: a zoom on the top hundredths would make fold noise
# look like a difference.
left.set_xlim(0.0, 1.0)
left.invert_yaxis()
left.set_xlabel("accuracy, mean ± std over 5 folds")

chains = [name for name in scored if name != "logistic regression"]
diff = per_fold[chains].sub(per_fold["logistic regression"], axis=0)
for i, name in enumerate(chains):
    rows = i + np.linspace(-0.15, 0.15, len(diff))  # one dot per fold, spread apart
    right.scatter(diff[name], rows, color="C0")
right.axvline(0, color="C7")
reach = max(0.05, 1.1 * float(np.abs(diff.to_numpy()).max()))
right.set_xlim(-reach, reach)  # centred on zero, never a zoom on a hundredth
right.set_yticks(range(len(chains)), [name.split(" -> ")[0] for name in chains])
right.invert_yaxis()
right.set_xlabel("accuracy minus the baseline's, per fold")

# %%
# Is the difference beyond the noise?
# -----------------------------------
# The folds' training sets overlap, so their scores are not independent and a
# plain paired t-test over them finds differences that are noise. ``skchain
# bench`` runs the corrected resampled t-test of Nadeau and Bengio for each
# chain against the best baseline and prints one verdict per chain -- better,
# worse, or within noise -- for its bundled scenarios and for your own table
# and models::
#
#     skchain bench --data table.csv --target label --models my_models.py
#
# (see :ref:`benchmarking`).
