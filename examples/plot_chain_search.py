"""
=====================================================
Grid search over a chain without retraining the net
=====================================================

A grid over ``scaler -> net -> PCA -> logistic regression`` mostly varies the
cheap steps after the net, yet :class:`~sklearn.model_selection.GridSearchCV`
retrains the net for every candidate on every fold.
:class:`skchain.ChainSearchCV` fits each distinct pipeline prefix once per
fold and reuses its outputs; the scores are the same.
"""

# %%
# The chain and the grid
# ----------------------
# The net is seeded (``random_state=0``), so every fit with the same
# parameters trains the same net, and ``cv=None`` trains one net per fit (no
# cross fitting) to keep the example short.
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from threadpoolctl import threadpool_limits
from torch import nn

from skchain import ChainSearchCV, NeuralTransformer

# Models this small run fastest on one thread; more torch or BLAS threads
# only fight over the cores (badly so on a busy machine).
torch.set_num_threads(1)
threadpool_limits(limits=1)
torch.manual_seed(0)
X, y = load_digits(return_X_y=True)
X = X.astype(np.float32)


class MLP(nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.head(self.body(x))


class CountFits(Callback):
    """Count how many times a net is trained (this example runs in one process)."""

    n_fits = 0

    def on_train_begin(self, net, **kwargs):
        type(self).n_fits += 1


net = NeuralNetClassifier(
    MLP,
    criterion=nn.CrossEntropyLoss,
    optimizer=torch.optim.Adam,
    max_epochs=10,
    batch_size=64,
    train_split=None,
    verbose=0,
    callbacks=[("count", CountFits())],
)
pipe = Pipeline(
    [
        ("scale", StandardScaler()),
        ("nn", NeuralTransformer(net, random_state=0, cv=None)),
        ("pca", PCA(random_state=0)),
        ("clf", LogisticRegression(max_iter=1000)),
    ]
)
grid = {
    "nn__net__lr": [0.003, 0.01],
    "pca__n_components": [4, 6, 8],
    "clf__C": [0.1, 1.0, 10.0],
}
cv = StratifiedKFold(3, shuffle=True, random_state=0)

# %%
# The same search, twice
# ----------------------
results = {}
for name, cls in [("GridSearchCV", GridSearchCV), ("ChainSearchCV", ChainSearchCV)]:
    CountFits.n_fits = 0
    start = time.perf_counter()
    search = cls(pipe, grid, cv=cv).fit(X, y)
    results[name] = {
        "seconds": time.perf_counter() - start,
        "nets": CountFits.n_fits,
        "search": search,
    }
    print(
        f"{name}: {results[name]['seconds']:.1f} s, {CountFits.n_fits} nets trained, "
        f"best {search.best_params_}"
    )

plain = results["GridSearchCV"]["search"].cv_results_
chain = results["ChainSearchCV"]["search"].cv_results_
print("same mean_test_score:", np.array_equal(plain["mean_test_score"], chain["mean_test_score"]))
print("same ranks:", np.array_equal(plain["rank_test_score"], chain["rank_test_score"]))
print("steps fitted by ChainSearchCV:", results["ChainSearchCV"]["search"].prefix_fits_)

# %%
# Where the time goes
# -------------------
# Left: wall time of each search (net trainings on the bars, refit included).
# Right: ``mean_fit_time`` per candidate. ChainSearchCV divides a shared
# step's fit time evenly between the candidates that share it, so its fit
# times add up to the time it really spent.
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
names = list(results)
bars = ax1.bar(names, [results[n]["seconds"] for n in names], color=["tab:gray", "tab:blue"])
for bar, n in zip(bars, names, strict=True):
    ax1.annotate(
        f"{results[n]['nets']} nets",
        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
        ha="center",
        va="bottom",
    )
ax1.set_ylabel("seconds")
ax1.set_title("18 candidates x 3 folds")
index = np.arange(len(plain["params"]))
ax2.bar(index - 0.2, plain["mean_fit_time"], width=0.4, label="GridSearchCV", color="tab:gray")
ax2.bar(index + 0.2, chain["mean_fit_time"], width=0.4, label="ChainSearchCV", color="tab:blue")
ax2.set_xlabel("candidate")
ax2.set_ylabel("mean fit time per fold (s)")
ax2.legend()
fig.tight_layout()
