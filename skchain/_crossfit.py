"""Out-of-fold ``fit_transform``: the ``TargetEncoder`` contract for neural nets.

A net trained inside a pipeline and then asked for its outputs on the same rows
gives in-sample outputs: over-confident compared with what it produces on new
data, so the next step learns to trust them too much. Cross fitting fixes that:
each training row's output comes from a net trained on the other folds, and a
net trained on all rows serves later ``transform`` calls.

This module knows nothing of nets. The estimator hands :func:`cross_fit` one
fitting routine (the same one its ``fit`` uses, as ``TargetEncoder`` does) and
one output routine; the folds and the fit on all rows are independent, so they
run as one batch of joblib tasks through :func:`skchain._parallel.parallel_map`
(thread-limited per worker, and on whatever joblib backend is active, dask
included).
"""

import numpy as np
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state

from ._parallel import parallel_map
from ._sklearn_compat import _check_method_params

__all__ = ["resolve_cv", "check_splits", "fold_seeds", "cross_fit"]

_AUTO_FOLDS = 5


def resolve_cv(cv, y, *, trains, classifier, aligned):
    """The splitter to cross-fit with, or ``None`` for a plain fit.

    ``"auto"`` cross-fits exactly when leaking is possible and cross fitting
    can fix it: the net is trained here, *and* sees a target, *and* the output
    means the same thing whichever net produced it (probabilities, logits,
    predictions: ``aligned``). A net used as it is (pretrained, frozen) gives
    the same output whatever rows ``fit`` saw, and a net trained without ``y``
    (an autoencoder) cannot leak a target; both skip the extra fits. Hidden
    layers of separately trained nets live in unrelated coordinates (units
    permute, directions rotate), so out-of-fold embeddings stitched together
    from five nets would be noise to the next step.
    """
    if not trains or y is None:
        return None
    if isinstance(cv, str) and cv == "auto":
        if not aligned:
            return None
        cv = _AUTO_FOLDS
    if cv is None:
        return None
    if not aligned:
        raise ValueError(
            "cv cross-fits the net, but the selected output is a hidden layer or "
            "embedding: each fold's net learns its own coordinates, so out-of-fold "
            "embeddings from different nets cannot be stacked into one feature "
            "matrix. Use cv='auto' or cv=None for embeddings and layers, or "
            "output='proba', 'logits' or 'predict' to cross-fit."
        )
    return check_cv(cv, y, classifier=classifier)


def check_splits(cv, X, y, groups=None):
    """The folds of ``cv`` on ``X``, checked to hold each row out exactly once.

    ``groups`` goes to the splitter, so ``GroupKFold`` keeps each group whole.
    """
    splits = list(cv.split(X, y, groups))
    counts = np.zeros(X.shape[0], dtype=np.int64)
    for _, test in splits:
        np.add.at(counts, test, 1)
    if not np.all(counts == 1):
        raise ValueError(
            "cv must split the rows into folds where every row is held out exactly "
            "once (KFold, StratifiedKFold, GroupKFold, ...), so that each row gets "
            "one out-of-fold output; splitters such as ShuffleSplit do not."
        )
    return splits


def fold_seeds(random_state, n_folds):
    """One int seed per fold drawn from ``random_state`` (``None``: unseeded)."""
    if random_state is None:
        return [None] * n_folds
    rng = check_random_state(random_state)
    return [int(s) for s in rng.randint(np.iinfo(np.int32).max, size=n_folds)]


def _task(fit, output, X, y, train, test, fit_params, seed):
    """Fit on the ``train`` rows; return the held-out ``test`` rows' outputs, or
    the fitted state itself when there are none (the fit on all rows)."""
    params = _check_method_params(X, fit_params, train)
    y_train = None if y is None else y[train]
    state = fit(X[train], y_train, params, seed)
    return state if test is None else output(state, X[test])


def cross_fit(fit, output, X, y, splits, fit_params, *, seed, fold_seeds, n_jobs=None):
    """Fit on all rows and out of fold, in one batch of joblib tasks.

    Parameters
    ----------
    fit : callable ``fit(X, y, fit_params, seed) -> state``
        The estimator's one fitting routine; must be picklable for process
        backends (a module-level function or a bound method).
    output : callable ``output(state, X) -> ndarray``
        The outputs of a fitted state.
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples, ...) or None
    splits : list of (train, test)
        From :func:`check_splits`.
    fit_params : dict
        Passed to every fit; per-row arrays are sliced with the rows.
    seed : int or None
        Seed of the fit on all rows.
    fold_seeds : list of (int or None)
        One seed per fold.
    n_jobs : int or None

    Returns
    -------
    state : the fit on all rows
    oof : ndarray of shape (n_samples, n_outputs)
    """
    everything = np.arange(X.shape[0])
    # The full fit goes first: it is the longest task and the others can fill
    # the remaining workers around it.
    tasks = [((fit, output, X, y, everything, None, fit_params, seed), {})]
    tasks += [
        ((fit, output, X, y, train, test, fit_params, s), {})
        for s, (train, test) in zip(fold_seeds, splits, strict=True)
    ]
    results = parallel_map(_task, tasks, n_jobs=n_jobs)
    state, fold_outputs = results[0], results[1:]
    width = fold_outputs[0].shape[1]
    oof = np.empty((X.shape[0], width), dtype=fold_outputs[0].dtype)
    for (_, test), out in zip(splits, fold_outputs, strict=True):
        if out.shape[1] != width:
            raise ValueError(
                f"Fold nets give {width} and {out.shape[1]} output columns; the "
                "module's output width must not depend on the training rows."
            )
        oof[test] = out
    return state, oof
