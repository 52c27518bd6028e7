"""The ``skchain`` command line: ``skchain bench`` (also ``python -m skchain bench``).

``bench`` cross-validates chained models (a net's outputs feeding a classic
estimator) next to plain baselines -- on bundled scenarios, or on the user's
own table and models -- prints a table and one verdict sentence per chain,
and saves CSV, JSON and a PNG plot.

Every mistake in the arguments, files or data is one line on stderr and exit
status 2, found before any model is fitted.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ._data import UsageError

__all__ = ["main", "build_parser"]

_MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds below 2**32


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (usage is in ``--help``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one to show (not None, False, [])."""

    def _get_help_string(self, action):
        if action.default in (None, False, []):
            return action.help
        return super()._get_help_string(action)


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _seed(text):
    value = _int_at_least(0)(text)
    if value > _MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be at most {_MAX_SEED}, got {value}")
    return value


def _n_jobs(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(
            f"must be a number of processes (1, 2, ...) or -1 for all cores, got {value}"
        )
    return value


def build_parser():
    from .. import __version__
    from ._scenarios import DEFAULT, SCENARIOS

    parser = _Parser(
        prog="skchain",
        description="skchain: turn any neural net into a scikit-learn fit/transform step.",
    )
    parser.add_argument("--version", action="version", version=f"skchain {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    bench = commands.add_parser(
        "bench",
        help="compare chained models with plain baselines, with a verdict per chain",
        description=(
            "Cross-validate chained models (a net's outputs feeding a classic estimator) "
            "and plain baselines on the same folds, on bundled scenarios (--list) or on "
            "your own table (--data) and models (--models). Prints a table and one "
            "verdict per chain (a corrected paired t-test against the best baseline), and "
            "writes CSV, JSON and PNG files."
        ),
        formatter_class=_Help,
    )
    what = bench.add_argument_group("what to run")
    what.add_argument(
        "--scenario",
        nargs="+",
        metavar="NAME",
        default=None,
        help=f"bundled scenarios, 'stories', 'tabular' or 'all' (default: {' '.join(DEFAULT)})",
    )
    what.add_argument(
        "--dataset",
        metavar="NAME",
        default=None,
        help="same as --scenario NAME, for the tabular sets: "
        + ", ".join(n for n, s in SCENARIOS.items() if s.family == "tabular"),
    )
    what.add_argument("--list", action="store_true", help="list the scenarios and exit")
    what.add_argument("--data", type=Path, metavar="PATH", help="your CSV or Parquet file")
    what.add_argument("--target", metavar="COLUMN", help="the target column of --data")
    what.add_argument(
        "--task",
        choices=("auto", "classification", "regression"),
        default="auto",
        help="with --data: auto infers it from the target",
    )
    what.add_argument(
        "--drop", nargs="+", metavar="COLUMN", default=[], help="with --data: columns to ignore"
    )
    what.add_argument(
        "--models",
        type=Path,
        metavar="FILE.py",
        help="a Python file whose models() returns {name: unfitted estimator}; "
        "benchmarked next to the bundled models on the same folds",
    )
    what.add_argument(
        "--only", action="store_true", help="with --models: only your models, not the bundled ones"
    )
    how = bench.add_argument_group("how")
    how.add_argument("--cv", type=_int_at_least(2), default=5, help="number of folds")
    how.add_argument(
        "--repeats",
        type=_int_at_least(1),
        default=None,
        help="repetitions of the (reshuffled) k-fold split; default: the scenario's own "
        "(1 for the tabular sets and --data)",
    )
    how.add_argument(
        "--quick",
        action="store_true",
        help="small data, 2 folds, tiny nets, few epochs: checks that everything runs in "
        "seconds, measures nothing",
    )
    how.add_argument(
        "--output-dir",
        type=Path,
        default=Path("skchain-bench"),
        help="folder for the CSV, JSON and PNG files (created if missing)",
    )
    how.add_argument(
        "--n-jobs",
        type=_n_jobs,
        default=None,
        help="(model, fold) fits in parallel processes; -1 for all cores",
    )
    how.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=1,
        help="torch and BLAS threads per fit (tiny nets: more threads only wait on each "
        "other); with --n-jobs each process gets its share of the cores instead",
    )
    how.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seeds the folds, the nets' weights and batch order, boosting",
    )
    bench.set_defaults(handler=_bench)
    return parser


