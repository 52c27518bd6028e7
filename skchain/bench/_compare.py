"""``compare``: cross-validate several models on the same folds, side by side.

The question behind it is the one users bring to skchain: does chaining a net
pay off against a plain model? :func:`compare` answers it for any set of
scikit-learn estimators -- chains and baselines alike -- with scikit-learn's
:func:`~sklearn.model_selection.cross_validate` on one fixed set of splits, so
the scores are paired fold by fold. ``skchain bench`` is this function applied
to the models of a scenario (or of the user's file), followed by a verdict per
chain (``_verdict``).
"""

import sys
import time
import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import check_cv, cross_validate
from sklearn.utils import indexable

from .._parallel import parallel_map
from .._sklearn_compat import StrOptions, validate_params

__all__ = ["compare"]


@validate_params(
    {
        "estimators": [dict, list, tuple],
        "X": ["array-like", "sparse matrix"],
        "y": ["array-like", None],
        "groups": ["array-like", None],
        "cv": ["cv_object"],
        "scoring": [str, callable, list, tuple, dict, None],
        "n_jobs": [Integral, None],
        "error_score": [StrOptions({"raise"}), Real],
        "verbose": ["verbose"],
        "return_folds": ["boolean"],
    },
    prefer_skip_nested_validation=False,
)
def compare(
    estimators,
    X,
    y=None,
    *,
    groups=None,
    cv=5,
    scoring=None,
    n_jobs=None,
    error_score=np.nan,
    verbose=1,
    return_folds=False,
):
    """Cross-validate several estimators on the same folds and tabulate them.

    Each estimator is cloned and fitted on every training fold, then scored on
    the matching test fold, with :func:`~sklearn.model_selection.cross_validate`.
    All estimators see identical splits, so a difference between two rows is
    not a difference of folds. An estimator that fails -- in ``fit``, in
    ``predict`` or in the scorer -- has its error recorded, and the others'
    results are kept.

    Parameters
    ----------
    estimators : dict of {str: estimator} or list of (str, estimator)
        The models to compare, by name; any scikit-learn estimator, pipelines
        with :class:`skchain.NeuralTransformer` steps included.
    X : array-like of shape (n_samples, n_features)
        Data; a pandas DataFrame is passed to the estimators as it is.
    y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
        Target.
    groups : array-like of shape (n_samples,), default=None
        Group labels for a group-aware splitter such as
        :class:`~sklearn.model_selection.GroupKFold`.
    cv : int, cross-validation generator or iterable, default=5
        As in scikit-learn: an int is stratified k-fold when every estimator is
        a classifier, k-fold otherwise (not shuffled: pass
        ``StratifiedKFold(5, shuffle=True, random_state=0)`` to shuffle). The
        splits are drawn once and used for every estimator.
    scoring : str, callable, list, tuple, dict or None, default=None
        As in :func:`~sklearn.model_selection.cross_validate`. ``None`` uses
        each estimator's ``score`` method, reported as ``"score"``. With
        several metrics, the first one ranks the models.
    n_jobs : int or None, default=None
        Fits run in parallel through joblib, every (estimator, fold) pair one
        task (``-1``: all cores). Each worker limits torch and BLAS to its share
        of the cores. Estimators with their own ``n_jobs`` (cross-fitted
        nets) are better left sequential inside.
    error_score : "raise" or float, default=np.nan
        Score given to a fold whose fit or scoring failed; its mean is then
        ``nan`` unless a number is given. ``"raise"`` stops at the first
        failure with the original exception, to debug it.
    verbose : int or bool, default=1
        ``0``: silent. ``1`` or more: one line per finished fold on stderr --
        model, fold, first score, fit time and an estimate of the time left
        (from the fits done so far) -- or the error of a failed fold.
    return_folds : bool, default=False
        Also return the per-fold results.

    Returns
    -------
    results : pandas.DataFrame
        One row per estimator, indexed by name, in the given order:

        - ``<metric>_mean`` and ``<metric>_std`` over the folds, for each
          metric (``score`` when ``scoring`` is None);
        - ``fit_time`` and ``fit_time_std``: seconds to fit one fold;
        - ``predict_time``: seconds to predict and score one test fold;
        - ``n_failed``: folds that failed; ``error``: the first error, or ``""``;
        - ``rank``: 1 for the best mean of the first metric (all scikit-learn
          scorers are greater-is-better); missing for a model without a
          mean score.
    folds : pandas.DataFrame
        Only with ``return_folds=True``: one row per (estimator, fold) with
        ``model``, ``fold``, ``test_<metric>`` for each metric, ``fit_time``,
        ``predict_time``, ``n_train`` and ``n_test`` (the fold's training and
        test rows, which the corrected t-test of ``skchain bench`` needs) and
        ``error``.

    Warns
    -----
    FitFailedWarning
        When some folds failed (with ``error_score`` a number).

    See Also
    --------
    sklearn.model_selection.cross_validate : The cross validation behind it.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.dummy import DummyClassifier
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skchain import compare
    >>> X, y = load_iris(return_X_y=True)
    >>> results = compare(
    ...     {"logreg": LogisticRegression(max_iter=500), "prior": DummyClassifier()},
    ...     X, y, cv=3, scoring="accuracy", verbose=0)
    >>> results[["accuracy_mean", "accuracy_std", "rank"]].round(2)
            accuracy_mean  accuracy_std  rank
    model
    logreg           0.97          0.01     1
    prior            0.32          0.00     2
    """
    named = _check_estimators(estimators)
    X, y, groups = indexable(X, y, groups)
    classifier = all(is_classifier(est) for _, est in named)
    splitter = check_cv(cv, y, classifier=classifier)
    splits = list(splitter.split(X, y, groups))
    n_folds = len(splits)
    if n_folds == 0:
        raise ValueError("cv gave no splits; it needs at least one (train, test) pair.")

    n_tasks = len(named) * n_folds
    # Wall-clock time (not perf_counter) so that joblib workers in other
    # processes can estimate the time remaining from the same start.
    options = {
        "scoring": scoring,
        "error_score": error_score,
        "verbose": verbose,
        "started": time.time(),
    }
    tasks = [
        (
            (name, est, X, y, split),
            {"fold": (i, n_folds), "task": (k * n_folds + i, n_tasks), **options},
        )
        for k, (name, est) in enumerate(named)
        for i, split in enumerate(splits)
    ]
    if verbose:
        _progress(
            f"compare: {len(named)} models x {n_folds} folds = {n_tasks} fits"
            + (f", n_jobs={n_jobs}" if n_jobs not in (None, 1) else "")
        )
    folds = pd.DataFrame(parallel_map(_fit_fold, tasks, n_jobs=n_jobs))
    metrics = _metric_names(folds["scores"], scoring)
    for metric in metrics:
        folds[f"test_{metric}"] = [
            error_score if scores is None else scores[metric] for scores in folds["scores"]
        ]
    summary = _summarise(folds, [name for name, _ in named], metrics)
    failed = summary[summary["n_failed"] > 0]
    if len(failed):
        lines = "\n".join(
            f"  {name}: {row.n_failed}/{n_folds} folds failed, first error: {row.error}"
            for name, row in failed.iterrows()
        )
        warnings.warn(
            f"Some models failed; their failed folds score {error_score}:\n{lines}\n"
            "Run compare(..., error_score='raise') to see the full traceback.",
            FitFailedWarning,
            stacklevel=3,  # the caller of compare, past validate_params' wrapper
        )
    folds["n_train"] = [len(splits[i][0]) for i in folds["fold"]]
    folds["n_test"] = [len(splits[i][1]) for i in folds["fold"]]
    folds = folds[
        [
            "model",
            "fold",
            *[f"test_{m}" for m in metrics],
            "fit_time",
            "predict_time",
            "n_train",
            "n_test",
            "error",
        ]
    ]
    return (summary, folds) if return_folds else summary


