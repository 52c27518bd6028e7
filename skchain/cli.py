"""The ``skchain`` command line: ``skchain bench`` (also ``python -m skchain bench``).

``bench`` cross-validates chained models (a net's outputs feeding a classic
estimator) next to plain baselines on one of scikit-learn's bundled datasets,
prints a table, and saves the results as CSV, JSON and a PNG plot.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="skchain",
        description="skchain: turn any neural net into a scikit-learn fit/transform step.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"skchain {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser(
        "bench",
        help="compare chained models with plain baselines on a bundled dataset",
        description=(
            "Cross-validate chained models (net probabilities -> logistic regression, "
            "net embedding -> PCA -> SVC, stacked out-of-fold net outputs with the "
            "original features, an ensemble of nets) and plain baselines (logistic "
            "regression or ridge, gradient boosting, the net alone) on the same folds. "
            "Prints a table and writes CSV, JSON and PNG files."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bench.add_argument(
        "--dataset",
        choices=_DATASETS,
        default="digits",
        help="bundled scikit-learn dataset; diabetes is a regression task",
    )
    bench.add_argument("--cv", type=_at_least(2), default=5, help="number of folds")
    bench.add_argument(
        "--quick",
        action="store_true",
        help="a few hundred rows, 2 folds, 3 epochs: checks that everything "
        "runs in seconds, measures nothing",
    )
    bench.add_argument(
        "--output-dir",
        type=Path,
        default=Path("skchain-bench"),
        help="folder for the CSV, JSON and PNG files (created if missing)",
    )
    bench.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="(model, fold) fits run in parallel; -1 for all cores",
    )
    bench.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the folds, the nets' weights and batch order, boosting",
    )
    bench.set_defaults(handler=_bench)
    return parser


def _at_least(minimum):
    def parse(text):
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def main(argv=None):
    """Entry point of the ``skchain`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.handler(args)


# -- bench -------------------------------------------------------------------------


def _bench(args):
    from ._parallel import limit_threads
    from ._zoo import bench_setup
    from .benchmark import compare

    cv = 2 if args.quick else args.cv
    setup = bench_setup(args.dataset, cv=cv, quick=args.quick, seed=args.seed)
    started = time.perf_counter()
    print(_headline(setup, cv, args.quick), flush=True)
    # One thread per fit: the nets are tiny, so extra torch/OpenMP threads
    # only wait on each other, and on a busy machine they spin (measured on 2
    # shared cores: 8 min instead of under 2). In parallel, parallel_map gives
    # each worker its share of the cores instead.
    threads = 1 if args.n_jobs in (None, 1) else None
    with limit_threads(threads):
        results, folds = compare(
            {name: entry.estimator for name, entry in setup.models.items()},
            setup.X,
            setup.y,
            cv=setup.cv,
            scoring=setup.scoring,
            n_jobs=args.n_jobs,
            verbose=1,
            return_folds=True,
        )
    elapsed = time.perf_counter() - started
    results.insert(0, "kind", [entry.kind for entry in setup.models.values()])
    results["description"] = [entry.description for entry in setup.models.values()]

    print()
    print(format_table(results, setup.scoring))
    print(f"\n{len(results)} models x {cv} folds in {elapsed:.1f} s")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / f"bench_{args.dataset}{'_quick' if args.quick else ''}"
    paths = {
        "csv": stem.with_suffix(".csv"),
        "json": stem.with_suffix(".json"),
        "png": stem.with_suffix(".png"),
    }
    results.to_csv(paths["csv"])
    paths["json"].write_text(
        json.dumps(_json_report(setup, cv, args, results, folds, elapsed), indent=2) + "\n"
    )
    plot(
        results,
        setup.scoring,
        paths["png"],
        title=f"skchain bench: {args.dataset}, {cv}-fold CV"
        + (" (--quick: not a measurement)" if args.quick else ""),
    )
    for kind, path in paths.items():
        print(f"{kind.upper():4s} {path}")
    return 0 if results["n_failed"].lt(cv).any() else 1


def _headline(setup, cv, quick):
    n, d = setup.X.shape
    target = (
        f"{len(np.unique(setup.y))} classes" if setup.task == "classification" else "regression"
    )
    mode = " [--quick: subsample, tiny nets, few epochs]" if quick else ""
    return (
        f"skchain bench: {setup.dataset} ({n} rows, {d} features, {target}), "
        f"{cv}-fold cross validation, {setup.scoring}{mode}"
    )


def format_table(results, metric):
    """The terminal table: mean ± std of ``metric``, fit and predict seconds.

    The best mean score is marked with ``*``.
    """
    best = results["rank"].eq(1).fillna(False)
    rows = []
    for name, row in results.iterrows():
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        score = "failed" if np.isnan(mean) else f"{mean:.3f} ± {std:.3f}"
        rows.append(
            [
                "*" if best[name] else " ",
                name,
                row["kind"],
                score,
                _seconds(row["fit_time"]),
                _seconds(row["predict_time"]),
            ]
        )
    header = ["", "model", "kind", metric, "fit s", "predict s"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    right = {3, 4, 5}

    def line(cells):
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), line(["-" * w if i else " " for i, w in enumerate(widths)])]
    out += [line(r) for r in rows]
    out.append(
        f"* best {metric}; fit s: seconds to fit one fold, predict s: to predict and "
        "score one test fold (means over folds)"
    )
    failed = results[results["n_failed"] > 0]
    for name, row in failed.iterrows():
        out.append(f"! {name}: {row['n_failed']} fold(s) failed: {row['error']}")
    return "\n".join(out)


def _seconds(value):
    if np.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def plot(results, metric, path, title=None):
    """Bars of the mean score with their std across folds, and score vs fit time.

    Models are numbered in both panels. Uses matplotlib's object-oriented API
    without pyplot, so it needs no display and leaves the user's backend alone.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ok = results[results[f"{metric}_mean"].notna()]
    numbers = [str(i) for i in range(1, len(ok) + 1)]
    colors = ["C0" if kind == "chain" else "C7" for kind in ok["kind"]]
    means, stds = ok[f"{metric}_mean"], ok[f"{metric}_std"]
    fig = Figure(figsize=(11, 0.45 * len(results) + 1.6), layout="constrained")
    bars, scatter = fig.subplots(1, 2, width_ratios=[3, 2])

    labels = [
        f"{i}. {name}{' *' if rank == 1 else ''}"
        for i, name, rank in zip(numbers, ok.index, ok["rank"], strict=True)
    ]
    bars.barh(labels, means, xerr=stds, color=colors, capsize=3)
    low, high = float((means - stds).min()), float((means + stds).max())
    pad = max(0.02, 0.1 * (high - low))
    bars.set_xlim(max(low - pad, 0.0) if low >= 0 else low - pad, high + pad)
    bars.invert_yaxis()
    bars.set_xlabel(f"{metric}, mean ± std over folds (* best)")
    bars.grid(axis="x", alpha=0.3)
    bars.legend(
        handles=[Patch(color="C0", label="chain"), Patch(color="C7", label="baseline")],
        loc="lower right",
        fontsize=8,
    )

    scatter.scatter(ok["fit_time"], means, c=colors)
    for number, x, y in zip(numbers, ok["fit_time"], means, strict=True):
        scatter.annotate(number, (x, y), xytext=(4, 3), textcoords="offset points")
    scatter.set_xscale("log")
    scatter.set_xlabel("seconds to fit one fold (log scale)")
    scatter.set_ylabel(metric)
    scatter.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    return path


def _json_report(setup, cv, args, results, folds, elapsed):
    import sklearn
    import torch

    from . import __version__

    # pandas writes nan as null, which json.dumps would not.
    models = json.loads(results.reset_index().to_json(orient="records"))
    for record in models:
        mine = folds[folds["model"] == record["model"]].drop(columns="model")
        record["folds"] = json.loads(mine.to_json(orient="records"))
    return {
        "dataset": setup.dataset,
        "task": setup.task,
        "n_samples": int(setup.X.shape[0]),
        "n_features": int(setup.X.shape[1]),
        "cv": cv,
        "scoring": setup.scoring,
        "quick": args.quick,
        "seed": args.seed,
        "n_jobs": args.n_jobs,
        "seconds": round(elapsed, 2),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "skchain": __version__,
            "scikit-learn": sklearn.__version__,
            "torch": torch.__version__,
        },
        "models": models,
    }


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
