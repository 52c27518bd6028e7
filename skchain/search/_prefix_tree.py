"""Which candidates of a pipeline search share which fitted prefix.

A pure algorithm over parameter dicts, apart from any estimator: candidate
``c`` gets one integer per pipeline step, ``ids[c][d]``, naming the prefix
"steps ``0..d`` configured as ``c`` configures them". Two candidates with the
same id at depth ``d`` can share one fit of steps ``0..d`` on a fold; the
search fits each distinct prefix once and feeds its outputs to every
candidate below it.
"""

import math
from collections import defaultdict

import numpy as np

__all__ = ["common_depth", "group_by_prefix", "prefix_ids", "same_value", "step_signatures"]


def same_value(a, b):
    """Whether two parameter values certainly configure a step identically.

    A false "different" only costs a fit that could have been shared; a
    false "same" would give candidates a fit that is not theirs. So:

    - the same object, or equal values of the same type (``1`` and ``1.0``
      differ; ``nan`` equals ``nan``);
    - arrays: same dtype, shape and elements;
    - lists, tuples and dicts: element by element with this rule;
    - estimators (anything with ``get_params``): only the same object, since
      state outside ``get_params`` (metadata requests, what a custom
      ``__sklearn_clone__`` keeps) may differ between equal-looking ones.
    """
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if hasattr(a, "get_params"):
        return False
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        equal_nan = a.dtype.kind in "fc"
        return bool(np.array_equal(a, b, equal_nan=equal_nan))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # objects whose == is not a truth value
        return False


def _same_items(a, b):
    return len(a) == len(b) and all(
        ka == kb and same_value(va, vb) for (ka, va), (kb, vb) in zip(a, b, strict=True)
    )


def step_signatures(params, step_names):
    """Split one candidate's parameters by the pipeline step they configure.

    Returns one sorted list of ``(key, value)`` per step. A key ``"step"``
    (the step replaced as a whole) and ``"step__param"`` both belong to
    ``step``. Keys that name no step (``memory``, ``verbose``, ``steps``) go
    on the first step, so they never let two candidates share anything.
    """
    signatures = [[] for _ in step_names]
    for key in sorted(params):
        head = key.split("__", 1)[0]
        depth = step_names.index(head) if head in step_names else 0
        signatures[depth].append((key, params[key]))
    return signatures


def prefix_ids(candidate_params, step_names):
    """``ids[c][d]``: an integer naming candidate ``c``'s prefix up to step ``d``.

    Parameters
    ----------
    candidate_params : list of dict
        Each candidate's parameters, as a search's ``cv_results_["params"]``.
    step_names : list of list of str
        Each candidate's step names (a grid may replace ``steps`` as a whole,
        so they may differ between candidates).

    Returns
    -------
    ids : list of list of int
        Two candidates have the same id at depth ``d`` exactly when they have
        the same id at ``d - 1`` and configure step ``d`` identically
        (:func:`same_value` on every parameter of that step). Ids are numbered
        in order of first appearance.
    """
    ids = []
    # (parent id, depth) -> [(signature, id)]: the prefixes seen so far
    seen = defaultdict(list)
    n_ids = 0
    for params, names in zip(candidate_params, step_names, strict=True):
        parent = -1
        row = []
        for depth, signature in enumerate(step_signatures(params, names)):
            known = seen[parent, depth]
            prefix = next((i for s, i in known if _same_items(s, signature)), None)
            if prefix is None:
                prefix = n_ids
                n_ids += 1
                known.append((signature, prefix))
            row.append(prefix)
            parent = prefix
        ids.append(row)
    return ids


def common_depth(ids):
    """How many leading steps all candidates configure identically.

    Capped at one less than the shortest pipeline: the final step is fitted
    per candidate. 0 for no candidates.
    """
    if not ids:
        return 0
    n_steps = min(len(row) for row in ids)
    depth = 0
    while depth < n_steps - 1 and len({row[depth] for row in ids}) == 1:
        depth += 1
    return depth


def group_by_prefix(ids, indices, depth):
    """Split candidate ``indices`` by their prefix id at ``depth``.

    Groups come in order of first appearance, candidates in their given order.
    """
    groups = {}
    for index in indices:
        groups.setdefault(ids[index][depth], []).append(index)
    return list(groups.values())
