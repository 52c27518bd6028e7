"""Dask in, dask out: how every wrapper's public methods take dask collections.

A wrapper's ``transform``/``predict``/``predict_proba`` decorated with
:func:`blockwise` returns, for a dask array or DataFrame, a lazy dask array:
the method itself (its NumPy path, checks included) runs on each block when
the result is computed, so memory is bounded by the blocks and a bad value
raises the NumPy path's error for its block. The result's shape and dtype
come from the fitted state (``output``), never from running the model on
made-up rows, and each computed block is checked against them.

``fit`` decorated with :func:`dask_fit` either streams -- a model used as it
is learns nothing from the rows: the first rows are computed (for their
shape, names and a probe run) and nothing else -- or refuses the collection,
saying how to fit instead. Which one is each estimator's choice.

The input side (what a dask collection must be, its blocks as NumPy) is
:class:`skchain._inputs.DaskRows`.
"""

import functools

from sklearn import get_config
from sklearn.utils.validation import check_is_fitted

from ._cache import streaming
from ._inputs import check_dask_rows, is_dask

__all__ = ["blockwise", "dask_fit", "dask_fit_transform"]

# Rows computed by a streaming fit: enough for the probes fits run.
_FIT_ROWS = 2


def blockwise(output, *, texts=False):
    """Decorate a public method of ``X``: a dask ``X`` gives a lazy dask array.

    ``output(estimator)`` returns ``(tail, dtype)``: the result has shape
    ``(n_samples, *tail)`` and that dtype, as the NumPy path returns it.
    ``texts``: ``X`` holds texts, not numeric rows.
    """

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, X, *args, **kwargs):
            if not is_dask(X):
                return method(self, X, *args, **kwargs)
            check_is_fitted(self)
            rows = check_dask_rows(self, X, texts=texts)
            if method.__name__ == "transform":
                _check_default_output(self)
            tail, dtype = output(self)
            # The public method, by name: the blocks are NumPy (its own path),
            # and the result pickles (to a cluster) by reference to it.
            run = functools.partial(_call, self, method.__name__, args, kwargs)
            return rows.map_blocks(run, tail, dtype, name=f"{type(self).__name__}.{method.__name__}")

        return wrapper

    return decorate


def _call(estimator, name, args, kwargs, X):
    # One block of data presumed larger than memory: the frozen-output cache
    # keeps none of it in memory (a disk cache still does), so memory stays
    # bounded by the blocks.
    with streaming():
        return getattr(estimator, name)(X, *args, **kwargs)


def _check_default_output(estimator):
    """set_output would wrap the lazy array in pandas, computing all of it."""
    config = getattr(estimator, "_sklearn_output_config", {})
    dense = config.get("transform", get_config()["transform_output"])
    if dense != "default":
        raise ValueError(
            f"{type(estimator).__name__} has set_output(transform={dense!r}), which "
            "would compute the whole dask result into one container. For dask input "
            "use set_output(transform='default') and, for a dask DataFrame, "
            "dask.dataframe.from_dask_array(Xt, columns=est.get_feature_names_out())."
        )


def dask_fit(refusal, *, texts=False):
    """Decorate ``fit(X, y=None, **params)`` for a dask ``X``.

    ``refusal(estimator)`` is ``None`` when the estimator learns nothing from
    the rows: ``fit`` then runs on the first rows only (their shape and names
    stand for all; the other rows are checked by ``transform``), with ``y``
    and per-row parameters cut to match after their length is checked.
    Otherwise it is the reason the rows must be in memory, and ``fit`` raises
    a ``TypeError`` that says so and how to fit instead.
    """

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, X, *args, **params):
            if not is_dask(X):
                return method(self, X, *args, **params)  # its own signature's errors
            y = args[0] if args else params.pop("y", None)
            who = type(self).__name__
            reason = refusal(self)
            if reason is not None:
                raise TypeError(
                    f"{who}.fit does not take a dask collection: {reason}, so all "
                    "rows must be in memory. Fit on X.compute(), or on a subsample "
                    "that fits (X[:n].compute()); transform and predict then take "
                    "the dask array block by block."
                )
            rows = check_dask_rows(self, X, texts=texts, reset=True)
            n, k = len(rows), min(len(rows), _FIT_ROWS)
            y = _first(y, n, k, "y", who)
            params = {key: _first(v, n, k, key, who) for key, v in params.items()}
            return method(self, rows.head(k), y, **params)

        return wrapper

    return decorate


def _first(values, n, k, name, who):
    """The first ``k`` of ``n`` per-row ``values`` (``None`` and scalars as they are)."""
    if values is None or not hasattr(values, "__len__") or isinstance(values, (str, dict)):
        return values
    if len(values) != n:
        raise ValueError(
            f"X has {n} rows but {name} has {len(values)}; {who}.fit needs one "
            f"{name} value per row."
        )
    head = values.iloc[:k] if hasattr(values, "iloc") else values[:k]
    return head.compute() if is_dask(head) else head


def dask_fit_transform(method):
    """``fit_transform`` for a dask ``X``: ``fit(X, y).transform(X)``, each
    one taking the collection its own way (a streaming fit, a lazy result)."""

    @functools.wraps(method)
    def wrapper(self, X, *args, **params):
        if not is_dask(X):
            return method(self, X, *args, **params)
        return self.fit(X, *args, **params).transform(X)

    return wrapper
