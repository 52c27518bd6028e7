"""A grid over training length: ChainSearchCV trains once per fold for the longest.

Digits; ``StandardScaler -> NeuralTransformer(skorch MLP 64-h-64-10, output
"embedding", random_state=0) -> LogisticRegression``; grid of ``max_epochs``
in {10, 20, 40} x 2 hidden sizes h x 2 ``C`` (12 candidates), ``cv=3``, refit
on all data included. Timed and counted (net trainings, by counting skorch's
``initialize`` in this process; every method runs in it):

- ``GridSearchCV``: every candidate retrains the net on every fold (timed once);
- dask-ml's ``GridSearchCV`` (synchronous scheduler): merges shared pipeline
  prefixes, so the two ``C`` share a net, but each length trains its own;
- a hand-written loop that does the same sharing as ChainSearchCV: per fold
  and hidden size, one training for 40 epochs with a skorch callback that
  keeps the weights at epochs 10 and 20, then the embedding of each length
  from those weights (the reference for speed);
- ``ChainSearchCV``.

Goals (issue 19): ChainSearchCV >= 1.5x the speed of dask-ml's GridSearchCV
(the ideal is about 1.6x: 40 of the 10 + 20 + 40 epochs are trained), and
>= 0.9x the speed of the hand-written loop. All methods must give
GridSearchCV's ``mean_test_score`` exactly (the nets are seeded).

Run: ``python benchmarks/bench_search_epochs.py [--quick] [--rounds N]``.
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, ParameterGrid, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from threadpoolctl import threadpool_limits
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, write_section  # noqa: E402

from skchain import ChainSearchCV, NeuralTransformer  # noqa: E402

try:
    from dask_ml.model_selection import GridSearchCV as DaskGridSearchCV
except ImportError:  # optional reference (extra "bench")
    DaskGridSearchCV = None

N_TRAININGS = [0]


class DigitsMLP(nn.Module):
    """64 -> hidden -> 64 -> 10; the embedding is the 64 units before the last layer."""

    def __init__(self, hidden=128):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x):
        return self.layers(x)


class CountingNet(NeuralNetClassifier):
    """Counts trainings: each starts with ``initialize``. Not a callback, since
    a callback of the user's turns ChainSearchCV's epoch sharing off."""

    def initialize(self):
        N_TRAININGS[0] += 1
        return super().initialize()


# epoch -> module state_dict, filled by Snapshots during the hand-written loop
SNAPSHOTS = {}


class Snapshots(Callback):
    """Keep the module's weights at the end of the given epochs (hand-written loop)."""

    def __init__(self, epochs=()):
        self.epochs = epochs

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        if epoch in self.epochs:
            SNAPSHOTS[epoch] = {k: v.detach().clone() for k, v in net.module_.state_dict().items()}


def make_pipe(callbacks=None):
    net = CountingNet(
        DigitsMLP,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        max_epochs=10,
        lr=0.003,
        batch_size=64,
        train_split=None,
        verbose=0,
        callbacks=callbacks,
    )
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("nn", NeuralTransformer(net, output="embedding", random_state=0)),
            # sklearn's default max_iter: the nets, not lbfgs, should dominate
            ("clf", LogisticRegression()),
        ]
    )


def make_grid(epochs):
    return {
        "nn__net__max_epochs": list(epochs),
        "nn__net__module__hidden": [64, 128],
        "clf__C": [0.1, 1.0],
    }


def hand_written(X, y, cv, grid):
    """Per fold and hidden size, one training for the longest length; the
    shorter lengths from weights kept on the way. Returns mean test scores in
    GridSearchCV's candidate order, after refitting the best on all data."""
    lengths = sorted(grid["nn__net__max_epochs"])
    longest = lengths[-1]
    candidates = list(ParameterGrid(grid))
    scores = {i: [] for i in range(len(candidates))}
    pipe = make_pipe(callbacks=[("snap", Snapshots(tuple(lengths[:-1])))])
    for train, test in cv.split(X, y):
        for hidden in grid["nn__net__module__hidden"]:
            SNAPSHOTS.clear()
            prefix = clone(Pipeline(pipe.steps[:2])).set_params(
                nn__net__max_epochs=longest, nn__net__module__hidden=hidden
            )
            Z_train = prefix.fit_transform(X[train], y[train])
            Z_test = prefix.transform(X[test])
            module = prefix.named_steps["nn"].module_
            for epochs in lengths[::-1]:
                if epochs != longest:
                    module.load_state_dict(SNAPSHOTS[epochs])
                    Z_train, Z_test = prefix.transform(X[train]), prefix.transform(X[test])
                for c in grid["clf__C"]:
                    clf = clone(pipe.named_steps["clf"]).set_params(C=c).fit(Z_train, y[train])
                    params = {
                        "nn__net__max_epochs": epochs,
                        "nn__net__module__hidden": hidden,
                        "clf__C": c,
                    }
                    scores[candidates.index(params)].append(clf.score(Z_test, y[test]))
    means = np.array([np.mean(scores[i]) for i in range(len(candidates))])
    best = candidates[int(np.argmax(means))]
    clone(make_pipe()).set_params(**best).fit(X, y)
    return means


