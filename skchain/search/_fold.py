"""The work of one fold: fit each shared prefix once, score every candidate below it.

Two kinds of joblib task run here. :func:`fit_common_prefix` fits the steps
that every candidate configures identically, once per fold.
:func:`evaluate_group` takes one fold and groups of candidates that share
steps ``0..depth``, and walks the prefix tree below: each node (a step with
one configuration, under one parent) is fitted once on the fold's training
rows, transforms the training and test rows for its children, and is dropped
when they are done. The final step is fitted per candidate and scored on the
prefix's transformed test rows, which is what the fitted pipeline computes.

Results are ``_fit_and_score``-style dicts (``fit_time``, ``score_time``,
``test_scores``, ``train_scores``, ``n_test_samples``, ``fit_error``) so that
scikit-learn formats them into ``cv_results_``. Only ``Exception`` is turned
into ``error_score``: ``KeyboardInterrupt`` and other ``BaseException`` end
the search.
"""

import time
import warnings
from collections import Counter
from traceback import format_exc

from sklearn.base import clone

from .._sklearn_compat import _check_method_params, _safe_split, _score, scorer_dict
from .._training import DivergedError
from ._epochs import fit_epochs
from ._prefix_tree import group_by_prefix
from ._step_params import fold_step_params

__all__ = [
    "Candidate", "Context", "evaluate_group", "failure_result", "fit_common_prefix",
    "is_passthrough",
]  # fmt: skip


class Candidate:
    """One candidate pipeline: its position, steps, prefix ids, step fit parameters
    and share keys (``keys[d]``: which candidates fit step ``d`` together, see
    :func:`~._epochs.share_keys`; the prefix ids when None)."""

    __slots__ = ("index", "steps", "ids", "params", "keys")

    def __init__(self, index, steps, ids, params, keys=None):
        self.index = index
        self.steps = steps
        self.ids = ids
        self.params = params
        self.keys = ids if keys is None else keys


class Context:
    """Everything a task needs besides its data; pickled with each task."""

    def __init__(self, search, scorer):
        self.estimator = search.estimator  # for pairwise-aware splitting
        self.scorer = scorer
        self.error_score = search.error_score
        self.return_train_score = search.return_train_score


class _FoldData:
    """The inputs of one step on one fold.

    ``X_fit`` is the previous step's ``fit_transform`` output (what Pipeline
    fits the next step on); ``X_score`` its ``transform`` of the training
    rows (what a fitted Pipeline scores on; they differ for cross-fitting
    steps), kept only when train scores are wanted. ``X`` and ``train`` (the
    whole data and the fold's rows) cut sample-aligned fit parameters.
    """

    __slots__ = (
        "X_fit",
        "X_test",
        "X_score",
        "y_train",
        "y_test",
        "sp_train",
        "sp_test",
        "X",
        "train",
    )

    def __init__(self, **kwargs):
        for key, value in kwargs.items():
            setattr(self, key, value)

    def below(self, X_fit, X_test, X_score):
        """The same fold, one step further down."""
        child = _FoldData(**{k: getattr(self, k) for k in self.__slots__})
        child.X_fit, child.X_test, child.X_score = X_fit, X_test, X_score
        return child

    def fit_params(self, candidate, name):
        return fold_step_params(self.X, candidate.params.get(name, {}), self.train)


def is_passthrough(step):
    return step is None or (isinstance(step, str) and step == "passthrough")


def _fit_transform_step(step, X, y, params):
    """Fit one prefix step on the training rows as ``Pipeline._fit`` does."""
    if hasattr(step, "fit_transform"):
        return step.fit_transform(X, y, **params.get("fit_transform", {})), step
    return step.fit(X, y, **params.get("fit", {})).transform(X, **params.get("transform", {})), step


class _Failed:
    """Stands for data whose ``transform`` raised; scoring on it fails."""

    def __init__(self, error):
        self.error = error


def _transform(step, X, ctx):
    """``step.transform(X)``; a failure surfaces when the data are scored, as
    it does when a fitted Pipeline is scored in ``GridSearchCV``."""
    if X is None or isinstance(X, _Failed):
        return X
    try:
        return step.transform(X)
    except Exception:
        if ctx.error_score == "raise":
            raise
        return _Failed(format_exc())


def _failure_scores(ctx):
    names = scorer_dict(ctx.scorer)
    if names is not None:
        return {name: ctx.error_score for name in names}
    return ctx.error_score


