"""Hyper-parameter search over a whole pipeline that fits shared prefixes once.

:class:`ChainSearchCV` and :class:`ChainRandomizedSearchCV` are drop-in
replacements for :class:`~sklearn.model_selection.GridSearchCV` and
:class:`~sklearn.model_selection.RandomizedSearchCV` when the estimator is a
:class:`~sklearn.pipeline.Pipeline`. They keep scikit-learn's parameters,
scoring, refit, metadata routing and ``cv_results_`` formatting, and change
only how candidates are evaluated: on each fold, candidates are arranged in a
tree by their pipeline prefix (a step and its parameters, plus everything
before it), each node of the tree is fitted once, and its transformed data
feed every candidate below it. A grid over ``net -> PCA -> LogisticRegression``
trains one net per (fold, net setting) instead of one per (fold, candidate).

Modules: ``_prefix_tree`` (which candidates share which prefix: a pure
algorithm), ``_step_params`` (the fit parameters each step gets, routed or
not), ``_fold`` (the per-fold tasks), ``_search`` (the estimators).
"""

from ._search import ChainRandomizedSearchCV, ChainSearchCV

__all__ = ["ChainRandomizedSearchCV", "ChainSearchCV"]
