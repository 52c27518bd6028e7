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
- ``ChainSearchCV`` at ``n_jobs=1`` and ``n_jobs=2``;
- dask-ml's ``GridSearchCV`` (the only peer: it also merges shared pipeline
  prefixes, building one dask graph for all candidates and folds) on dask's
  synchronous scheduler (one thread, like ``n_jobs=1``) and on its threaded
  scheduler with 2 workers. Optional: needs ``pip install dask-ml`` (the
  ``bench`` extra of setup.cfg); without it these rows are left out. On the
  threaded scheduler seeded nets train in two threads of one process, which
  share torch's global generator unless skchain serialises seeded training;
  the last column shows whether its scores still equal ``GridSearchCV``'s.

Goals: ChainSearchCV >= 0.9x the speed of the hand-written loop, faster than
the cold ``Pipeline(memory=)``, and faster at ``n_jobs=2`` than at ``n_jobs=1``.

Thread limiting is shown with plain ``GridSearchCV`` at ``n_jobs=2`` (one
torch/BLAS thread per worker on 2 cores) against its ``n_jobs=1`` run. With
``--oversubscribed`` it also runs ``n_jobs=2`` with two torch threads forced in
each worker, the case the issue measured; that run is off by default because it
is very slow (a ``--quick --oversubscribed`` run on 2 busy cores took 188 s
against 6 s for ``n_jobs=1``) and hogs a shared machine.

Run: ``python benchmarks/bench_search.py [--quick] [--rounds N] [--oversubscribed]``.
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

try:
    from dask_ml.model_selection import GridSearchCV as DaskGridSearchCV
except ImportError:  # optional reference (extra "bench")
    DaskGridSearchCV = None

DASK_METHODS = ["dask-ml GridSearchCV, sync scheduler", "dask-ml GridSearchCV, 2 threads"]


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


class ForceTorchThreads(Callback):
    """Set torch's intra-op threads when training starts, overriding any limit."""

    def __init__(self, n_threads):
        self.n_threads = n_threads

    def on_train_begin(self, net, **kwargs):
        torch.set_num_threads(self.n_threads)


def count(path):
    return sum(1 for _ in open(path)) if os.path.exists(path) else 0