def _score_on(estimator, X, y, score_params, ctx):
    if not isinstance(X, _Failed):
        return _score(estimator, X, y, ctx.scorer, score_params, ctx.error_score)
    warnings.warn(
        "Scoring failed. The score on this train-test partition for these parameters "
        f"will be set to {ctx.error_score}. Details: \n{X.error}",
        UserWarning,
    )
    return _failure_scores(ctx)


def new_result(n_test):
    return {"fit_error": None, "fit_time": 0.0, "score_time": 0.0, "n_test_samples": n_test}


def failure_result(ctx, n_test, error, fit_time=0.0, score_time=0.0):
    """The result of a candidate that failed on a fold with ``error`` (a traceback)."""
    result = new_result(n_test)
    result.update(fit_time=fit_time, score_time=score_time, fit_error=error)
    result["test_scores"] = _failure_scores(ctx)
    if ctx.return_train_score:
        result["train_scores"] = _failure_scores(ctx)
    return result


def _fail(candidates, out, ctx, fit_time, score_time, error):
    share = 1.0 / len(candidates)
    for c in candidates:
        n_test = out[c.index]["n_test_samples"]
        previous = out[c.index]
        out[c.index] = failure_result(
            ctx,
            n_test,
            error,
            previous["fit_time"] + fit_time * share,
            previous["score_time"] + score_time * share,
        )


def _fit_node(candidates, depth, data, out, ctx, counts):
    """Fit step ``depth`` once for ``candidates`` and evaluate everything below it."""
    # every candidate configures steps 0..depth identically: any one stands for all
    first = candidates[0]
    name, step = first.steps[depth]
    if depth == len(first.steps) - 1:
        for c in candidates:
            _fit_final(c, data, out, ctx)
        return
    if is_passthrough(step):
        for group in _groups(candidates, depth + 1):
            _fit_node(group, depth + 1, data, out, ctx, counts)
        return
    if len({c.ids[depth] for c in candidates}) > 1:
        # Same step but for max_epochs (share_keys): one training for all.
        _fit_epochs_node(candidates, depth, data, out, ctx, counts)
        return

    start = time.time()
    try:
        step = clone(step)
        Xt_fit, step = _fit_transform_step(
            step, data.X_fit, data.y_train, data.fit_params(first, name)
        )
    except Exception:
        if ctx.error_score == "raise":
            raise
        _fail(candidates, out, ctx, time.time() - start, 0.0, format_exc())
        return
    fit_time = time.time() - start
    start = time.time()
    Xt_test = _transform(step, data.X_test, ctx)
    Xt_score = _transform(step, data.X_score, ctx) if ctx.return_train_score else None
    score_time = time.time() - start
    counts[name] += 1
    share = 1.0 / len(candidates)
    for c in candidates:
        out[c.index]["fit_time"] += fit_time * share
        out[c.index]["score_time"] += score_time * share
    child = data.below(Xt_fit, Xt_test, Xt_score)
    del step, Xt_fit, Xt_test, Xt_score  # only `child` is needed below
    for group in _groups(candidates, depth + 1):
        _fit_node(group, depth + 1, child, out, ctx, counts)
    # `child` goes out of scope here: this prefix's outputs are freed as soon
    # as no remaining candidate needs them.


def _fit_epochs_node(candidates, depth, data, out, ctx, counts):
    """Step ``depth`` is one net trained for several ``max_epochs``: train it
    once for the longest, then evaluate each length's candidates below it."""
    name = candidates[0].steps[depth][0]
    by_length = {}
    for c in candidates:
        by_length.setdefault(c.steps[depth][1].net.max_epochs, []).append(c)
    steps = {epochs: group[0].steps[depth][1] for epochs, group in by_length.items()}

    def fit(step):
        return _fit_transform_step(step, data.X_fit, data.y_train, data.fit_params(
            by_length[max(steps)][0], name))

    start = time.time()
    try:
        fitted, fit_time = fit_epochs(steps, fit, data.X_fit)
    except DivergedError as exc:
        if ctx.error_score == "raise":
            raise
        # The lengths that end before the shared training diverged would not
        # have diverged on their own: each trains alone, as in GridSearchCV.
        error, fit_time = format_exc(), time.time() - start
        diverged = [c for epochs, group in by_length.items() if epochs >= exc.epoch
                    for c in group]
        _fail(diverged, out, ctx, fit_time, 0.0, error)
        for epochs, group in by_length.items():
            if epochs < exc.epoch:
                _fit_node(group, depth, data, out, ctx, counts)
        return
    except Exception:
        if ctx.error_score == "raise":
            raise
        _fail(candidates, out, ctx, time.time() - start, 0.0, format_exc())
        return
    counts[name] += 1
    share = 1.0 / len(candidates)
    for c in candidates:
        out[c.index]["fit_time"] += fit_time * share
    for epochs, group in by_length.items():
        step, Xt_fit = fitted.pop(epochs)
        start = time.time()
        Xt_test = _transform(step, data.X_test, ctx)
        Xt_score = _transform(step, data.X_score, ctx) if ctx.return_train_score else None
        score_time = time.time() - start
        for c in group:
            out[c.index]["score_time"] += score_time / len(group)
        child = data.below(Xt_fit, Xt_test, Xt_score)
        del step, Xt_fit, Xt_test, Xt_score
        for sub in _groups(group, depth + 1):
            _fit_node(sub, depth + 1, child, out, ctx, counts)
        del child


