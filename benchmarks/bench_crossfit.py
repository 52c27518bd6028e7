"""Does cross fitting matter? In-sample vs out-of-fold net outputs in a stack.

A net sees half of the features (every other column) and memorises them
(128 hidden units, 100 epochs, a few hundred rows). Its class probabilities and
all the original features ("passthrough") feed a final model. Scores are
cross-validated over the whole chain (outer 5-fold, stratified), for:

- the final model alone on the original features (the plain baseline);
- the chain with ``cv=None``: the final model is trained on the net's
  in-sample probabilities, near-perfect on the training rows;
- the chain with ``cv=5`` (the default): trained on out-of-fold probabilities.

It also times cross fitting itself: ``fit_transform`` with ``cv=5`` on all of
digits at ``n_jobs=1`` and ``n_jobs=2`` (goal: 2 workers faster than 1 on 2
cores, i.e. no thread oversubscription).

Run: ``python benchmarks/bench_crossfit.py [--quick]``.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, median_of, write_section  # noqa: E402

from skchain import NeuralTransformer  # noqa: E402
from skchain._testing import make_classifier_net  # noqa: E402

FINALS = {
    "HistGradientBoosting": lambda: HistGradientBoostingClassifier(random_state=0),
    "LogisticRegression": lambda: make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=3000)
    ),
}


def load(name, n_rows):
    loader = {"digits": load_digits, "breast_cancer": load_breast_cancer}[name]
    X, y = loader(return_X_y=True)
    rows = np.random.RandomState(0).permutation(len(y))[:n_rows]
    return X[rows], y[rows]


def chain(final, n_features, n_classes, cv, epochs):
    net = make_classifier_net(n_classes=n_classes, hidden=128, max_epochs=epochs, lr=0.01)
    seen_by_net = list(range(0, n_features, 2))
    return make_pipeline(
        ColumnTransformer([
            ("net", make_pipeline(StandardScaler(), NeuralTransformer(net, cv=cv, random_state=0)),
             seen_by_net),
            ("raw", "passthrough", list(range(n_features))),
        ]),
        final,
    )


def evaluate(model, X, y, folds):
    outer = StratifiedKFold(folds, shuffle=True, random_state=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cross_validate(model, X, y, cv=outer, scoring=["accuracy", "neg_log_loss"])
    return {
        "accuracy": f"{res['test_accuracy'].mean():.3f} ± {res['test_accuracy'].std():.3f}",
        "log loss": f"{-res['test_neg_log_loss'].mean():.3f}",
        "seconds": f"{time.perf_counter() - start:.1f}",
        "_acc": res["test_accuracy"].mean(),
        "_loss": -res["test_neg_log_loss"].mean(),
    }


def parallel_folds(quick):
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    epochs = 3 if quick else 20
    rows = []
    for n_jobs in (1, 2):
        net = make_classifier_net(n_classes=10, hidden=128, max_epochs=epochs, lr=0.01)
        nt = NeuralTransformer(net, cv=5, n_jobs=n_jobs, random_state=0)
        seconds = median_of(lambda nt=nt: nt.fit_transform(X, y), repeat=1 if quick else 3)
        rows.append({"n_jobs": n_jobs, "seconds": seconds})
    base = rows[0]["seconds"]
    met = "met" if rows[1]["seconds"] < base else "NOT met"
    for row in rows:
        row["speed-up"] = f"{base / row['seconds']:.2f}x"
        row["seconds"] = f"{row['seconds']:.2f}"
    return (
        f"**cross fitting in parallel**: `NeuralTransformer(cv=5).fit_transform` on digits "
        f"(1,797 rows), MLP 128-128, {epochs} epochs: 6 nets per call, median of "
        f"{1 if quick else 3} (goal: n_jobs=2 faster than n_jobs=1: {met})\n\n"
        + markdown_table(rows, ["n_jobs", "seconds", "speed-up"])
    )


def main(quick=False):
    torch.set_num_threads(1)
    cases = [("digits", 400), ("breast_cancer", 569)]
    epochs, folds = (20, 3) if quick else (100, 5)
    if quick:
        cases = [("digits", 200)]
    sections, summary = [], []
    for dataset, n_rows in cases:
        X, y = load(dataset, n_rows)
        n_classes = len(np.unique(y))
        for final_name, final in FINALS.items():
            rows = []
            variants = [
                ("baseline: final model on the features", final()),
                ("chain, in-sample outputs (cv=None)",
                 chain(final(), X.shape[1], n_classes, None, epochs)),
                ("chain, out-of-fold outputs (cv=5)",
                 chain(final(), X.shape[1], n_classes, 5, epochs)),
            ]
            for label, model in variants:
                row = {"model": label, **evaluate(model, X, y, folds)}
                print(f"{dataset} / {final_name} / {label}: {row['accuracy']}", flush=True)
                rows.append(row)
            base, leak, oof = rows
            summary.append(
                f"| {dataset} ({n_rows} rows) | {final_name} | {base['_acc']:.3f} | "
                f"{leak['_acc']:.3f} | {oof['_acc']:.3f} | {leak['_loss']:.3f} | "
                f"{oof['_loss']:.3f} |"
            )
            sections.append(
                f"**{dataset}, {n_rows} rows, final model {final_name}**\n\n"
                + markdown_table(rows, ["model", "accuracy", "log loss", "seconds"])
            )
    head = (
        f"Net: MLP 128-128 on every other feature, {epochs} epochs, Adam lr 0.01; its "
        "probabilities plus all original features feed the final model. Scores: "
        f"outer stratified {folds}-fold cross-validation of the whole chain "
        "(seconds include the nets' training: cross fitting trains 6 nets per fit).\n\n"
        "| data | final model | baseline acc | in-sample acc | out-of-fold acc | "
        "in-sample log loss | out-of-fold log loss |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(summary)
    )
    body = head + "\n\n" + "\n\n".join(sections) + "\n\n" + parallel_folds(quick)
    if quick:
        print(body)
    else:
        write_section("bench_crossfit", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, RESULTS.md untouched")
    main(**vars(parser.parse_args()))