def main(argv=None):
    """Entry point of the ``skchain`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"skchain {args.command}: error: {exc}", file=sys.stderr)
        return 2


# -- bench -------------------------------------------------------------------------


def _scenario_names(args):
    from ._scenarios import DEFAULT, SCENARIOS

    if args.dataset is not None and args.scenario is not None:
        raise UsageError("give --scenario or --dataset, not both.")
    requested = args.scenario or ([args.dataset] if args.dataset else list(DEFAULT))
    groups = {
        "all": list(SCENARIOS),
        "stories": [n for n, s in SCENARIOS.items() if s.family == "story"],
        "tabular": [n for n, s in SCENARIOS.items() if s.family == "tabular"],
    }
    names = []
    for name in requested:
        if name in groups:
            names += groups[name]
        elif name in SCENARIOS:
            names.append(name)
        else:
            option = "--dataset" if args.dataset else "--scenario"
            raise UsageError(
                f"{option} {name!r}: no such scenario; choose from {', '.join(SCENARIOS)} "
                "(or stories, tabular, all); skchain bench --list describes them."
            )
    return list(dict.fromkeys(names))


def _check_arguments(args):
    if args.data is None and (args.target or args.task != "auto" or args.drop):
        raise UsageError("--target, --task and --drop go with --data PATH.")
    if args.data is not None:
        if not args.target:
            raise UsageError("--data needs --target COLUMN, the column to predict.")
        if args.scenario or args.dataset:
            raise UsageError("give --data or --scenario/--dataset, not both.")
    if args.only and args.models is None:
        raise UsageError("--only needs --models FILE.py (it drops the bundled models).")


def _check_output_dir(path):
    """Create the folder and write a file in it, before any work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".skchain-write-test-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"--output-dir {path}: cannot write there ({exc.strerror or exc}); "
            "choose a folder you can write to."
        ) from None


def _print_list():
    from ._scenarios import DEFAULT, SCENARIOS, install_hint, missing_needs

    width = max(map(len, SCENARIOS))
    for family, title in (("story", "Stories"), ("tabular", "Tabular sets")):
        print(f"{title}:")
        for name, scenario in SCENARIOS.items():
            if scenario.family != family:
                continue
            missing = missing_needs(scenario)
            note = f" [needs {', '.join(missing)}: {install_hint(scenario)}]" if missing else ""
            default = " (default)" if name in DEFAULT else ""
            print(f"  {name:<{width}}  {scenario.summary}{default}{note}")
    print("\nskchain bench runs the (default) ones; --scenario NAME ... or all picks others.")
    return 0


def _bench(args):
    if args.list:
        return _print_list()
    _check_arguments(args)
    _check_output_dir(args.output_dir)
    user_models = None
    if args.models is not None:
        from ._data import load_models

        user_models = load_models(args.models)
    if args.data is not None:
        plans = [("data", None)]
    else:
        from ._scenarios import SCENARIOS, install_hint, missing_needs

        names = _scenario_names(args)
        chosen = args.scenario is not None or args.dataset is not None
        for name in list(names):
            missing = missing_needs(SCENARIOS[name])
            if missing and chosen:
                raise UsageError(
                    f"scenario {name!r} needs {', '.join(missing)}; "
                    f"{install_hint(SCENARIOS[name])} or leave it out (--scenario ...)."
                )
            if missing:
                # The default run works on a plain install: say what is left out.
                print(
                    f"skchain bench: skipping the {name} scenario, which needs "
                    f"{', '.join(missing)} ({install_hint(SCENARIOS[name])})."
                )
                names.remove(name)
        plans = [("scenario", name) for name in names]

    from .._parallel import limit_threads

    # One thread per fit: the nets are tiny, so extra torch/OpenMP threads
    # only wait on each other, and on a busy machine they spin (measured on 2
    # shared cores: 8 min instead of under 2). The pretraining of the stories
    # runs under the same limit. In parallel, parallel_map gives each worker
    # its share of the cores instead.
    with limit_threads(args.threads):
        return _run_plans(args, plans, user_models)


