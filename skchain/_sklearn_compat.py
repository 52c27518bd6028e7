"""Every private scikit-learn name skchain relies on, in one place.

scikit-learn moves and renames private helpers between releases. skchain
uses public API wherever one exists; what remains is imported here and only
here, each with why it is needed and since which release it exists under this
name and signature, so that a new (or the oldest supported) scikit-learn
release breaks one file, visibly.

``setup.cfg`` declares ``scikit-learn>=1.9`` (the oldest release the suite
runs with, ``.ci/oldest``): every name below exists there.

Private *methods* that the chain searches inherit from
:class:`~sklearn.model_selection.GridSearchCV` and call from their own
``fit`` (a rewrite of ``BaseSearchCV.fit`` with a different evaluation loop)
cannot be imported; they are listed here so that they are checked together:

- ``_get_scorers``, ``_check_refit_for_multimetric``, ``_select_best_index``,
  ``_format_results``, ``_get_routed_params_for_fit``,
  ``_check_input_parameters``, ``_run_search(evaluate_candidates)``: the
  pieces of ``BaseSearchCV.fit`` around the evaluation loop, reused so that
  scoring, ranking, refit selection, routing and ``cv_results_`` formatting
  stay scikit-learn's own. All exist in 1.6 with the signatures used here;
  ``_get_scorers()`` took a ``convert_multimetric`` argument in 1.4, and
  ``_get_routed_params_for_fit`` appeared in 1.4 with metadata routing.
- ``_init_callback_context`` and ``_run_search(..., callback_ctx=)``: the
  fit-callback API of scikit-learn >= 1.9; used only when ``_run_search``
  accepts ``callback_ctx`` (checked with :func:`inspect.signature`).
"""

# sklearn.base._fit_context (since 1.3): the decorator every scikit-learn
# estimator's `fit` wears; it validates constructor parameters against
# `_parameter_constraints` and sets `skip_parameter_validation` for nested
# calls. The public alternative, calling `get_params` checks by hand, would
# duplicate scikit-learn's validation messages.
from sklearn.base import _fit_context

# sklearn.model_selection._validation (all three used by BaseSearchCV.fit):
# - _score (signature with `score_params` since 1.4): scores one fitted
#   estimator with a scorer or a _MultimetricScorer, turning scoring errors
#   into `error_score` with scikit-learn's warning. Reused so a chain search's
#   scores and warnings are GridSearchCV's, bit for bit.
# - _insert_error_scores (since 0.24): fills failed fits' scores for a
#   callable scorer returning a dict, once its keys are known.
# - _warn_or_raise_about_fit_failures (since 1.0): the FitFailedWarning /
#   "all fits failed" ValueError with scikit-learn's exact wording.
from sklearn.model_selection._validation import (
    _insert_error_scores,
    _score,
    _warn_or_raise_about_fit_failures,
)

# sklearn.utils._param_validation (since 1.2): the constraint objects of
# `_parameter_constraints` (HasMethods, Interval, StrOptions) and the
# `validate_params` decorator for functions. scikit-learn has no public
# parameter-validation API; estimators outside it use these to validate like
# scikit-learn's own and to pass `check_param_validation`.
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params

# sklearn.utils.metaestimators._safe_split (since 0.18): one fold of (X, y),
# slicing a precomputed kernel on both axes when the estimator is pairwise
# (`tags.input_tags.pairwise`), exactly as cross-validation does.
from sklearn.utils.metaestimators import _safe_split

# sklearn.utils.validation:
# - _check_method_params (since 1.4; `_check_fit_params` before): selects the
#   rows of sample-aligned fit/score parameters for one fold, leaving other
#   values as they are -- the rule GridSearchCV and cross_validate apply.
# - _check_feature_names (a function since 1.6; a BaseEstimator method
#   before): sets or checks `feature_names_in_` for estimators that cannot
#   call `validate_data` (their X is not an array, e.g. a list of texts).
# - _check_feature_names_in (since 1.0): the input_features rule of
#   `get_feature_names_out` (None -> feature_names_in_ or x0..xn).
# - _check_sample_weight (since 0.24): validates a `sample_weight` against X
#   (length, dtype, non-negative) with scikit-learn's messages.
from sklearn.utils.validation import (
    _check_feature_names,
    _check_feature_names_in,
    _check_method_params,
    _check_sample_weight,
)

__all__ = [
    "HasMethods",
    "Interval",
    "StrOptions",
    "_check_feature_names",
    "_check_feature_names_in",
    "_check_method_params",
    "_check_sample_weight",
    "_fit_context",
    "_insert_error_scores",
    "_safe_split",
    "_score",
    "_warn_or_raise_about_fit_failures",
    "scorer_dict",
    "validate_params",
]


def scorer_dict(scorer):
    """The ``{name: scorer}`` dict behind a multi-metric scorer, else None.

    ``BaseSearchCV._get_scorers`` wraps several metrics in a private
    ``_MultimetricScorer`` (since 1.4 with this ``_scorers`` attribute);
    ``scorer_`` and failure scores need its names. A plain dict (a callable
    ``scoring`` may return one) is returned as is.
    """
    if isinstance(scorer, dict):
        return scorer
    return getattr(scorer, "_scorers", None)
