"""Combining already-trained nets at their outputs (user story 5).

On digits, four skorch nets are trained, each on its own disjoint rows: three
of different quality (more rows and epochs make a better net) and one trained
on shuffled labels, which outputs noise. Held-out rows that no member saw fit
the ensembles; the remaining rows score them. Compared, over several random
splits:

- each member alone, and the best member (picked on the held-out rows);
- :class:`skchain.OutputEnsembleClassifier` with equal weights (mean of
  probabilities), learned weights, hard (majority) vote, and a logistic
  regression on the concatenated member probabilities (``final_estimator``);
- scikit-learn's ``VotingClassifier`` (soft) over the same four net recipes,
  which clones and refits every member: it is given the rows of all four
  members together (with their true labels), so it trains four nets on the
  900 rows, while the output ensembles train none;
- scikit-learn's ``VotingClassifier`` (soft) over the four pretrained nets
  wrapped in ``sklearn.frozen.FrozenEstimator``: the plain alternative to the
  equal-weight output ensemble (same numbers expected).

Inference path: ``predict_proba`` of the equal-weight ensemble (its skorch
members run by skchain's runner: one contiguous float32 array in slices)
against the sum of the members' own skorch ``predict_proba`` calls (a
``Dataset`` indexed row by row), on the test rows, as a ratio measured in the
same run.

Times are the ``fit`` of each combiner (for the output ensembles: one
inference pass of every member over the held-out rows, plus the weight fit)
and ``predict`` on the test rows; one torch / BLAS thread.

Run: ``python benchmarks/bench_ensemble.py [--quick]``.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.ensemble import VotingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, write_section  # noqa: E402

from skchain import OutputEnsembleClassifier  # noqa: E402
from skchain._parallel import limit_threads  # noqa: E402
from skchain._testing import make_classifier_net  # noqa: E402

# (name, training rows, epochs, hidden, labels shuffled?)
MEMBERS = [
    ("net_large", 400, 30, 64, False),
    ("net_medium", 200, 15, 32, False),
    ("net_small", 100, 8, 16, False),
    ("net_noise", 200, 30, 32, True),
]


def recipe(epochs, hidden):
    return make_classifier_net(
        n_classes=10,
        hidden=hidden,
        max_epochs=epochs,
        lr=0.01,
        iterator_train__shuffle=True,
        classes=list(range(10)),
    )


def split(seed, n):
    """Member rows (disjoint), held-out rows for the ensemble fit, test rows."""
    idx = np.random.RandomState(seed).permutation(n)
    sizes = np.cumsum([m[1] for m in MEMBERS])
    parts = np.split(idx, list(sizes) + [sizes[-1] + 400])
    return parts[: len(MEMBERS)], parts[len(MEMBERS)], parts[len(MEMBERS) + 1]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run_seed(seed, X, y):
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    member_rows, held, test = split(seed, len(y))
    members = []
    for (name, _, epochs, hidden, noise), rows in zip(MEMBERS, member_rows, strict=True):
        labels = rng.permutation(y[rows]) if noise else y[rows]
        members.append((name, recipe(epochs, hidden).fit(X[rows], labels)))
    X_ho, y_ho, X_te, y_te = X[held], y[held], X[test], y[test]
    results = {}

    def score(name, model, fit_s, proba=True):
        pred, predict_s = timed(lambda: model.predict(X_te))
        ll = np.nan
        if proba:
            p = model.predict_proba(X_te).astype(np.float64)  # skorch gives float32
            ll = log_loss(y_te, p / p.sum(axis=1, keepdims=True), labels=range(10))
        results[name] = (accuracy_score(y_te, pred), ll, fit_s, predict_s)

    for name, member in members:
        score(name, member, 0.0)
    held_acc = {name: accuracy_score(y_ho, m.predict(X_ho)) for name, m in members}
    best_name = max(held_acc, key=held_acc.get)
    results["best member (picked on held-out)"] = results[best_name]

    variants = {
        "mean (soft, equal weights)": dict(),
        "learned weights": dict(weights="learn"),
        "hard vote": dict(voting="hard"),
        "final_estimator=LogisticRegression": dict(
            final_estimator=LogisticRegression(max_iter=1000)
        ),
    }
    weights = None
    for label, params in variants.items():
        ens = OutputEnsembleClassifier(members, **params)
        _, fit_s = timed(lambda ens=ens: ens.fit(X_ho, y_ho))
        score(label, ens, fit_s, proba=params.get("voting") != "hard")
        if params.get("weights") == "learn":
            weights = ens.weights_

    frozen = VotingClassifier([(n, FrozenEstimator(m)) for n, m in members], voting="soft")
    _, fit_s = timed(lambda: frozen.fit(X_ho, y_ho))
    score("sklearn VotingClassifier over FrozenEstimator members", frozen, fit_s)

    # Inference path, best of 3: the runner against skorch's own predict_proba.
    mean = OutputEnsembleClassifier(members).fit(X_ho, y_ho)
    runner_s = min(timed(lambda: mean.predict_proba(X_te))[1] for _ in range(3))
    skorch_s = min(
        timed(lambda: [m.predict_proba(X_te) for _, m in members])[1] for _ in range(3)
    )
    results["_inference"] = (runner_s, skorch_s)

    all_rows = np.concatenate(member_rows)
    voting = VotingClassifier([(n, clone(m)) for n, m in members], voting="soft")
    _, fit_s = timed(lambda: voting.fit(X[all_rows], y[all_rows]))
    score("sklearn VotingClassifier (refits 4 nets on all member rows)", voting, fit_s)
    return results, weights, best_name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with limit_threads(1):
        run(args.quick)


def run(quick):
    load_start = os.getloadavg()[0]
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    seeds = range(1) if quick else range(5)
    per_seed, all_weights = [], []
    for seed in seeds:
        results, weights, _ = run_seed(seed, X, y)
        per_seed.append(results)
        all_weights.append(weights)
        print(f"seed {seed}: learned weights {np.round(weights, 3).tolist()}", flush=True)
    rows = []
    reference = "sklearn VotingClassifier (refits 4 nets on all member rows)"
    ref_fit = np.mean([r[reference][2] for r in per_seed])
    runner_s, skorch_s = np.array([r.pop("_inference") for r in per_seed]).mean(axis=0)
    for name in per_seed[0]:
        values = np.array([r[name] for r in per_seed])
        acc, ll, fit_s, predict_s = values.mean(axis=0)
        pretrained = name.startswith("net_") or name.startswith("best member")
        rows.append(
            {
                "model": name,
                "accuracy": f"{acc:.3f} ± {values[:, 0].std():.3f}",
                "log loss": "n/a (no proba)" if np.isnan(ll) else f"{ll:.3f}",
                "fit s": "pretrained" if pretrained else f"{fit_s:.3f}",
                "fit / VotingClassifier fit": "" if pretrained else f"{fit_s / ref_fit:.3f}",
                "predict s": f"{predict_s:.4f}",
            }
        )
    w = np.mean(all_weights, axis=0)
    table = markdown_table(
        rows, ["model", "accuracy", "log loss", "fit s", "fit / VotingClassifier fit", "predict s"]
    )
    names = ", ".join(f"{m[0]} {v:.3f}" for m, v in zip(MEMBERS, w, strict=True))
    body = (
        f"Digits, {len(seeds)} random splits (mean ± std over splits). Members: "
        + ", ".join(f"{m[0]} ({m[1]} rows, {m[2]} epochs, hidden {m[3]})" for m in MEMBERS)
        + "; net_noise is trained on shuffled labels. 400 held-out rows fit the "
        f"ensembles, the other {len(y) - 1300} rows score them. Member rows are disjoint. "
        "Members' fit time is not counted (they are pretrained); VotingClassifier's fit "
        "trains its four nets.\n\n"
        f"{table}\n\nMean learned weights: {names}.\n\n"
        f"Inference on the {len(y) - 1300} test rows: the equal-weight ensemble's "
        f"predict_proba (4 skorch members through skchain's runner) {runner_s * 1e3:.1f} ms "
        f"against {skorch_s * 1e3:.1f} ms for the 4 members' own skorch predict_proba; "
        f"ratio runner / skorch = {runner_s / skorch_s:.2f} (best of 3, mean over splits).\n\n"
        f"Load average (1 min) {load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at "
        "the end of the run: absolute times on a shared machine are only comparable "
        "within one run.\n"
    )
    if quick:
        print(body)
        print("(--quick: RESULTS.md not written)")
    else:
        write_section("bench_ensemble", body)


if __name__ == "__main__":
    main()
