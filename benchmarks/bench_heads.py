"""Merging two transfer-learned heads on one frozen backbone (user story 3).

On digits (8x8 images), a small conv backbone is trained on 500 rows and
frozen, in two ways: as a 10-class digit classifier ("classifier"), or on a
self-supervised pretext task that never sees a digit label, predicting which of
four rotations an image was given ("rotation"). Head A is then trained on digits
0-4 only and head B on digits 5-9 only, from two disjoint sets of rows. On
held-out rows of all ten digits this script measures

1. accuracy and log loss of the naive merge (one softmax over both heads), of
   each calibration of :class:`skchain.MergedHeadsClassifier`, of a head
   retrained on all labels from the rows A and B saw together (the upper
   reference), and of a new head trained on the calibration rows alone; over
   several random splits, and for several sizes of the calibration set;
2. the time of the merged model (one backbone pass per batch) against running
   the two complete models one after the other (two backbone passes);
3. sharing: time, peak memory and module copies of ``GridSearchCV(cv=5)`` over
   6 candidates of a ``MergedHeadsClassifier`` whose backbone holds about 200 MB of
   weights, against the same search on precomputed head outputs and against
   the former behaviour (``clone`` deep-copying the backbone). Each variant
   runs in a fresh process, so its peak resident memory is its own.

Run: ``python benchmarks/bench_heads.py [--quick]``.
"""

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import _clone_parametrized
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, markdown_table, write_section  # noqa: E402

from skchain import MergedHeadsClassifier, merge_heads  # noqa: E402
from skchain._parallel import limit_threads  # noqa: E402
from skchain._runner import run_module, to_proba  # noqa: E402
from skchain._testing import train_module  # noqa: E402

CALIBRATIONS = [None, "temperature", "temperature_bias", "combiner"]
LOW, HIGH = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]


def make_backbone():
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
    )


def rotations(X):
    """The pretext task: each image four times, rotated by k * 90 degrees; label k."""
    images = X.reshape(-1, 8, 8)
    rotated = [np.rot90(images, k, axes=(1, 2)).reshape(len(X), 64) for k in range(4)]
    return np.ascontiguousarray(np.concatenate(rotated)), np.repeat(np.arange(4), len(X))


def build(seed, X, y, pretraining="classifier"):
    """Backbone, two complete models (backbone + head each) and the splits."""
    torch.manual_seed(seed)
    idx = np.random.RandomState(seed).permutation(len(y))
    pre, part_a, part_b, cal, test = np.split(idx, [500, 850, 1200, 1450])
    backbone = make_backbone()
    if pretraining == "classifier":
        train_module(nn.Sequential(backbone, nn.Linear(64, 10)), X[pre], y[pre], epochs=20)
    else:
        train_module(nn.Sequential(backbone, nn.Linear(64, 4)), *rotations(X[pre]), epochs=15)
    backbone.requires_grad_(False)
    features = run_module(backbone, X)
    rows_a = part_a[y[part_a] < 5]
    rows_b = part_b[y[part_b] >= 5]
    head_a = train_module(nn.Linear(64, 5), features[rows_a], y[rows_a], epochs=100)
    head_b = train_module(nn.Linear(64, 5), features[rows_b], y[rows_b] - 5, epochs=100)
    rows_ab = np.concatenate([rows_a, rows_b])
    head_all = train_module(nn.Linear(64, 10), features[rows_ab], y[rows_ab], epochs=100)
    # What a user has: two complete models, each with its own copy of the base.
    model_a = nn.Sequential(backbone, head_a)
    model_b = nn.Sequential(copy.deepcopy(backbone), head_b)
    return dict(
        backbone=backbone,
        model_a=model_a,
        model_b=model_b,
        head_all=head_all,
        features=features,
        cal=cal,
        test=test,
    )


def merged_estimator(parts, calibration):
    # The two complete models passed as they are: A is cut before its head
    # (layer "1" of the Sequential) and B's head is taken from B.
    model_a, model_b = parts["model_a"], parts["model_b"]
    heads = [("A", model_a[1], LOW), ("B", (model_b, "1"), HIGH)]
    return MergedHeadsClassifier((model_a, "1"), heads, calibration=calibration)


