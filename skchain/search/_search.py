"""ChainSearchCV and ChainRandomizedSearchCV: scikit-learn's searches with a shared-prefix loop.

Size (about 600 lines): the two public searches and their shared mixin, about
280 of the lines docstrings; the loop's parts live beside it (the prefix tree
in :mod:`._prefix_tree`, a fold's work in :mod:`._fold`, the frozen head in
:mod:`._frozen`, training lengths in :mod:`._epochs`).

Everything but the evaluation loop is scikit-learn's: parameter validation,
scoring, ranking, refit selection, metadata routing and ``cv_results_``
formatting come from :class:`~sklearn.model_selection.GridSearchCV`'s own
methods (listed in :mod:`skchain._sklearn_compat`). ``fit`` is rewritten
only to replace the per-(candidate, fold) ``_fit_and_score`` loop by the
prefix tree (:mod:`._prefix_tree`, run fold by fold in :mod:`._fold`, after
a frozen head has run once over all rows in :mod:`._frozen`), and
to publish its fitted attributes only once the whole fit has succeeded.
"""

import time
from collections import Counter, defaultdict
from contextlib import nullcontext
from inspect import signature
from traceback import format_exc

from joblib import effective_n_jobs
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils import indexable

from .._parallel import parallel_map
from .._repr import DocLinkMixin
from .._sklearn_compat import (
    _check_method_params,
    _fit_context,
    _insert_error_scores,
    _warn_or_raise_about_fit_failures,
    scorer_dict,
)
from ._epochs import share_keys
from ._fold import (
    Candidate,
    Context,
    evaluate_group,
    failure_result,
    fit_common_prefix,
    is_passthrough,
)
from ._frozen import run_frozen_head
from ._prefix_tree import common_depth, group_by_prefix, prefix_ids
from ._step_params import check_step_names, check_transform_input, routing_enabled, step_params

__all__ = ["ChainRandomizedSearchCV", "ChainSearchCV"]

# What a successful fit sets; a new fit removes them all before publishing
# its own, so no attribute of an earlier fit survives next to new results.
_FITTED_ATTRIBUTES = (
    "best_estimator_",
    "best_index_",
    "best_params_",
    "best_score_",
    "cv_results_",
    "feature_names_in_",
    "multimetric_",
    "n_splits_",
    "prefix_fits_",
    "refit_time_",
    "scorer_",
)


