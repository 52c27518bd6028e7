"""What the seeded-training lock costs a search run on threads.

``skchain._training`` holds one process-wide lock around every training, so
seeded fits in threads (joblib's threading backend, dask's threaded scheduler)
give the same nets as one at a time. This measures ``ChainSearchCV(n_jobs=2)``
and ``GridSearchCV(n_jobs=2)`` under joblib's threading backend with the lock,
against the same searches with the lock replaced by a no-op (what the code did
before; its results are not reproducible), and sequential ``n_jobs=1`` for
reference. Processes (loky, dask.distributed) do not share the lock.

Run: ``python benchmarks/bench_threads.py [--quick]``.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from skorch import NeuralNetClassifier
from threadpoolctl import threadpool_limits
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, write_section  # noqa: E402

import skchain._training as training  # noqa: E402
from skchain import ChainSearchCV, NeuralTransformer  # noqa: E402


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _MLP(nn.Sequential):
    # A class, not an instance: skorch initialises a class's weights inside
    # the seeded training; an instance would keep whatever weights it was
    # built with.
    def __init__(self):
        super().__init__(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _pipe(epochs):
    net = NeuralNetClassifier(
        _MLP,
        criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=0.01,
        max_epochs=epochs, batch_size=64, train_split=None, verbose=0,
    )
    return make_pipeline(
        NeuralTransformer(net, output="embedding", random_state=0),
        LogisticRegression(max_iter=300),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # One BLAS thread too: LogisticRegression's results must not depend on
    # how many BLAS threads a call happened to get beside another thread.
    threadpool_limits(limits=1)
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    epochs, rounds = (3, 1) if args.quick else (10, 3)
    grid = {
        "neuraltransformer__net__lr": [0.003, 0.01, 0.03],
        "logisticregression__C": [0.1, 1.0],
    }
    cv = KFold(3, shuffle=True, random_state=0)
    searches = {
        "GridSearchCV": lambda n: GridSearchCV(_pipe(epochs), grid, cv=cv, n_jobs=n),
        "ChainSearchCV": lambda n: ChainSearchCV(_pipe(epochs), grid, cv=cv, n_jobs=n),
    }
    times = {}
    scores = {}
    for _ in range(rounds):
        for name, make in searches.items():
            for setting in ("sequential", "threads, lock", "threads, no lock"):
                lock = training.TRAINING_LOCK
                if setting == "threads, no lock":
                    training.TRAINING_LOCK = _NoLock()
                try:
                    start = time.perf_counter()
                    if setting == "sequential":
                        search = make(1).fit(X, y)
                    else:
                        with joblib.parallel_backend("threading", n_jobs=2):
                            search = make(2).fit(X, y)
                    times.setdefault((name, setting), []).append(time.perf_counter() - start)
                finally:
                    training.TRAINING_LOCK = lock
                scores[(name, setting)] = search.cv_results_["mean_test_score"]
    rows = []
    for (name, setting), values in times.items():
        t = statistics.median(values)
        reference = statistics.median(times[(name, "sequential")])
        same = np.array_equal(scores[(name, setting)], scores[(name, "sequential")])
        rows.append({
            "search": name, "setting": setting, "median s": f"{t:.2f}",
            "vs sequential": f"{reference / t:.2f}x",
            "scores equal sequential": "yes" if same else "NO",
        })
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    body = "\n\n".join([
        f"digits, NeuralTransformer(embedding, {epochs} epochs, seeded) -> "
        f"LogisticRegression, 6 candidates, cv=3, median of {rounds} interleaved rounds, "
        f"1 torch and 1 BLAS thread per process; load average at the end {load:.1f}. Speed-up > 1 "
        "means faster than sequential. The lock makes threaded training run one net at "
        "a time; the no-lock rows show what that gives up and that their scores drift.",
        markdown_table(rows, list(rows[0])),
    ])
    if args.quick:
        print(body)
    else:
        write_section("bench_threads", body)


if __name__ == "__main__":
    main()