def accuracy_rows(X, y, seeds, cal_sizes, pretraining):
    scores = {}  # (method, n_cal) -> list of (accuracy, log loss)

    def add(method, n_cal, proba, truth):
        pred = np.argmax(proba, axis=1)
        scores.setdefault((method, n_cal), []).append(
            ((pred == truth).mean(), log_loss(truth, proba, labels=range(10)))
        )

    fit_times = []
    for seed in seeds:
        parts = build(seed, X, y, pretraining)
        test, features = parts["test"], parts["features"]
        all_proba = run_module(
            parts["head_all"], features[test], postprocess=to_proba, dtype=np.float64
        )
        add("head retrained on all labels (rows of A and B)", None, all_proba, y[test])
        for n_cal in cal_sizes:
            cal = parts["cal"][:n_cal]
            for calibration in CALIBRATIONS:
                clf = merged_estimator(parts, calibration)
                start = time.perf_counter()
                clf.fit(X[cal], y[cal])
                if n_cal == cal_sizes[-1]:
                    fit_times.append((calibration, time.perf_counter() - start))
                add(f"merge, calibration={calibration}", n_cal, clf.predict_proba(X[test]), y[test])
            # A new 10-class head trained on the calibration rows alone.
            F = features.astype(np.float64)
            new_head = LogisticRegression(max_iter=2000).fit(F[cal], y[cal])
            proba = np.zeros((len(test), 10))
            proba[:, new_head.classes_] = new_head.predict_proba(F[test])
            add("new head on the calibration rows only", n_cal, proba, y[test])
    return scores, fit_times


def fmt(values):
    values = np.asarray(values)
    return f"{values.mean():.3f} ± {values.std():.3f}"


def accuracy_tables(scores, cal_sizes):
    n_full = cal_sizes[-1]
    main = []
    for (method, n_cal), values in scores.items():
        if n_cal not in (None, n_full):
            continue
        acc, loss = zip(*values, strict=True)
        main.append({"method": method, "accuracy": fmt(acc), "log loss": fmt(loss)})
    sweep = []
    methods = [
        "merge, calibration=None",
        "merge, calibration=temperature_bias",
        "merge, calibration=combiner",
        "new head on the calibration rows only",
    ]
    for method in methods:
        row = {"method": method}
        for n_cal in cal_sizes:
            row[f"{n_cal} rows"] = fmt([a for a, _ in scores[(method, n_cal)]])
        sweep.append(row)
    return main, sweep


def speed_rows(X, y, n_rows, batch_size, repeat):
    parts = build(0, X, y)
    rng = np.random.RandomState(0)
    big = X[rng.randint(0, len(X), n_rows)] + rng.normal(0, 0.05, (n_rows, 64))
    big = big.astype(np.float32)
    model_a, model_b = parts["model_a"], parts["model_b"]
    merged = merge_heads((model_a, "1"), [("A", model_a[1], LOW), ("B", (model_b, "1"), HIGH)])
    clf = merged_estimator(parts, "combiner").set_params(batch_size=batch_size)
    clf.fit(X[parts["cal"]], y[parts["cal"]])

    def two_models():
        return (
            run_module(model_a, big, batch_size=batch_size),
            run_module(model_b, big, batch_size=batch_size),
        )

    def merged_module():
        return run_module(merged, big, batch_size=batch_size)

    a, b = two_models()
    np.testing.assert_allclose(merged_module(), np.hstack([a, b]), rtol=1e-5, atol=1e-5)
    # Interleave so drift on a shared machine hits all alike.
    t_two, t_merged, t_clf = [], [], []
    for _ in range(repeat):
        t_two.append(best_of(two_models, repeat=1))
        t_merged.append(best_of(merged_module, repeat=1))
        t_clf.append(best_of(lambda: clf.predict_proba(big), repeat=1))
    t_two, t_merged, t_clf = min(t_two), min(t_merged), min(t_clf)
    rows = [
        {
            "method": "two complete models, one after the other",
            "backbone passes": 2,
            "rows/s": f"{n_rows / t_two:,.0f}",
            "time ratio": "1.00",
        },
        {
            "method": "merge_heads module",
            "backbone passes": 1,
            "rows/s": f"{n_rows / t_merged:,.0f}",
            "time ratio": f"{t_merged / t_two:.2f}",
        },
        {
            "method": "MergedHeadsClassifier.predict_proba (combiner)",
            "backbone passes": 1,
            "rows/s": f"{n_rows / t_clf:,.0f}",
            "time ratio": f"{t_clf / t_two:.2f}",
        },
    ]
    return rows, t_merged / t_two