def make_pipe(epochs, counter_path, memory=None, force_threads=None):
    callbacks = [("count", CountTraining(counter_path))]
    if force_threads:
        callbacks.append(("threads", ForceTorchThreads(force_threads)))
    net = NeuralNetClassifier(
        DigitsMLP,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        max_epochs=epochs,
        lr=0.01,
        batch_size=64,
        train_split=None,
        verbose=0,
        callbacks=callbacks,
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
    if method.startswith("GridSearchCV, n_jobs=2"):
        force = 2 if "forced" in method else None
        pipe = make_pipe(epochs, counter, force_threads=force)
        means = GridSearchCV(pipe, GRID, cv=cv, n_jobs=2).fit(X, y)
        means = means.cv_results_["mean_test_score"]
        torch.set_num_threads(1)  # the forced run also set it in this process (refit)
    elif method == "GridSearchCV":
        means = GridSearchCV(make_pipe(epochs, counter), GRID, cv=cv).fit(X, y)
        means = means.cv_results_["mean_test_score"]
    elif method == "GridSearchCV + Pipeline(memory=), cold":
        cache = tempfile.mkdtemp(dir=tmp)
        pipe = make_pipe(epochs, counter, memory=Memory(cache, verbose=0))
        means = GridSearchCV(pipe, GRID, cv=cv).fit(X, y).cv_results_["mean_test_score"]
    elif method.startswith("dask-ml"):
        threaded = "threads" in method
        search = DaskGridSearchCV(
            make_pipe(epochs, counter),
            GRID,
            cv=cv,
            scheduler="threads" if threaded else "sync",
            n_jobs=2 if threaded else 1,
        )
        means = search.fit(X, y).cv_results_["mean_test_score"]
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
    parser.add_argument(
        "--oversubscribed",
        action="store_true",
        help="also time GridSearchCV n_jobs=2 with 2 torch threads forced per worker (slow)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (5)")
    args = parser.parse_args(argv)
    # One torch and one BLAS thread in the main process: the small net gains
    # nothing from more, and on a busy 2-core machine spinning OpenMP/BLAS
    # threads make timings erratic (several-fold slowdowns). n_jobs=2 runs two
    # workers that skchain limits to one thread each, so both compare alike.
    torch.set_num_threads(1)
    threadpool_limits(limits=1)
    epochs, rounds = (2, 1) if args.quick else (10, 5)
    if args.rounds is not None:
        rounds = args.rounds
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    methods = [
        "GridSearchCV + Pipeline(memory=), cold",
        "hand-written shared-prefix loop",
        "ChainSearchCV, n_jobs=1",
        "ChainSearchCV, n_jobs=2",
    ]
    if DaskGridSearchCV is not None:
        methods += DASK_METHODS
    else:
        print("dask-ml is not installed: its rows are left out (pip install dask-ml)")
    times = {m: [] for m in methods}
    counts, scores = {}, {}
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:

        def timed(method, round_id):
            seconds, counts[method], scores[method] = run(method, X, y, epochs, tmp, round_id)
            print(f"{method}: {seconds:.2f} s, {counts[method]} net trainings", flush=True)
            return seconds

        for round_id in range(rounds):
            # Interleaved rounds, order reversed every other round, so drift on
            # a shared machine hits all methods alike; the two ChainSearchCV
            # runs are always back to back.
            order = methods if round_id % 2 == 0 else methods[::-1]
            for method in order:
                times[method].append(timed(method, round_id))
        # Plain GridSearchCV is slow (55 trainings) and timed once, n_jobs=1 and
        # n_jobs=2 back to back after the rounds (loky workers warm, as for
        # ChainSearchCV n_jobs=2 after round 0). The forced run goes last: it
        # leaves two torch threads set in the workers.
        plain_methods = ["GridSearchCV", "GridSearchCV, n_jobs=2 (1 thread per worker)"]
        if args.oversubscribed:
            plain_methods.append("GridSearchCV, n_jobs=2 (2 torch threads forced per worker)")
        plain = {m: timed(m, "plain") for m in plain_methods}
    load_end = os.getloadavg()[0]

    hand = times["hand-written shared-prefix loop"]
    # Speed against the hand-written loop of the same round, median over rounds
    # (robust to load changing between rounds); plain GridSearchCV: against the
    # median hand-written time.
    speed = {
        m: float(np.median([h / t for h, t in zip(hand, times[m], strict=True)])) for m in methods
    }
    speed["GridSearchCV"] = float(np.median(hand)) / plain["GridSearchCV"]
    times["GridSearchCV"] = [plain["GridSearchCV"]]
    reference_scores = scores["GridSearchCV"]
    table_methods = ["GridSearchCV", *methods]
    rows = [
        {
            "method": m,
            "median s": f"{np.median(times[m]):.2f}",
            "first round s": f"{times[m][0]:.2f}",
            "speed vs hand-written loop (median of rounds)": f"{speed[m]:.2f}x",
            "net trainings": counts[m],
            "max abs diff of mean_test_score vs GridSearchCV": (
                f"{np.max(np.abs(scores[m] - reference_scores)):.1e}"
            ),
        }
        for m in table_methods
    ]
    chain1, chain2 = times["ChainSearchCV, n_jobs=1"], times["ChainSearchCV, n_jobs=2"]
    per_round = [a / b for a, b in zip(chain1, chain2, strict=True)]
    parallel_speedup = float(np.median(per_round))
    memory = speed["GridSearchCV + Pipeline(memory=), cold"]
    reference = plain["GridSearchCV"]
    plain_rows = [
        {
            "plain GridSearchCV": "n_jobs=1" if m == "GridSearchCV" else m.split(", ", 1)[1],
            "seconds": f"{t:.2f}",
            "speed vs n_jobs=1": f"{reference / t:.2f}x",
        }
        for m, t in plain.items()
    ]
    limited = plain["GridSearchCV, n_jobs=2 (1 thread per worker)"]
    goals = [
        (
            "ChainSearchCV (n_jobs=1) >= 0.9x the hand-written loop",
            speed["ChainSearchCV, n_jobs=1"] >= 0.9,
        ),
        (
            "ChainSearchCV (n_jobs=1) faster than cold Pipeline(memory=)",
            speed["ChainSearchCV, n_jobs=1"] > memory,
        ),
        ("ChainSearchCV n_jobs=2 faster than n_jobs=1", parallel_speedup > 1),
        ("plain GridSearchCV n_jobs=2 (threads limited) faster than n_jobs=1", limited < reference),
    ]
    dask_note = "dask-ml is not installed: no dask-ml rows."
    if DaskGridSearchCV is not None:
        pairs = [
            ("ChainSearchCV, n_jobs=1", DASK_METHODS[0]),
            ("ChainSearchCV, n_jobs=2", DASK_METHODS[1]),
        ]
        ratios = {
            ours: float(np.median([d / c for c, d in zip(times[ours], times[dask], strict=True)]))
            for ours, dask in pairs
        }
        dask_note = (
            "Against dask-ml's `GridSearchCV` (same rounds): `ChainSearchCV` `n_jobs=1` is "
            f"{ratios[pairs[0][0]]:.2f}x the speed of dask-ml on the synchronous scheduler, "
            f"`n_jobs=2` {ratios[pairs[1][0]]:.2f}x the speed of dask-ml on 2 threads "
            "(median over rounds of the per-round ratio; above 1: ChainSearchCV is faster)."
        )
    body = "\n\n".join(
        [
            f"Digits (1797 x 64), StandardScaler -> NeuralTransformer(skorch MLP 64-128-64-10, "
            f"{epochs} epochs, Adam, `random_state=0`, `cv=None`) -> PCA -> "
            f"LogisticRegression; 2 lr x 3 PCA sizes x 3 C = 18 candidates, 3-fold, refit "
            f"included. {rounds} interleaved rounds; plain GridSearchCV once, after them. "
            "Net trainings counted by a skorch callback in every process. One torch and "
            "one BLAS thread per process (main process and each worker). The "
            "first round of `n_jobs=2` includes starting the joblib (loky) worker "
            "processes, which import torch and skchain; later rounds reuse them. "
            f"1-minute load average {load_start:.1f} at the start, {load_end:.1f} at the "
            "end (the 2 cores are shared with other jobs; a load above 1 leaves "
            "`n_jobs=2` no free core).",
            markdown_table(rows, list(rows[0])),
            dask_note,
            "ChainSearchCV `n_jobs=2` against `n_jobs=1`, run back to back in each round: "
            f"median speed-up {parallel_speedup:.2f}x (per round: "
            + ", ".join(f"{r:.2f}x" for r in per_round)
            + ").",
            "Thread limiting, plain `GridSearchCV` (n_jobs=1 and n_jobs=2 back to back, "
            "loky workers warm). joblib's loky backend caps each worker at cores // n_jobs "
            "BLAS/OpenMP threads (torch included), and skchain's own parallel loops "
            "(ChainSearchCV, cross fitting) set the same limit per task on any backend."
            + (
                " The forced row undoes it with a skorch callback calling "
                "`torch.set_num_threads(2)` in every worker, the oversubscribed setup "
                "the issue measured."
                if args.oversubscribed
                else ""
            ),
            markdown_table(plain_rows, list(plain_rows[0])),
            "\n".join(f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in goals),
        ]
    )
    if args.quick:
        print(body)
    else:
        write_section("bench_search", body)


if __name__ == "__main__":
    main()