def _run_plans(args, plans, user_models):
    cv = 2 if args.quick else args.cv
    started = time.perf_counter()
    summary = []
    status = 0
    for i, (kind, name) in enumerate(plans):
        if len(plans) > 1:
            print(f"\n=== scenario {i + 1}/{len(plans)}: {name} ===", flush=True)
        setup = _setup(args, kind, name, cv)
        setup = _with_user_models(
            setup, user_models, args.only, args.models.name if args.models else ""
        )
        ok, verdict_table = _run_one(args, setup, cv)
        summary.append((setup.name, verdict_table))
        status = max(status, 0 if ok else 1)
    if len(plans) > 1:
        print(f"\n=== verdicts, {len(plans)} scenarios in "
              f"{time.perf_counter() - started:.0f} s ===")  # fmt: skip
        for name, table in summary:
            counts = table["verdict"].value_counts()
            print(f"{name}: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return status


def _setup(args, kind, name, cv):
    from ._scenarios import build

    if kind == "scenario":
        setup = build(name, quick=args.quick, seed=args.seed, cv=cv)
    else:
        setup = _data_setup(args, cv)
    # The folds asked for are checked even when --quick runs 2 of them.
    _check_folds(setup, max(cv, args.cv), name or str(args.data))
    return setup


def _data_setup(args, cv):
    from sklearn.model_selection import train_test_split

    from ._data import default_preprocessor, infer_task, read_table
    from ._scenarios import Setup
    from ._zoo import default_models

    X, y, n_dropped = read_table(args.data, args.target, drop=args.drop)
    task, reason = infer_task(y, args.task)
    if task == "regression":
        y = y.astype(float)
    if args.quick and len(X) > 300:
        stratify = y if task == "classification" and y.value_counts().min() >= 2 else None
        X, _, y, _ = train_test_split(
            X, y, train_size=300, stratify=stratify, random_state=args.seed
        )
    preprocessor, plan = default_preprocessor(X)
    classify = task == "classification"
    y = y.to_numpy()
    models = default_models(
        task,
        n_classes=len(np.unique(y)) if classify else None,
        n_train=len(X) - len(X) // cv,
        quick=args.quick,
        seed=args.seed,
        preprocess=preprocessor,
    )
    columns = "; ".join(f"{len(cols)} {kind}" for kind, cols in plan.items() if cols)
    target = f"{len(np.unique(y))} classes" if classify else "regression"
    headline = (
        f"{args.data.name} ({len(X)} rows; columns: {columns}; target {args.target!r}: "
        f"{task}, {reason}{', ' + target if classify else ''})"
    )
    if n_dropped:
        headline += f"; {n_dropped} rows without a target dropped"
    return Setup(
        args.data.stem, headline, task, X, y, models, "accuracy" if classify else "r2"
    )


def _check_folds(setup, cv, what):
    n = len(setup.y)
    if cv > n:
        raise UsageError(f"--cv {cv}: more folds than the {n} rows of {what}.")
    if setup.task == "classification":
        labels, counts = np.unique(np.asarray(setup.y).astype(str), return_counts=True)
        if counts.min() < cv:
            raise UsageError(
                f"--cv {cv}: the class {str(labels[counts.argmin()])!r} of {what} has "
                f"{counts.min()} rows; stratified folds need at least {cv} per class "
                f"(use --cv {max(2, counts.min())} or fewer)."
            )


def _with_user_models(setup, user_models, only, path_name=""):
    from ._data import is_chain
    from ._zoo import Entry

    if user_models is None:
        return setup
    clash = sorted(set(user_models) & set(setup.models))
    if clash and not only:
        raise UsageError(
            f"--models: the names {clash} are already bundled models of {setup.name}; "
            "rename yours or add --only."
        )
    mine = {
        name: Entry(
            "chain" if is_chain(est) else "baseline", est, f"models() of {path_name}"
        )
        for name, est in user_models.items()
    }
    return setup._replace(models=mine if only else {**setup.models, **mine})


def _run_one(args, setup, cv):
    from ._compare import compare, format_duration
    from ._plot import plot
    from ._report import format_table, json_report, results_with_verdicts
    from ._scenarios import splitter
    from ._verdict import format_verdicts, verdicts

    repeats = 1 if args.quick else (args.repeats or setup.repeats)
    folds_text = f"{cv}-fold cross validation" + (f" x {repeats} repeats" if repeats > 1 else "")
    mode = " [--quick: small data, tiny nets, few epochs: not a measurement]" if args.quick else ""
    print(f"skchain bench: {setup.headline}, {folds_text}, {setup.scoring}{mode}", flush=True)
    started = time.perf_counter()
    kinds = {name: entry.kind for name, entry in setup.models.items()}
    results, folds = compare(
        {name: entry.estimator for name, entry in setup.models.items()},
        setup.X,
        setup.y,
        cv=splitter(setup.task, cv, args.seed, repeats),
        scoring=setup.scoring,
        n_jobs=args.n_jobs,
        verbose=1,
        return_folds=True,
    )
    elapsed = time.perf_counter() - started
    results.insert(0, "kind", [kinds[name] for name in results.index])
    results["description"] = [setup.models[name].description for name in results.index]
    table = verdicts(results, folds, kinds, setup.scoring)

    print()
    print(format_table(results, setup.scoring))
    print("\nVerdict (each chain against the best baseline, same folds):")
    print(format_verdicts(table))
    print(f"\n{len(results)} models x {len(folds) // len(results)} folds in "
          f"{format_duration(elapsed)}")  # fmt: skip

    stem = args.output_dir / f"bench_{setup.name}{'_quick' if args.quick else ''}"
    paths = {kind: stem.with_suffix(f".{kind}") for kind in ("csv", "json", "png")}
    results_with_verdicts(results, table).to_csv(paths["csv"])
    options = {
        "cv": cv,
        "repeats": repeats,
        "quick": args.quick,
        "seed": args.seed,
        "n_jobs": args.n_jobs,
        "threads": args.threads,
    }
    paths["json"].write_text(
        json.dumps(json_report(setup, options, results, folds, table, elapsed), indent=2) + "\n"
    )
    plot(
        results,
        table,
        kinds,
        setup.scoring,
        paths["png"],
        title=f"skchain bench: {setup.name}, {folds_text}"
        + (" (--quick: not a measurement)" if args.quick else ""),
    )
    for kind, path in paths.items():
        print(f"{kind.upper():4s} {path}")
    return bool(results["n_failed"].lt(len(folds) // len(results)).any()), table


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
