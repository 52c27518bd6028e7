"""The fit parameters each pipeline step receives, as ``Pipeline.fit`` gives them.

A chain search fits a candidate's steps one at a time instead of calling
``Pipeline.fit``, so it hands each step what ``Pipeline.fit(X, y, **params)``
would: with metadata routing enabled, what the step requested through
``set_fit_request`` (routed by the pipeline's own
:func:`~sklearn.utils.metadata_routing.process_routing`); without it, the
``step__param`` entries. Each step's parameters are a dict of method name
(``"fit"``, ``"fit_transform"``, ``"transform"``) to keyword arguments, the
shape of ``process_routing``'s output, and are split by fold like
``GridSearchCV`` splits the pipeline's.
"""

import sklearn
from sklearn.utils.metadata_routing import process_routing

from .._sklearn_compat import _check_method_params

__all__ = [
    "check_step_names",
    "check_transform_input",
    "fold_step_params",
    "routing_enabled",
    "step_params",
]

_METHODS = ("fit", "fit_transform", "transform")


def routing_enabled():
    """Whether ``sklearn.set_config(enable_metadata_routing=True)`` is in effect."""
    return bool(sklearn.get_config().get("enable_metadata_routing", False))


def check_step_names(params, step_names):
    """Without routing: every fit parameter must be ``step__param`` for a known step."""
    for key in params:
        head, _, param = key.partition("__")
        if head not in step_names or not param:
            raise ValueError(
                f"Fit parameter {key!r} names no pipeline step; pass fit parameters "
                f"as 'step__param' with a step among {list(step_names)}, or enable "
                "metadata routing and request them with set_fit_request."
            )


def check_transform_input(pipeline):
    """``Pipeline(transform_input=...)`` (routing only) cannot be honoured step by step."""
    if routing_enabled() and getattr(pipeline, "transform_input", None) is not None:
        raise ValueError(
            "Chain searches fit steps one at a time and cannot transform "
            "metadata through earlier steps: Pipeline(transform_input="
            f"{pipeline.transform_input!r}) is not supported. Use "
            "sklearn.model_selection.GridSearchCV for this pipeline."
        )


def step_params(pipeline, params):
    """``{step name: {method: kwargs}}`` for one candidate's pipeline.

    ``params`` are the pipeline's fit parameters (what ``GridSearchCV`` would
    pass to ``Pipeline.fit``), before any fold split.
    """
    names = [name for name, _ in pipeline.steps]
    if routing_enabled():
        if not params:
            return {name: {} for name in names}
        routed = process_routing(pipeline, "fit", **params)
        # `.get`, not `in`: process_routing's result for no metadata supports
        # neither `in` nor iteration (`in` would loop forever on it).
        per_step = {name: routed.get(name) for name in names}
        return {
            name: {} if step is None else {m: dict(step.get(m, {})) for m in _METHODS}
            for name, step in per_step.items()
        }
    per_step = {name: {} for name in names}
    for key, value in params.items():
        head, _, param = key.partition("__")
        if head in per_step:
            per_step[head][param] = value
    # Pipeline hands a step's parameters to whichever of fit / fit_transform
    # it calls; never to transform.
    return {name: {"fit": p, "fit_transform": p, "transform": {}} for name, p in per_step.items()}


def fold_step_params(X, params, train):
    """One step's ``{method: kwargs}`` with sample-aligned values cut to ``train``."""
    return {
        method: _check_method_params(X, kwargs, indices=train) for method, kwargs in params.items()
    }
