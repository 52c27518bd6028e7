"""Out-of-fold ``fit_transform``: the ``TargetEncoder`` contract for neural nets.

A net trained inside a pipeline and then asked for its outputs on the same rows
gives in-sample outputs: over-confident compared with what it produces on new
data, so the next step learns to trust them too much. Cross fitting fixes that:
each training row's output comes from a net trained on the other folds, and a
net trained on all rows serves later ``transform`` calls.

The folds and the final full fit are independent, so they run as one batch of
joblib tasks through :func:`skchain._parallel.parallel_map` (thread-limited per
worker, and on whatever joblib backend is active, dask included).
"""

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_method_params

from ._parallel import parallel_map

__all__ = ["resolve_cv", "cross_fit_transform"]

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


def _fold_seeds(random_state, n_folds):
    if random_state is None:
        return [None] * n_folds
    rng = check_random_state(random_state)
    return [int(s) for s in rng.randint(np.iinfo(np.int32).max, size=n_folds)]


def _check_partition(splits, n_samples):
    counts = np.zeros(n_samples, dtype=np.int64)
    for _, test in splits:
        np.add.at(counts, test, 1)
    if not np.all(counts == 1):
        raise ValueError(
            "cv must split the rows into folds where every row is held out exactly "
            "once (KFold, StratifiedKFold, GroupKFold, ...), so that each row gets "
            "one out-of-fold output; splitters such as ShuffleSplit do not."
        )


def _fit_task(estimator, X, y, train, test, fit_params, classes):
    """Fit on the ``train`` rows; return the held-out ``test`` rows' outputs, or
    the fitted estimator itself when there are none (the fit on all rows)."""
    params = _check_method_params(X, fit_params, train)
    y_train = None if y is None else y[train]
    fitted = estimator._fit(X[train], y_train, params, classes=classes)
    return fitted if test is None else fitted._run(X[test])


def cross_fit_transform(transformer, X, y, cv, fit_params, *, n_jobs=None):
    """Out-of-fold outputs for ``X``, and ``transformer`` fitted on all rows.

    Parameters
    ----------
    transformer : NeuralTransformer
        Already holds ``n_features_in_`` (and ``classes_`` for a classifier);
        it receives the learned state of the net trained on all rows.
    X : ndarray of shape (n_samples, n_features), float32
    y : ndarray of shape (n_samples,) or (n_samples, n_targets)
    cv : cross-validation splitter
    fit_params : dict
        Passed to each net's ``fit``; per-row arrays are sliced per fold.
    n_jobs : int or None

    Returns
    -------
    oof : ndarray of shape (n_samples, n_outputs)
    """
    splits = list(cv.split(X, y))
    _check_partition(splits, X.shape[0])
    classes = getattr(transformer, "classes_", None)
    base = clone(transformer).set_params(cv=None, n_jobs=None)
    seeds = _fold_seeds(transformer.random_state, len(splits))

    # The full fit goes first: it is the longest task and the others can fill
    # the remaining workers around it.
    everything = np.arange(X.shape[0])
    tasks = [((base, X, y, everything, None, fit_params, classes), {})]
    tasks += [
        ((clone(base).set_params(random_state=seed), X, y, train, test, fit_params, classes), {})
        for seed, (train, test) in zip(seeds, splits, strict=True)
    ]
    results = parallel_map(_fit_task, tasks, n_jobs=n_jobs)
    full, fold_outputs = results[0], results[1:]

    _adopt_fitted_state(transformer, full)
    width = len(transformer._feature_names_out)
    oof = np.empty((X.shape[0], width), dtype=np.float32)
    for (_, test), out in zip(splits, fold_outputs, strict=True):
        if out.shape[1] != width:
            raise ValueError(
                f"A fold's net gives {out.shape[1]} output columns but the net fitted "
                f"on all rows gives {width}; the module's output width must not "
                "depend on the training rows."
            )
        oof[test] = out
    return oof


def _adopt_fitted_state(transformer, fitted):
    """Move what ``fit`` learned from a fitted clone onto ``transformer``.

    The input description (``n_features_in_``, ``feature_names_in_``) was set
    by the caller's own validation, which saw the user's column names.
    """
    params = transformer.get_params(deep=False)
    keep = {"n_features_in_", "feature_names_in_"}
    for key, value in vars(fitted).items():
        if key in params or key in keep or key.startswith("_sklearn"):
            continue
        setattr(transformer, key, value)