# -- sharing a large pretrained backbone in a search -------------------------------

TABLE_ROWS = 1_600_000  # x 32 float32 = 205 MB (195 MiB) of weights
GRID = {"C": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}


class BigBackbone(nn.Module):
    """Cheap to run, large to copy: a projection plus a 205 MB lookup table.

    What a search costs beyond its fits is copies of the weights, which grow
    with their size, not with the compute, so the table keeps each forward
    cheap. Deep copies are counted.
    """

    copies = 0

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(64, 32)
        self.table = nn.Embedding(TABLE_ROWS, 32)

    def forward(self, x):
        index = (x * 1000).long().sum(1) % TABLE_ROWS
        return torch.tanh(self.proj(x) + self.table(index))

    def __deepcopy__(self, memo):
        type(self).copies += 1
        other = type(self).__new__(type(self))
        memo[id(self)] = other
        other.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return other


class CopyingClassifier(MergedHeadsClassifier):
    """The former clone: scikit-learn's default, which deep-copies the modules."""

    def __sklearn_clone__(self):
        return _clone_parametrized(self)


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sharing_variant(variant):
    """One search in this process; returns seconds, peak MiB above start, copies."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    torch.manual_seed(0)
    backbone = BigBackbone().requires_grad_(False)
    heads = [("A", nn.Linear(32, 5), LOW), ("B", nn.Linear(32, 5), HIGH)]
    module_mb = sum(p.numel() * p.element_size() for p in backbone.parameters()) / 2**20
    start_mb = _peak_rss_mb()
    start = time.perf_counter()
    if variant == "precomputed":
        # The naive merge's logits: the heads' columns, in class order.
        columns = run_module(merge_heads(backbone, heads), X, dtype=np.float64)
        search = GridSearchCV(LogisticRegression(max_iter=1000), GRID, cv=5).fit(columns, y)
    else:
        cls = MergedHeadsClassifier if variant == "shared" else CopyingClassifier
        grid = {f"combiner__{k}": v for k, v in GRID.items()}
        clf = cls(backbone, heads, combiner=LogisticRegression(max_iter=1000))
        search = GridSearchCV(clf, grid, cv=5).fit(X, y)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_mb": _peak_rss_mb() - start_mb,
        "copies": BigBackbone.copies,
        "module_mb": module_mb,
        "best_score": float(search.best_score_),
    }


def sharing_rows():
    results = {}
    for variant in ["precomputed", "shared", "copying"]:
        out = subprocess.run(
            [sys.executable, __file__, "--sharing-variant", variant],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    base = results["precomputed"]
    names = {
        "precomputed": "GridSearchCV(LogisticRegression) on precomputed head outputs",
        "shared": "GridSearchCV(MergedHeadsClassifier), clone shares the modules",
        "copying": "the same, clone deep-copying the modules (before)",
    }
    rows = [
        {
            "method": names[v],
            "seconds": f"{r['seconds']:.2f}",
            "time ratio": f"{r['seconds'] / base['seconds']:.2f}",
            "backbone copies": r["copies"],
            "peak MiB above start": f"{r['peak_mb']:.0f}",
            "above precomputed, x module size": (
                f"{(r['peak_mb'] - base['peak_mb']) / r['module_mb']:.2f}"
            ),
            "best CV accuracy (untrained heads)": f"{r['best_score']:.3f}",
        }
        for v, r in results.items()
    ]
    return rows, results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sharing-variant", choices=["precomputed", "shared", "copying"])
    args = parser.parse_args(argv)
    # One thread for torch and BLAS: the machine is shared, and timings with
    # spinning idle threads say more about the neighbours than about the code.
    with limit_threads(1):
        if args.sharing_variant:
            print(json.dumps(sharing_variant(args.sharing_variant)))
        else:
            run(args.quick)


def run(quick):
    load_start = os.getloadavg()[0]
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    seeds = range(2) if quick else range(10)
    cal_sizes = [50, 100, 250]
    n_rows, repeat = (20_000, 2) if quick else (100_000, 5)
    batch_size = 1024
    parts = []
    fit_line = ""
    for pretraining, what in [
        ("classifier", "trained as a 10-class digit classifier"),
        ("rotation", "trained to predict image rotations (it never saw a digit label)"),
    ]:
        scores, fit_times = accuracy_rows(X, y, seeds, cal_sizes, pretraining)
        main_rows, sweep_rows = accuracy_tables(scores, cal_sizes)
        parts += [
            f"**backbone {what}** on 500 rows, then frozen. Accuracy and log loss on "
            f"347 held-out rows of all ten digits, mean ± std over {len(seeds)} random "
            "splits; heads A (digits 0-4) and B (digits 5-9) trained on disjoint rows "
            f"(~175 each); calibration on {cal_sizes[-1]} other held-out rows.",
            markdown_table(main_rows, ["method", "accuracy", "log loss"]),
            "Accuracy against the number of calibration rows (the new head is a "
            "logistic regression on the frozen backbone features of those rows):",
            markdown_table(sweep_rows, ["method"] + [f"{n} rows" for n in cal_sizes]),
        ]
        if pretraining == "classifier":
            fit_ms = {}
            for calibration, seconds in fit_times:
                fit_ms.setdefault(str(calibration), []).append(seconds * 1000)
            fit_line = ", ".join(f"{k}: {np.median(v):.0f} ms" for k, v in fit_ms.items())
    speed, ratio = speed_rows(X, y, n_rows, batch_size, repeat)
    share, shared = sharing_rows()
    above = (shared["shared"]["peak_mb"] - shared["precomputed"]["peak_mb"]) / shared["shared"][
        "module_mb"
    ]
    load = f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    body = "\n\n".join(
        [f"Load average (1 min) on this machine: {load}."]
        + parts
        + [
            f"`fit` time on {cal_sizes[-1]} rows, classifier backbone (median; the "
            "networks run once, then the calibration fits on the frozen logits): "
            f"{fit_line}.",
            f"**inference**, {n_rows:,} rows, batch {batch_size}, 1 torch thread, "
            "classifier backbone (goal: about half the time of two complete models; "
            f"ratio {ratio:.2f})",
            markdown_table(speed, ["method", "backbone passes", "rows/s", "time ratio"]),
            f"**sharing**: `GridSearchCV(cv=5)` over 6 values of C, digits (1,797 rows), a "
            f"backbone of {shared['shared']['module_mb']:.0f} MiB of weights (cheap to run, "
            "large to copy); each variant in a fresh process, peak resident memory "
            "(maxrss) above the process's start, time including the one pass that "
            "precomputes the outputs (goal: zero copies, peak at most 1.2x the module "
            f"size above the precomputed search: {shared['shared']['copies']} copies, "
            f"{above:.2f}x)",
            markdown_table(
                share,
                [
                    "method",
                    "seconds",
                    "time ratio",
                    "backbone copies",
                    "peak MiB above start",
                    "above precomputed, x module size",
                    "best CV accuracy (untrained heads)",
                ],
            ),
        ]
    )
    if quick:
        print(body)
    else:
        write_section("bench_heads", body)


if __name__ == "__main__":
    main()