def run(method, X, y, grid):
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    N_TRAININGS[0] = 0
    start = time.perf_counter()
    if method == "GridSearchCV":
        search = GridSearchCV(make_pipe(), grid, cv=cv)
        means = search.fit(X, y).cv_results_["mean_test_score"]
    elif method == "dask-ml GridSearchCV, sync scheduler":
        search = DaskGridSearchCV(make_pipe(), grid, cv=cv, scheduler="sync", n_jobs=1)
        means = search.fit(X, y).cv_results_["mean_test_score"]
    elif method == "hand-written loop, same sharing":
        means = hand_written(X, y, cv, grid)
    else:
        search = ChainSearchCV(make_pipe(), grid, cv=cv)
        means = search.fit(X, y).cv_results_["mean_test_score"]
    return time.perf_counter() - start, N_TRAININGS[0], means


def main(argv=None):
    # lbfgs stops at 100 iterations on some embeddings, alike in every method
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    args = parser.parse_args(argv)
    # One torch and one BLAS thread: the small net gains nothing from more,
    # and on a busy 2-core machine extra threads make timings erratic.
    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    lengths, rounds = ((1, 2, 4), 1) if args.quick else ((10, 20, 40), 3)
    if args.rounds is not None:
        rounds = args.rounds
    grid = make_grid(lengths)
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    methods = ["hand-written loop, same sharing", "ChainSearchCV"]
    if DaskGridSearchCV is not None:
        methods.append("dask-ml GridSearchCV, sync scheduler")
    else:
        print("dask-ml is not installed: its rows are left out (pip install dask-ml)")
    times = {m: [] for m in methods}
    counts, scores = {}, {}
    load_start = os.getloadavg()[0]

    def timed(method):
        seconds, counts[method], scores[method] = run(method, X, y, grid)
        print(f"{method}: {seconds:.2f} s, {counts[method]} net trainings", flush=True)
        return seconds

    for round_id in range(rounds):
        # Interleaved rounds, order reversed every other round, so drift on a
        # shared machine hits all methods alike.
        for method in methods if round_id % 2 == 0 else methods[::-1]:
            times[method].append(timed(method))
    # Plain GridSearchCV trains 3 x 12 + 1 nets: timed once, after the rounds.
    times["GridSearchCV"] = [timed("GridSearchCV")]
    load_end = os.getloadavg()[0]

    hand = times["hand-written loop, same sharing"]
    chain = times["ChainSearchCV"]

    def ratio(reference, other):
        """Median over rounds of reference / other (above 1: other is faster)."""
        if len(reference) == 1:
            return float(reference[0] / np.median(other))
        return float(np.median([r / o for r, o in zip(reference, other, strict=True)]))

    table_methods = ["GridSearchCV", *methods]
    rows = [
        {
            "method": m,
            "median s": f"{np.median(times[m]):.2f}",
            "net trainings": counts[m],
            "ChainSearchCV speed vs this (median of rounds)": f"{ratio(times[m], chain):.2f}x",
            "max abs diff of mean_test_score vs GridSearchCV": (
                f"{np.max(np.abs(scores[m] - scores['GridSearchCV'])):.1e}"
            ),
        }
        for m in table_methods
    ]
    goals = [
        ("ChainSearchCV >= 0.9x the speed of the hand-written loop", ratio(hand, chain) >= 0.9),
    ]
    if DaskGridSearchCV is not None:
        dask = times["dask-ml GridSearchCV, sync scheduler"]
        goals.append(("ChainSearchCV >= 1.5x the speed of dask-ml", ratio(dask, chain) >= 1.5))
    goals.append(
        (
            "ChainSearchCV's mean_test_score exactly GridSearchCV's",
            np.array_equal(scores["ChainSearchCV"], scores["GridSearchCV"]),
        )
    )
    body = "\n\n".join(
        [
            "Digits (1797 x 64), StandardScaler -> NeuralTransformer(skorch MLP 64-h-64-10, "
            'Adam, batch 64, `output="embedding"`, `random_state=0`) -> LogisticRegression; '
            f"`max_epochs` in {list(lengths)} x h in [64, 128] x C in [0.1, 1] = 12 "
            f"candidates, 3-fold, refit included. {rounds} interleaved rounds; plain "
            "GridSearchCV once, after them. One process, one torch and one BLAS thread. "
            "Net trainings counted by skorch `initialize` calls. "
            f"1-minute load average {load_start:.1f} at the start, {load_end:.1f} at the "
            "end (2 cores shared with other jobs).",
            markdown_table(rows, list(rows[0])),
            "\n".join(f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in goals),
        ]
    )
    if args.quick:
        print(body)
    else:
        write_section("bench_search_epochs", body)


if __name__ == "__main__":
    main()
