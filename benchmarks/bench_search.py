"""Grid search over a whole chain: ChainSearchCV against the ways to do it by hand.

Digits; ``StandardScaler -> NeuralTransformer(skorch MLP 64-128-64-10) -> PCA ->
LogisticRegression``; grid of 2 learning rates x 3 PCA sizes x 3 ``C`` (18
candidates), ``cv=3``, refit on all data. The net is seeded
(``random_state=0``) and uses ``cv=None`` (one net per fit, no cross fitting),
so every method trains the same nets and gets the same scores. Timed and
counted (net trainings, via a skorch callback writing to a file so that worker
processes are counted too):

- ``GridSearchCV``: every candidate retrains the net on every fold;
- ``GridSearchCV`` over ``Pipeline(memory=joblib.Memory(tmpdir))``, cold cache;
- a hand-written shared-prefix loop (the reference for speed);
- ``ChainSearchCV`` at ``n_jobs=1`` and ``n_jobs=2``.

Goals: ChainSearchCV >= 0.9x the speed of the hand-written loop, faster than
the cold ``Pipeline(memory=)``, and faster at ``n_jobs=2`` than at ``n_jobs=1``.

Run: ``python benchmarks/bench_search.py [--quick]``.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from joblib import Memory
from sklearn.base import clone
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

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, write_section  # noqa: E402

from skchain import ChainSearchCV, NeuralTransformer  # noqa: E402


class DigitsMLP(nn.Module):
    """64 -> 128 -> 64 -> 10."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x):
        return self.layers(x)


class CountTraining(Callback):
    """Append one line to ``path`` per net training (works across processes)."""

    def __init__(self, path):
        self.path = path

    def on_train_begin(self, net, **kwargs):
        with open(self.path, "a") as f:
            f.write("1\n")


def count(path):
    return sum(1 for _ in open(path)) if os.path.exists(path) else 0


def make_pipe(epochs, counter_path, memory=None):
    net = NeuralNetClassifier(
        DigitsMLP,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        max_epochs=epochs,
        lr=0.01,
        batch_size=64,
        train_split=None,
        verbose=0,
        callbacks=[("count", CountTraining(counter_path))],
    )
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("nn", NeuralTransformer(net, random_state=0, cv=None)),
            ("pca", PCA(random_state=0)),
            ("clf", LogisticRegression(max_iter=1000)),
        ],
        memory=memory,
    )


GRID = {
    "nn__net__lr": [0.003, 0.01],
    "pca__n_components": [4, 6, 8],
    "clf__C": [0.1, 1.0, 10.0],
}


def hand_written(pipe, X, y, cv):
    """Shared-prefix loop as a user would write it; returns mean test scores
    in GridSearchCV's candidate order, after refitting the best on all data."""
    from sklearn.model_selection import ParameterGrid

    candidates = list(ParameterGrid(GRID))
    scores = {i: [] for i in range(len(candidates))}
    for train, test in cv.split(X, y):
        for lr in GRID["nn__net__lr"]:
            prefix = clone(Pipeline(pipe.steps[:2])).set_params(nn__net__lr=lr)
            Z_train = prefix.fit_transform(X[train], y[train])
            Z_test = prefix.transform(X[test])
            for k in GRID["pca__n_components"]:
                pca = clone(pipe.named_steps["pca"]).set_params(n_components=k)
                P_train, P_test = pca.fit_transform(Z_train), pca.transform(Z_test)
                for c in GRID["clf__C"]:
                    clf = clone(pipe.named_steps["clf"]).set_params(C=c).fit(P_train, y[train])
                    i = candidates.index({"nn__net__lr": lr, "pca__n_components": k, "clf__C": c})
                    scores[i].append(clf.score(P_test, y[test]))
    means = np.array([np.mean(scores[i]) for i in range(len(candidates))])
    best = candidates[int(np.argmax(means))]
    clone(pipe).set_params(**best).fit(X, y)
    return means