class _ChainSearchMixin:
    """Replace BaseSearchCV's per-(candidate, fold) loop by a prefix tree."""

    def _check_pipeline(self):
        if not isinstance(self.estimator, Pipeline):
            raise TypeError(
                f"{type(self).__name__} searches a Pipeline, got "
                f"{type(self.estimator).__name__}. Wrap the estimator in "
                "sklearn.pipeline.make_pipeline(...) or use GridSearchCV."
            )
        if is_passthrough(self.estimator.steps[-1][1]):
            raise ValueError(
                "The pipeline's last step is 'passthrough'; a search needs a final "
                "estimator to score. Put an estimator last."
            )
        check_transform_input(self.estimator)

    def _candidates(self, candidate_params, X, fit_params):
        """One :class:`Candidate` per parameter dict, or a routing error.

        Returns the candidates whose fit parameters could be routed, and
        ``{index: traceback}`` for those whose could not (with routing, a
        grid may swap in a step that does not request what was passed): like
        ``GridSearchCV``, they fail with ``error_score`` on every fold.
        """
        # clone + set_params exactly as GridSearchCV does, so each candidate's
        # steps are configured by Pipeline's own set_params logic.
        pipes = [clone(self.estimator).set_params(**clone(p, safe=False)) for p in candidate_params]
        step_names = [[name for name, _ in pipe.steps] for pipe in pipes]
        if not routing_enabled():
            check_step_names(fit_params, {n for names in step_names for n in names})
        ids = prefix_ids(candidate_params, step_names)
        keys = share_keys(candidate_params, step_names, [pipe.steps for pipe in pipes], ids)
        candidates, failed = [], {}
        for index, (pipe, row, key) in enumerate(zip(pipes, ids, keys, strict=True)):
            try:
                params = step_params(pipe, fit_params)
            except Exception:
                if self.error_score == "raise":
                    raise
                failed[index] = format_exc()
                continue
            candidates.append(Candidate(index, pipe.steps, row, params, key))
        return candidates, failed

    def _evaluate(self, candidate_params, cv_splits, X, y, scorer, fit_params, score_params):
        """Evaluate every candidate on every split.

        Returns ``_fit_and_score``-style dicts in GridSearchCV's order
        (candidate-major) and a Counter of fits per step name.
        """
        n_splits = len(cv_splits)
        n_candidates = len(candidate_params)
        ctx = Context(self, scorer)
        candidates, failed = self._candidates(candidate_params, X, fit_params)
        out = [None] * (n_candidates * n_splits)
        for index, error in failed.items():
            for s, (_, test) in enumerate(cv_splits):
                out[index * n_splits + s] = failure_result(ctx, len(test), error)
        counts = Counter()
        if not candidates:
            return out, counts
        ids = [c.ids for c in candidates]
        common = common_depth(ids)

        # Phase 0: a frozen head (steps that learn nothing from the rows),
        # once over all rows; the folds cut its outputs (see ._frozen).
        X, candidates, frozen_time = run_frozen_head(
            candidates, common, X, y, counts, n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch
        )
        share = 1.0 / len(candidates)
        frozen_time *= share / n_splits

        # Phase 1: the steps every candidate shares, once per fold.
        prefixes = [None] * n_splits
        prefix_info = [(0.0, 0.0, None, Counter())] * n_splits
        if any(not is_passthrough(step) for _, step in candidates[0].steps[:common]):
            phase1 = parallel_map(
                fit_common_prefix,
                [
                    ((candidates[0], common, X, y, train, test, ctx), {})
                    for train, test in cv_splits
                ],
                n_jobs=self.n_jobs,
                pre_dispatch=self.pre_dispatch,
            )
            prefixes, prefix_info = map(list, zip(*phase1, strict=True))

        # Phase 2: per fold, tasks of groups of candidates sharing step `common`.
        by_position = {c.index: c for c in candidates}
        groups = [
            [by_position[i] for i in group]
            for group in group_by_prefix({c.index: c.keys for c in candidates}, by_position, common)
        ]
        # Groups are packed into a few tasks per fold (about 4 per worker in
        # all): a task costs shipping its fold's data and the context, which
        # for a cheap final step would outweigh fitting it.
        n_tasks = max(1, -(-4 * max(1, effective_n_jobs(self.n_jobs)) // n_splits))
        size = -(-len(groups) // min(n_tasks, len(groups)))
        packs = [groups[i : i + size] for i in range(0, len(groups), size)]
        tasks, keys = [], []
        for s, (train, test) in enumerate(cv_splits):
            if prefix_info[s][2] is not None:
                continue  # the shared prefix failed on this fold
            for pack in packs:
                tasks.append(
                    (
                        (pack, common, X, y, train, test, prefixes[s]),
                        {"score_params": score_params, "ctx": ctx},
                    )
                )
                keys.append(s)
        results = parallel_map(
            evaluate_group, tasks, n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch
        )
        del prefixes

        # A shared step's time on a fold is split evenly between the
        # candidates that used it.
        for s, (_, test) in enumerate(cv_splits):
            fit_time, score_time, error, n_fitted = prefix_info[s]
            counts += n_fitted
            if error is not None:
                for c in candidates:
                    out[c.index * n_splits + s] = failure_result(
                        ctx, len(test), error, fit_time * share + frozen_time,
                        score_time * share,
                    )
        for s, (group_out, group_counts) in zip(keys, results, strict=True):
            fit_time, score_time, _, _ = prefix_info[s]
            for index, result in group_out.items():
                result["fit_time"] += fit_time * share + frozen_time
                result["score_time"] += score_time * share
                out[index * n_splits + s] = result
            counts += group_counts
        return out, counts

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters, sharing fitted pipeline prefixes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
            Target; None for unsupervised pipelines.
        **params : dict of str -> object
            As in :class:`~sklearn.model_selection.GridSearchCV`. Without
            metadata routing, ``groups`` goes to the splitter, ``step__param``
            entries to that step's ``fit`` (sample-aligned ones are split by
            fold), and a ``sample_weight`` also to scorers that accept it.
            With ``sklearn.set_config(enable_metadata_routing=True)``, each
            parameter goes where it is requested: to the steps that request it
            with ``set_fit_request``, to the splitter (``groups``) and to the
            scorer (``set_score_request``).

        Returns
        -------
        self : object
            Fitted search.

        Notes
        -----
        The fitted attributes are set only when the whole search, refit
        included, has succeeded; before that, those of an earlier fit are
        removed. A search that raises (or is interrupted with Ctrl+C, which
        always ends it: ``KeyboardInterrupt`` is never recorded as a failed
        candidate) leaves no fitted attribute behind.
        """
        # An earlier fit's attributes must not survive beside a failed one.
        self._forget_fit()
        try:
            return self._fit(X, y, params)
        except BaseException:
            # KeyboardInterrupt included: no half-fitted search is left behind
            self._forget_fit()
            raise

    def _forget_fit(self):
        for attr in _FITTED_ATTRIBUTES:
            self.__dict__.pop(attr, None)

    def _fit(self, X, y, params):
        self._check_pipeline()
        scorers, refit_metric = self._get_scorers()
        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(params)

        cv_orig = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        self._checked_cv_orig = cv_orig
        self._check_input_parameters(X=X, y=y, split_params=routed.splitter.split)
        n_splits = cv_orig.get_n_splits(X, y, **routed.splitter.split)
        self.n_splits_ = n_splits  # GridSearchCV._run_search reads it

        all_params, all_out = [], []
        all_more_results = defaultdict(list)
        results = {}
        prefix_fits = Counter()

        def evaluate_candidates(candidate_params, cv=None, more_results=None, callback_ctx=None):
            nonlocal results
            cv = cv or cv_orig
            candidate_params = list(candidate_params)
            splits = list(cv.split(X, y, **routed.splitter.split))
            if len(splits) != n_splits:
                raise ValueError(
                    "cv.split and cv.get_n_splits return inconsistent results. "
                    f"Expected {n_splits} splits, got {len(splits)}"
                )
            if self.verbose > 0:
                print(
                    f"Fitting {len(splits)} folds for each of {len(candidate_params)} "
                    f"candidates, totalling {len(splits) * len(candidate_params)} fits"
                )
            if not candidate_params or not splits:
                raise ValueError(
                    "No fits were performed. Was the CV iterator empty? Were there no candidates?"
                )
            out, counts = self._evaluate(
                candidate_params,
                splits,
                X,
                y,
                scorers,
                routed.estimator.fit,
                routed.scorer.score,
            )
            _warn_or_raise_about_fit_failures(out, self.error_score)
            if callable(self.scoring):
                _insert_error_scores(out, self.error_score)
            all_params.extend(candidate_params)
            all_out.extend(out)
            prefix_fits.update(counts)
            for key, value in (more_results or {}).items():
                all_more_results[key].extend(value)
            results = self._format_results(all_params, n_splits, all_out, all_more_results)
            return results

        # scikit-learn >= 1.9 threads a callback context through _run_search.
        # The fit, search and refit tasks are reported; per-(candidate, split)
        # tasks are not, because no candidate's pipeline is fitted as a whole.
        root_ctx = None
        weight = params.get("sample_weight")
        metadata = None if weight is None else {"sample_weight": weight}
        if "callback_ctx" in signature(self._run_search).parameters:
            root_ctx = self._init_callback_context(
                max_subtasks=1 + (self.refit is not False)
            ).call_on_fit_task_begin(estimator=self, X=X, y=y, metadata=metadata)
            self._run_search(evaluate_candidates, callback_ctx=root_ctx)
        else:
            self._run_search(evaluate_candidates)

        # Everything below goes in `fitted`, published on self only at the end.
        fitted = {}
        base_names = [name for name, _ in self.estimator.steps[:-1]]
        fitted["prefix_fits_"] = {name: prefix_fits[name] for name in base_names}
        fitted["prefix_fits_"].update(prefix_fits)  # steps that only a grid's `steps` name

        first_test_score = all_out[0]["test_scores"]
        multimetric = isinstance(first_test_score, dict)
        fitted["multimetric_"] = multimetric
        if callable(self.scoring) and multimetric:
            self._check_refit_for_multimetric(first_test_score)
            refit_metric = self.refit

        if self.refit or not multimetric:
            best_index = self._select_best_index(self.refit, refit_metric, results)
            fitted["best_index_"] = best_index
            if not callable(self.refit):
                fitted["best_score_"] = results[f"mean_test_{refit_metric}"][best_index]
            fitted["best_params_"] = results["params"][best_index]

        if self.refit:
            best = clone(self.estimator).set_params(**clone(fitted["best_params_"], safe=False))
            fitted["refit_time_"] = self._refit_best(
                best, X, y, routed.estimator.fit, root_ctx, metadata
            )
            fitted["best_estimator_"] = best
            if hasattr(best, "feature_names_in_"):
                fitted["feature_names_in_"] = best.feature_names_in_

        names = scorer_dict(scorers)
        fitted["scorer_"] = scorers if names is None else names
        fitted["cv_results_"] = results
        self.__dict__.update(fitted)
        if root_ctx is not None:
            root_ctx.call_on_fit_task_end(estimator=self, X=X, y=y, metadata=metadata)
        return self

    def _refit_best(self, best, X, y, fit_params, root_ctx, metadata):
        """Fit ``best`` on all data; return the seconds it took."""
        if root_ctx is None:
            refit_ctx = nullcontext()
        else:
            subctx = root_ctx.subcontext(task_name="refit-with-best-params")
            refit_ctx = subctx.propagate_callback_context(best)
        with refit_ctx:
            if root_ctx is not None:
                subctx.call_on_fit_task_begin(estimator=self, X=X, y=y, metadata=metadata)
            start = time.time()
            if y is not None:
                best.fit(X, y, **fit_params)
            else:
                best.fit(X, **fit_params)
            seconds = time.time() - start
        if root_ctx is not None:
            subctx.call_on_fit_task_end(estimator=self, X=X, y=y, metadata=metadata)
        return seconds


class ChainSearchCV(DocLinkMixin, _ChainSearchMixin, GridSearchCV):
    """Exhaustive search over a pipeline's grid, fitting each shared prefix once.

    A drop-in for :class:`~sklearn.model_selection.GridSearchCV` when
    ``estimator`` is a :class:`~sklearn.pipeline.Pipeline`: same parameters,
    same fitted attributes, same ``cv_results_`` keys and, on a deterministic
    pipeline, the same scores and ranks. The difference is the work done: on
    each fold, candidates that configure steps ``0..i`` identically share one
    fit of those steps (``fit_transform`` on the training fold, ``transform``
    of the test fold), and only the steps after the first difference are
    fitted again. In ``net -> PCA -> LogisticRegression`` with 2 net settings,
    3 PCA sizes and 3 ``C`` values, each fold trains 2 nets and 6 PCAs instead
    of 18 of each.

    Work is spread with joblib (one task per fold and group of candidates
    that share the first varying step), so ``n_jobs`` and
    ``joblib.parallel_backend("dask")`` work as in scikit-learn; each task
    limits its torch/BLAS threads to its share of the cores. A prefix's
    outputs are freed once the candidates below it are scored. Steps that
    head every candidate and use their model as it is (a
    :class:`~skchain.NeuralTransformer` with a pretrained module or
    ``frozen=True``) run once over all rows, before the folds, in disjoint
    pieces of rows: one forward pass per row on any backend, a cluster's
    workers included.

    Read more in the :ref:`User Guide <chain_search>`.

    Parameters
    ----------
    estimator : Pipeline
        The pipeline to search. Parameters in ``param_grid`` use pipeline
        names (``"pca__n_components"``, ``"nt__net__lr"``, or a step name to
        replace the step).
    param_grid : dict or list of dicts
        As in :class:`~sklearn.model_selection.GridSearchCV`.
    scoring : str, callable, list, tuple or dict, default=None
        As in :class:`~sklearn.model_selection.GridSearchCV`, including
        multi-metric scoring. Scorers are applied to the fitted final step on
        the prefix's transformed test data, which is what the fitted pipeline
        would compute.
    n_jobs : int, default=None
        Number of joblib workers.
    refit : bool, str or callable, default=True
        As in :class:`~sklearn.model_selection.GridSearchCV`.
    cv : int, cross-validation generator or iterable, default=None
        As in :class:`~sklearn.model_selection.GridSearchCV`.
    verbose : int, default=0
        Prints the number of folds and candidates when positive.
    pre_dispatch : int or str, default="2*n_jobs"
        Passed to joblib.
    error_score : "raise" or numeric, default=np.nan
        Score given to a candidate whose fit fails. When a shared prefix step
        fails, every candidate below it fails on that fold.
    return_train_score : bool, default=False
        As in :class:`~sklearn.model_selection.GridSearchCV`. Train scores
        use each prefix step's ``transform`` of the training fold (what a
        fitted pipeline scores on), not its ``fit_transform`` output.

    Attributes
    ----------
    cv_results_ : dict of numpy (masked) ndarrays
        As in :class:`~sklearn.model_selection.GridSearchCV`. Shared work is
        split evenly: a prefix step's fit time on a fold is divided equally
        between the candidates that share it and added to their
        ``split``-level fit time (its transform of the test fold likewise to
        the score time), so summing ``mean_fit_time`` over candidates gives
        the time actually spent per fold.
    best_estimator_ : Pipeline
        Refitted on the whole data with ``best_params_`` (if ``refit``).
    best_score_ : float
        Mean cross-validated score of the best candidate.
    best_params_ : dict
        Parameters of the best candidate.
    best_index_ : int
        Index of the best candidate in ``cv_results_``.
    scorer_ : function or dict
        The scorer(s) used.
    n_splits_ : int
        Number of cross-validation splits.
    refit_time_ : float
        Seconds taken to refit the best pipeline.
    multimetric_ : bool
        Whether several scorers were used.
    prefix_fits_ : dict of str -> int
        How many times each non-final step, by name, was fitted during the
        search (over all folds, refit excluded; ``"passthrough"`` counts 0).
        Without sharing it would be ``n_candidates * n_splits_`` for every
        step; a frozen step heading every candidate counts 1 (run once over
        all rows). Steps named only in a grid's ``steps`` lists are added
        after the pipeline's own.

    See Also
    --------
    ChainRandomizedSearchCV : The same over sampled candidates.
    sklearn.model_selection.GridSearchCV : Fits every (candidate, fold) from scratch.

    Notes
    -----
    Sharing assumes that equal parameters give equal fits. With an unseeded
    stochastic step (``random_state=None``) all candidates below it share one
    random fit instead of drawing their own; seed such steps to get results
    identical to :class:`~sklearn.model_selection.GridSearchCV`.

    **Training length is shared.** Candidates that configure a
    :class:`~skchain.NeuralTransformer` step identically except for
    ``net__max_epochs`` (set in the grid) share one training per fold, for
    the longest length; each shorter length is evaluated with the weights
    copied at the end of its last epoch on the way (``net_.history`` cut to
    it), which are the weights of a training of that length. The sharing is
    off, and each length trains on its own, when it could not be exact:
    the net has callbacks of its own (``callbacks`` other than ``None``,
    ``[]`` or ``"disable"``: learning-rate schedules over the total length,
    ``EarlyStopping``), ``train_split`` not ``None``, ``warm_start=True`` or
    a ``max_epochs`` that is not a positive int; or the step cross-fits in
    ``fit_transform`` (``cv`` not ``None`` with a target-aligned output) or
    uses its net as it is. The refit trains the best candidate normally.

    The pipeline's own ``memory`` and ``verbose`` apply to the refit only:
    during the search, steps are fitted one at a time rather than through
    ``Pipeline.fit``.

    Metadata routing (``sklearn.set_config(enable_metadata_routing=True)``)
    works as in :class:`~sklearn.model_selection.GridSearchCV`: each step gets
    what it requested with ``set_fit_request``, the splitter ``groups``, the
    scorer what it requested with ``set_score_request``.
    ``Pipeline(transform_input=...)`` is not supported (``ValueError``).

    ``KeyboardInterrupt`` is never recorded as a failed candidate: it ends
    the search, and a search that fails or is interrupted keeps no fitted
    attribute, not even from an earlier fit.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.decomposition import PCA
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skchain import ChainSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> pipe = make_pipeline(StandardScaler(), PCA(), LogisticRegression())
    >>> grid = {"pca__n_components": [2, 3], "logisticregression__C": [0.1, 1.0, 10.0]}
    >>> search = ChainSearchCV(pipe, grid, cv=3).fit(X, y)
    >>> search.best_params_
    {'logisticregression__C': 10.0, 'pca__n_components': 3}
    >>> search.prefix_fits_  # 3 folds: one scaler and two PCAs per fold
    {'standardscaler': 3, 'pca': 6}
    """


class ChainRandomizedSearchCV(DocLinkMixin, _ChainSearchMixin, RandomizedSearchCV):
    """Randomized search over a pipeline, fitting each shared prefix once.

    A drop-in for :class:`~sklearn.model_selection.RandomizedSearchCV` on a
    :class:`~sklearn.pipeline.Pipeline`, evaluated like
    :class:`ChainSearchCV`. Sharing pays off when the expensive early steps
    take few distinct settings: sample them from lists (``[1e-3, 1e-2]``)
    and the cheap later steps from distributions.

    Read more in the :ref:`User Guide <chain_search>`.

    Parameters
    ----------
    estimator : Pipeline
        The pipeline to search.
    param_distributions : dict or list of dicts
        As in :class:`~sklearn.model_selection.RandomizedSearchCV`.
    n_iter : int, default=10
        Number of sampled candidates.
    scoring : str, callable, list, tuple or dict, default=None
        As in :class:`ChainSearchCV`.
    n_jobs : int, default=None
        Number of joblib workers.
    refit : bool, str or callable, default=True
        As in :class:`ChainSearchCV`.
    cv : int, cross-validation generator or iterable, default=None
        As in :class:`ChainSearchCV`.
    verbose : int, default=0
        Prints the number of folds and candidates when positive.
    pre_dispatch : int or str, default="2*n_jobs"
        Passed to joblib.
    random_state : int, RandomState instance or None, default=None
        Seeds the sampling of candidates.
    error_score : "raise" or numeric, default=np.nan
        As in :class:`ChainSearchCV`.
    return_train_score : bool, default=False
        As in :class:`ChainSearchCV`.

    Attributes
    ----------
    cv_results_ : dict of numpy (masked) ndarrays
        As in :class:`ChainSearchCV` (same time attribution).
    best_estimator_ : Pipeline
        Refitted on the whole data with ``best_params_`` (if ``refit``).
    best_score_ : float
        Mean cross-validated score of the best candidate.
    best_params_ : dict
        Parameters of the best candidate.
    best_index_ : int
        Index of the best candidate in ``cv_results_``.
    scorer_ : function or dict
        The scorer(s) used.
    n_splits_ : int
        Number of cross-validation splits.
    refit_time_ : float
        Seconds taken to refit the best pipeline.
    multimetric_ : bool
        Whether several scorers were used.
    prefix_fits_ : dict of str -> int
        How many times each non-final step was fitted during the search.

    See Also
    --------
    ChainSearchCV : Exhaustive grid version.

    Examples
    --------
    >>> from scipy.stats import loguniform
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.decomposition import PCA
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skchain import ChainRandomizedSearchCV
    >>> X, y = load_iris(return_X_y=True)
    >>> pipe = make_pipeline(PCA(), LogisticRegression())
    >>> space = {"pca__n_components": [2, 3], "logisticregression__C": loguniform(1e-2, 1e2)}
    >>> search = ChainRandomizedSearchCV(pipe, space, n_iter=6, cv=3, random_state=0)
    >>> search.fit(X, y).prefix_fits_["pca"]  # at most 2 distinct PCAs per fold
    6
    """