def _check_estimators(estimators):
    items = list(estimators.items()) if isinstance(estimators, dict) else list(estimators)
    if not items:
        raise ValueError("estimators is empty; pass {name: estimator, ...} to compare.")
    names = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(
                "estimators must be a dict {name: estimator} or a list of (name, "
                f"estimator) pairs; got the item {item!r}."
            )
        name, est = item
        if not isinstance(name, str):
            raise TypeError(f"Estimator names must be strings; got {name!r}.")
        if not hasattr(est, "fit"):
            raise TypeError(
                f"estimators[{name!r}] is a {type(est).__name__}, not an estimator "
                "(it has no fit method)."
            )
        names.append(name)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Estimator names must be unique; repeated: {duplicates}.")
    return items


def _fit_fold(
    name, estimator, X, y, split, *, fold, task, scoring, error_score, verbose, started
):
    """One (estimator, fold) task: scikit-learn's ``cross_validate`` on one split."""
    where = f"{_counter(task)} {name} | fold {fold[0] + 1}/{fold[1]} |"
    start = time.perf_counter()
    try:
        # error_score="raise" hands us the original exception (fit, predict or
        # scorer), so its type and message are recorded, not a summary of it.
        result = cross_validate(estimator, X, y, cv=[split], scoring=scoring, error_score="raise")
    except Exception as exc:
        if error_score == "raise":
            raise
        error = _describe(exc)
        if verbose:
            _progress(
                f"{where} FAILED after {time.perf_counter() - start:.2f} s "
                f"({_time_left(started, task)}): {error}"
            )
        return {
            "model": name,
            "fold": fold[0],
            "scores": None,
            "fit_time": np.nan,
            "predict_time": np.nan,
            "error": error,
        }
    scores = {key[5:]: float(value[0]) for key, value in result.items() if key[:5] == "test_"}
    if isinstance(scoring, str):
        scores = {scoring: scores["score"]}  # cross_validate calls a single metric "score"
    fit_time = float(result["fit_time"][0])
    if verbose:
        metric, value = next(iter(scores.items()))
        _progress(
            f"{where} {metric} {value:.4f} | fit {fit_time:.2f} s | {_time_left(started, task)}"
        )
    return {
        "model": name,
        "fold": fold[0],
        "scores": scores,
        "fit_time": fit_time,
        "predict_time": float(result["score_time"][0]),
        "error": "",
    }