def run(method, X, y, epochs, tmp, round_id):
    counter = os.path.join(tmp, f"{method}-{round_id}.count")
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    start = time.perf_counter()
    if method == "GridSearchCV":
        means = GridSearchCV(make_pipe(epochs, counter), GRID, cv=cv).fit(X, y)
        means = means.cv_results_["mean_test_score"]
    elif method == "GridSearchCV + Pipeline(memory=), cold":
        cache = tempfile.mkdtemp(dir=tmp)
        pipe = make_pipe(epochs, counter, memory=Memory(cache, verbose=0))
        means = GridSearchCV(pipe, GRID, cv=cv).fit(X, y).cv_results_["mean_test_score"]
    elif method == "hand-written shared-prefix loop":
        means = hand_written(make_pipe(epochs, counter), X, y, cv)
    else:
        n_jobs = 2 if "n_jobs=2" in method else 1
        search = ChainSearchCV(make_pipe(epochs, counter), GRID, cv=cv, n_jobs=n_jobs)
        means = search.fit(X, y).cv_results_["mean_test_score"]
    seconds = time.perf_counter() - start
    return seconds, count(counter), means


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    # One torch and one BLAS thread in the main process: the small net gains
    # nothing from more, and on a busy 2-core machine spinning OpenMP/BLAS
    # threads make timings erratic (several-fold slowdowns). n_jobs=2 runs two
    # workers that skchain limits to one thread each, so both compare alike.
    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    epochs, rounds = (2, 1) if args.quick else (10, 5)
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    methods = [
        "GridSearchCV",
        "GridSearchCV + Pipeline(memory=), cold",
        "hand-written shared-prefix loop",
        "ChainSearchCV, n_jobs=1",
        "ChainSearchCV, n_jobs=2",
    ]
    times = {m: [] for m in methods}
    counts, scores = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_id in range(rounds):
            # Interleaved rounds, order reversed every other round, so drift on
            # a shared machine hits all methods alike. Plain GridSearchCV is
            # slow and its ratio is large: timed in the first round only.
            order = methods if round_id % 2 == 0 else methods[::-1]
            for method in order:
                if method == "GridSearchCV" and round_id > 0:
                    continue
                seconds, n_trained, means = run(method, X, y, epochs, tmp, round_id)
                times[method].append(seconds)
                counts[method] = n_trained
                scores[method] = means
                print(f"{method}: {seconds:.2f} s, {n_trained} net trainings", flush=True)
    hand = times["hand-written shared-prefix loop"]
    # Speed against the hand-written loop of the same round, median over rounds
    # (robust to load changing between rounds); GridSearchCV: its one round.
    speed = {
        m: float(np.median([h / t for h, t in zip(hand[: len(times[m])], times[m], strict=True)]))
        for m in methods
    }
    diff = {m: float(np.max(np.abs(scores[m] - scores["GridSearchCV"]))) for m in methods}
    rows = [
        {
            "method": m,
            "median s": f"{np.median(times[m]):.2f}",
            "first round s": f"{times[m][0]:.2f}",
            "speed vs hand-written loop (median of rounds)": f"{speed[m]:.2f}x",
            "net trainings": counts[m],
            "max abs diff of mean_test_score vs GridSearchCV": f"{diff[m]:.1e}",
        }
        for m in methods
    ]
    chain1, chain2 = speed["ChainSearchCV, n_jobs=1"], speed["ChainSearchCV, n_jobs=2"]
    memory = speed["GridSearchCV + Pipeline(memory=), cold"]
    goals = [
        ("ChainSearchCV (n_jobs=1) >= 0.9x the hand-written loop", chain1 >= 0.9),
        ("ChainSearchCV (n_jobs=1) faster than cold Pipeline(memory=)", chain1 > memory),
        ("ChainSearchCV n_jobs=2 faster than n_jobs=1", chain2 > chain1),
    ]
    body = "\n\n".join(
        [
            f"Digits (1797 x 64), StandardScaler -> NeuralTransformer(skorch MLP 64-128-64-10, "
            f"{epochs} epochs, Adam, `random_state=0`, `cv=None`) -> PCA -> "
            f"LogisticRegression; 2 lr x 3 PCA sizes x 3 C = 18 candidates, 3-fold, refit "
            f"included. {rounds} interleaved rounds (plain GridSearchCV: 1 round); "
            f"net trainings counted by a skorch callback in every process. One torch and "
            "one BLAS thread per process (main process and each worker). The "
            "first round of `n_jobs=2` includes starting the joblib (loky) worker "
            "processes, which import torch; later rounds reuse them.",
            markdown_table(rows, list(rows[0])),
            "\n".join(f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in goals),
        ]
    )
    if args.quick:
        print(body)
    else:
        write_section("bench_search", body)


if __name__ == "__main__":
    main()
