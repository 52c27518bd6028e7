"""The frozen head of a chain: run once over all rows, before the folds.

A step that uses its model as it is -- a :class:`~skchain.NeuralTransformer`
with a pretrained module or ``frozen=True`` -- learns nothing from the rows
it is fitted on: on every fold, its ``fit_transform`` of the training rows and
its ``transform`` of the test rows are its outputs for those rows. When such
steps head every candidate, the search computes their outputs for all rows
once, before any fold task starts, and each fold takes its rows from them.

Without this, each fold's task runs the model on its rows through the
frozen-output cache: on one process the first fold computes and the others
read, but tasks on several processes (loky, a dask cluster) start at once
and compute the same rows before either has stored them -- 1.0 to 1.33
passes per row on 2 workers and 3 folds, depending on timing, and one per
worker process without a shared disk cache. Here the rows are cut into
disjoint pieces, one task each: each row runs once, on some worker.

The pieces start at multiples of the steps' ``batch_size``, so each forward
pass holds the rows that one ``transform`` of all rows would batch together:
the outputs do not depend on the number of pieces, the backend, or which
worker ran a piece.
"""

import math
import time

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import clone
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import _num_samples

from .._neural import NeuralTransformer
from .._parallel import parallel_map
from ._fold import Candidate, is_passthrough

__all__ = ["frozen_depth", "frozen_outputs", "run_frozen_head"]


def _learns_nothing(step):
    """Whether ``step``'s fit on any rows gives the same outputs for every row."""
    return isinstance(step, NeuralTransformer) and step._uses_pretrained


def frozen_depth(candidate, common):
    """How many of the ``common`` shared steps of ``candidate`` form its frozen
    head: steps that learn nothing from the rows (or passthrough), with no fit
    parameters. 0 when no such step runs a model."""
    depth = runs = 0
    for name, step in candidate.steps[:common]:
        if is_passthrough(step):
            depth += 1
            continue
        params = candidate.params.get(name, {})
        if not _learns_nothing(step) or any(params.values()):
            break
        depth += 1
        runs += 1
    return depth if runs else 0


def _piece_rows(steps, n_samples, n_jobs):
    """Rows per piece: about one piece per worker, a multiple of every
    step's ``batch_size`` (so the forward passes are those of one call)."""
    unit = 1
    for _, step in steps:
        batch = getattr(step, "batch_size", None)
        if isinstance(batch, (int, np.integer)) and batch > 0:
            unit = math.lcm(unit, int(batch))
    n_workers = max(1, effective_n_jobs(n_jobs))
    return unit * max(1, math.ceil(n_samples / n_workers / unit))


def _run_piece(steps, X, y):
    start = time.time()
    for _, step in steps:
        if is_passthrough(step):
            continue
        step = clone(step)  # shares a pretrained module, never copies it
        X = step.fit_transform(X) if y is None else step.fit_transform(X, y)
    return X, time.time() - start


def frozen_outputs(steps, X, y, *, n_jobs=None, pre_dispatch="2*n_jobs"):
    """``(outputs of steps for every row of X, seconds of work)``.

    The steps (a frozen head, see :func:`frozen_depth`) run on disjoint
    pieces of rows as parallel tasks, each piece fitting its own clones.
    Raises what a step raises; the caller then runs the folds as usual.
    """
    n_samples = _num_samples(X)
    size = _piece_rows(steps, n_samples, n_jobs)
    tasks = []
    for start in range(0, n_samples, size):
        rows = slice(start, min(n_samples, start + size))
        piece_y = None if y is None else _safe_indexing(y, rows)
        tasks.append(((steps, _safe_indexing(X, rows), piece_y), {}))
    parts = parallel_map(_run_piece, tasks, n_jobs=n_jobs, pre_dispatch=pre_dispatch)
    outputs = [out for out, _ in parts]
    seconds = sum(s for _, s in parts)
    if len(outputs) == 1:
        return outputs[0], seconds
    if all(isinstance(out, np.ndarray) for out in outputs):
        return np.concatenate(outputs), seconds
    if all(hasattr(out, "iloc") for out in outputs):  # set_output(transform="pandas")
        import pandas as pd

        return pd.concat(outputs, axis=0), seconds
    raise TypeError(
        f"the frozen steps returned {type(outputs[0]).__name__} pieces, which "
        "cannot be joined"
    )


def run_frozen_head(candidates, common, X, y, counts, *, n_jobs=None, pre_dispatch="2*n_jobs"):
    """``(X, candidates, seconds)`` after the frozen head: its outputs for
    all rows, and the candidates with its steps as passthrough. As they
    were (and 0 seconds) when there is none, or when it fails: the folds
    then fit it and report the failure as they always have."""
    depth = frozen_depth(candidates[0], common)
    if depth == 0:
        return X, candidates, 0.0
    head = candidates[0].steps[:depth]
    try:
        Xt, seconds = frozen_outputs(head, X, y, n_jobs=n_jobs, pre_dispatch=pre_dispatch)
    except Exception:
        return X, candidates, 0.0
    passthrough = [(name, "passthrough") for name, _ in head]
    candidates = [
        Candidate(c.index, passthrough + list(c.steps[depth:]), c.ids, c.params, c.keys)
        for c in candidates
    ]
    for name, step in head:
        if not is_passthrough(step):
            counts[name] += 1  # fitted once for the whole search
    return Xt, candidates, seconds