def _groups(candidates, depth):
    by_index = {c.index: c for c in candidates}
    ids = {c.index: c.keys for c in candidates}
    return [[by_index[i] for i in g] for g in group_by_prefix(ids, list(by_index), depth)]


def _fit_final(candidate, data, out, ctx):
    name, step = candidate.steps[-1]
    params = data.fit_params(candidate, name).get("fit", {})
    result = out[candidate.index]
    start = time.time()
    try:
        estimator = clone(step)
        if data.y_train is None:
            estimator.fit(data.X_fit, **params)
        else:
            estimator.fit(data.X_fit, data.y_train, **params)
    except Exception:
        if ctx.error_score == "raise":
            raise
        _fail([candidate], out, ctx, time.time() - start, 0.0, format_exc())
        return
    result["fit_time"] += time.time() - start
    start = time.time()
    # Pipeline.predict/score/... apply the final estimator to the transformed
    # data, so scoring it on the prefix outputs gives the pipeline's score.
    result["test_scores"] = _score_on(estimator, data.X_test, data.y_test, data.sp_test, ctx)
    result["score_time"] += time.time() - start
    if ctx.return_train_score:
        result["train_scores"] = _score_on(
            estimator, data.X_score, data.y_train, data.sp_train, ctx
        )


def fit_common_prefix(candidate, depth_stop, X, y, train, test, ctx):
    """Fit steps ``0..depth_stop-1`` (shared by every candidate) on one fold.

    Returns ``(X_fit, X_test, X_score)`` or None if a step failed, and
    ``(fit_time, score_time, error, fits per step name)``.
    """
    X_train, y_train = _safe_split(ctx.estimator, X, y, train)
    X_test, _ = _safe_split(ctx.estimator, X, y, test, train)
    X_fit, X_score = X_train, X_train
    fit_time = score_time = 0.0
    n_fitted = Counter()
    for name, step in candidate.steps[:depth_stop]:
        if is_passthrough(step):
            continue
        start = time.time()
        try:
            step = clone(step)
            params = fold_step_params(X, candidate.params.get(name, {}), train)
            X_fit, step = _fit_transform_step(step, X_fit, y_train, params)
        except Exception:
            if ctx.error_score == "raise":
                raise
            return None, (fit_time + time.time() - start, score_time, format_exc(), n_fitted)
        fit_time += time.time() - start
        n_fitted[name] += 1
        start = time.time()
        X_test = _transform(step, X_test, ctx)
        X_score = _transform(step, X_score, ctx) if ctx.return_train_score else None
        score_time += time.time() - start
    return (X_fit, X_test, X_score), (fit_time, score_time, None, n_fitted)


def evaluate_group(groups, depth, X, y, train, test, prefix, *, score_params, ctx):
    """One fold, one or more groups of candidates sharing steps ``0..depth-1``
    (each group also shares step ``depth``).

    ``prefix`` is :func:`fit_common_prefix`'s output for this fold (None when
    no step is shared). Returns ``{candidate index: result}`` and the fits
    per step name.
    """
    out = {c.index: new_result(len(test)) for group in groups for c in group}
    counts = Counter()
    X_train, y_train = _safe_split(ctx.estimator, X, y, train)
    X_test, y_test = _safe_split(ctx.estimator, X, y, test, train)
    if prefix is None:
        prefix = (X_train, X_test, X_train)
    data = _FoldData(
        X_fit=prefix[0],
        X_test=prefix[1],
        X_score=prefix[2],
        y_train=y_train,
        y_test=y_test,
        sp_train=_check_method_params(X, score_params, indices=train),
        sp_test=_check_method_params(X, score_params, indices=test),
        X=X,
        train=train,
    )
    del X_train, X_test
    for group in groups:
        _fit_node(group, depth, data, out, ctx, counts)
    return out, counts