def _metric_names(fold_scores, scoring):
    """Metric names in the scorer's order, from the first fold that scored."""
    for scores in fold_scores:
        if scores is not None:
            return list(scores)
    # Every fold failed: name the metrics from ``scoring`` alone.
    if isinstance(scoring, str):
        return [scoring]
    if isinstance(scoring, (list, tuple, dict)):
        return list(scoring)
    return ["score"]


def _summarise(folds, order, metrics):
    def mean(s):
        # A failed fold's error_score counts, as in scikit-learn's searches:
        # with the default nan the model gets no mean score.
        return s.mean(skipna=False)

    def std(s):
        return s.std(ddof=0, skipna=False)

    grouped = folds.groupby("model", sort=False)
    summary = pd.DataFrame(index=pd.Index(order, name="model"))
    for metric in metrics:
        summary[f"{metric}_mean"] = grouped[f"test_{metric}"].agg(mean)
        summary[f"{metric}_std"] = grouped[f"test_{metric}"].agg(std)
    # Times of the folds that ran.
    summary["fit_time"] = grouped["fit_time"].mean()
    summary["fit_time_std"] = grouped["fit_time"].std(ddof=0)
    summary["predict_time"] = grouped["predict_time"].mean()
    summary["n_failed"] = grouped["error"].agg(lambda s: int((s != "").sum()))
    summary["error"] = grouped["error"].agg(lambda s: next((e for e in s if e), ""))
    summary["rank"] = (
        summary[f"{metrics[0]}_mean"].rank(ascending=False, method="min").astype("Int64")
    )
    return summary


def _describe(exc):
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")


def _counter(task):
    index, total = task
    width = len(str(total))
    return f"[{index + 1:>{width}}/{total}]"


def _time_left(started, task):
    """``"about 1 min 5 s left"``: the mean time per finished fit so far, times
    the fits still to run (tasks finish roughly in order, also in parallel)."""
    done, total = task[0] + 1, task[1]
    if done >= total:
        return "done"
    left = (time.time() - started) / done * (total - done)
    return f"about {format_duration(left)} left"


def format_duration(seconds):
    """``"42 s"``, ``"3 min 5 s"``: whole seconds, for people."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60} s"


def _progress(line):
    print(line, file=sys.stderr, flush=True)
