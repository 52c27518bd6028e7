"""Hyper-parameter search over a whole pipeline that fits shared prefixes once.

:class:`ChainSearchCV` and :class:`ChainRandomizedSearchCV` are drop-in
replacements for :class:`~sklearn.model_selection.GridSearchCV` and
:class:`~sklearn.model_selection.RandomizedSearchCV` when the estimator is a
:class:`~sklearn.pipeline.Pipeline`. They keep scikit-learn's parameters,
scoring, refit and ``cv_results_`` formatting (everything but the evaluation
loop is inherited), and change only how candidates are evaluated: on each
fold, candidates are arranged in a tree by their pipeline prefix (a step and
its parameters, plus everything before it), each node of the tree is fitted
once, and its transformed data feed every candidate below it. A grid over
``net -> PCA -> LogisticRegression`` trains one net per (fold, net setting)
instead of one per (fold, candidate).
"""

import time
import warnings
from collections import Counter, defaultdict
from contextlib import nullcontext
from inspect import signature
from traceback import format_exc

from sklearn.base import _fit_context, clone, is_classifier
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, check_cv
from sklearn.model_selection._validation import (
    _insert_error_scores,
    _score,
    _warn_or_raise_about_fit_failures,
)
from sklearn.pipeline import Pipeline
from sklearn.utils import indexable
from sklearn.utils.metadata_routing import _routing_enabled
from sklearn.utils.metaestimators import _safe_split
from sklearn.utils.validation import _check_method_params, _num_samples

from ._parallel import parallel_map

__all__ = ["ChainSearchCV", "ChainRandomizedSearchCV"]


# --------------------------------------------------------------------------
# Candidate tree: which candidates share which prefix
# --------------------------------------------------------------------------


def _same_value(a, b):
    """Whether two parameter values configure a step identically."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # arrays, estimators without __eq__ ...
        return False


def _same_items(a, b):
    return len(a) == len(b) and all(
        ka == kb and _same_value(va, vb) for (ka, va), (kb, vb) in zip(a, b, strict=True)
    )


def _step_signatures(params, step_names):
    """Split one candidate's parameters by the pipeline step they configure.

    Parameters that name no step (``memory``, ``verbose``) are put on the
    first step, so they never let two candidates share anything they should
    not.
    """
    signatures = [[] for _ in step_names]
    for key in sorted(params):
        head = key.split("__", 1)[0]
        depth = step_names.index(head) if head in step_names else 0
        signatures[depth].append((key, params[key]))
    return signatures


def _prefix_ids(candidate_params, step_names):
    """``ids[c][d]``: an integer naming candidate ``c``'s prefix up to step ``d``.

    ``step_names[c]`` are candidate ``c``'s step names (a grid may replace
    ``steps`` as a whole). Two candidates have the same id at depth ``d``
    exactly when they configure steps ``0..d`` identically, so the step-``d``
    fit can be shared; a differing ``steps`` list differs at depth 0.
    """
    ids = []
    classes = []  # (parent id, depth, signature) of each prefix seen so far
    for params, names in zip(candidate_params, step_names, strict=True):
        signatures = _step_signatures(params, names)
        parent = -1
        row = []
        for depth, step_signature in enumerate(signatures):
            class_id = next(
                (
                    i
                    for i, (p, d, s) in enumerate(classes)
                    if p == parent and d == depth and _same_items(s, step_signature)
                ),
                None,
            )
            if class_id is None:
                classes.append((parent, depth, step_signature))
                class_id = len(classes) - 1
            row.append(class_id)
            parent = class_id
        ids.append(row)
    return ids


def _common_depth(ids):
    """How many leading steps all candidates configure identically.

    The final estimator is always fitted per candidate, hence the cap.
    """
    depth = 0
    n_steps = min(len(row) for row in ids)
    while depth < n_steps - 1 and len({row[depth] for row in ids}) == 1:
        depth += 1
    return depth


def _group(members, depth):
    """Group ``members`` (dicts with a ``"ids"`` row) by their prefix id at ``depth``."""
    groups = {}
    for member in members:
        groups.setdefault(member["ids"][depth], []).append(member)
    return list(groups.values())


# --------------------------------------------------------------------------
# Work done inside one joblib task
# --------------------------------------------------------------------------


def _split_fit_params(fit_params, step_names):
    """Route ``step__param`` fit parameters to their step, as Pipeline does."""
    routed = {name: {} for name in step_names}
    for key, value in fit_params.items():
        head, _, param = key.partition("__")
        if head not in routed or not param:
            raise ValueError(
                f"Fit parameter {key!r} names no pipeline step; pass fit parameters "
                f"as 'step__param' with a step among {list(step_names)}."
            )
        routed[head][param] = value
    return routed


def _fit_transform_step(step, X, y, params):
    """Fit one prefix step on the training data as ``Pipeline._fit`` does."""
    if hasattr(step, "fit_transform"):
        Xt = step.fit_transform(X, y, **params)
    else:
        Xt = step.fit(X, y, **params).transform(X)
    return Xt, step


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


def _score_on(estimator, X, y, sample_params, ctx):
    if not isinstance(X, _Failed):
        return _score(estimator, X, y, ctx.scorer, sample_params, ctx.error_score)
    warnings.warn(
        "Scoring failed. The score on this train-test partition for these parameters "
        f"will be set to {ctx.error_score}. Details: \n{X.error}",
        UserWarning,
    )
    return _failure_scores(ctx)


def _is_passthrough(step):
    return step is None or (isinstance(step, str) and step == "passthrough")


class _Context:
    """Everything a task needs besides its data; pickled once per task."""

    def __init__(self, search, scorer):
        self.estimator = search.estimator  # for pairwise-aware splitting
        self.scorer = scorer
        self.error_score = search.error_score
        self.return_train_score = search.return_train_score


def _failure_scores(ctx):
    if isinstance(ctx.scorer, dict) or hasattr(ctx.scorer, "_scorers"):
        names = ctx.scorer._scorers if hasattr(ctx.scorer, "_scorers") else ctx.scorer
        return {name: ctx.error_score for name in names}
    return ctx.error_score


def _fail(members, out, ctx, fit_time, score_time, error):
    share = 1.0 / len(members)
    for member in members:
        result = out[member["index"]]
        result["fit_time"] += fit_time * share
        result["score_time"] += score_time * share
        result["fit_error"] = error
        result["test_scores"] = _failure_scores(ctx)
        if ctx.return_train_score:
            result["train_scores"] = _failure_scores(ctx)


def _fit_node(members, depth, data, out, ctx, counts):
    """Fit step ``depth`` once for ``members`` and evaluate everything below it.

    ``data`` is ``(X_fit, X_test, X_train_score, y_train, y_test, fit_params,
    score_params_train, score_params_test)``: the inputs of step ``depth``.
    ``X_fit`` is the previous step's ``fit_transform`` output (what Pipeline
    fits the next step on); ``X_train_score`` its ``transform`` of the
    training data (what a fitted Pipeline scores on), which differs for
    cross-fitting steps and is only kept when train scores are wanted.
    """
    X_fit, X_test, X_score, y_train, _, fit_params, *_ = data
    # every member configures steps 0..depth identically: any one stands for all
    name, step = members[0]["steps"][depth]
    if depth == len(members[0]["steps"]) - 1:
        for member in members:
            _fit_final(member, data, out, ctx)
        return
    if _is_passthrough(step):
        for group in _group(members, depth + 1):
            _fit_node(group, depth + 1, data, out, ctx, counts)
        return

    start = time.time()
    try:
        step = clone(step)
        Xt_fit, step = _fit_transform_step(step, X_fit, y_train, fit_params[name])
    except Exception:
        if ctx.error_score == "raise":
            raise
        _fail(members, out, ctx, time.time() - start, 0.0, format_exc())
        return
    fit_time = time.time() - start
    start = time.time()
    Xt_test = _transform(step, X_test, ctx)
    Xt_score = _transform(step, X_score, ctx) if ctx.return_train_score else None
    score_time = time.time() - start
    counts[name] += 1
    share = 1.0 / len(members)
    for member in members:
        out[member["index"]]["fit_time"] += fit_time * share
        out[member["index"]]["score_time"] += score_time * share
    child_data = (Xt_fit, Xt_test, Xt_score, *data[3:])
    del step  # only its outputs are needed below
    for group in _group(members, depth + 1):
        _fit_node(group, depth + 1, child_data, out, ctx, counts)
    # child_data goes out of scope here: this prefix's outputs are freed as
    # soon as no remaining candidate needs them.


def _fit_final(member, data, out, ctx):
    X_fit, X_test, X_score, y_train, y_test, fit_params, sp_train, sp_test = data
    name, step = member["steps"][-1]
    result = out[member["index"]]
    start = time.time()
    try:
        estimator = clone(step)
        if y_train is None:
            estimator.fit(X_fit, **fit_params[name])
        else:
            estimator.fit(X_fit, y_train, **fit_params[name])
    except Exception:
        if ctx.error_score == "raise":
            raise
        _fail([member], out, ctx, time.time() - start, 0.0, format_exc())
        return
    result["fit_time"] += time.time() - start
    start = time.time()
    # Pipeline.predict/score/... apply the final estimator to the transformed
    # data, so scoring it on the prefix outputs gives the pipeline's score.
    result["test_scores"] = _score_on(estimator, X_test, y_test, sp_test, ctx)
    result["score_time"] += time.time() - start
    if ctx.return_train_score:
        result["train_scores"] = _score_on(estimator, X_score, y_train, sp_train, ctx)


def _new_result(ctx, n_test):
    return {"fit_error": None, "fit_time": 0.0, "score_time": 0.0, "n_test_samples": n_test}


def _fit_prefix(steps, depth_stop, X, y, train, test, fit_params, ctx):
    """Phase 1: fit the steps every candidate shares, once per fold."""
    X_train, y_train = _safe_split(ctx.estimator, X, y, train)
    X_test, _ = _safe_split(ctx.estimator, X, y, test, train)
    X_fit, X_score = X_train, X_train
    fit_time = score_time = 0.0
    n_fitted = Counter()
    for name, step in steps[:depth_stop]:
        if _is_passthrough(step):
            continue
        start = time.time()
        try:
            step = clone(step)
            X_fit, step = _fit_transform_step(step, X_fit, y_train, fit_params[name])
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


def _evaluate_group(members, depth, X, y, train, test, prefix, *, fit_params, score_params, ctx):
    """Phase 2 task: one fold, one group of candidates sharing steps ``0..depth``."""
    out = {m["index"]: _new_result(ctx, len(test)) for m in members}
    counts = Counter()
    y_train = None if y is None else _safe_split(ctx.estimator, X, y, train)[1]
    y_test = None if y is None else _safe_split(ctx.estimator, X, y, test, train)[1]
    if prefix is None:
        X_train = _safe_split(ctx.estimator, X, y, train)[0]
        X_test = _safe_split(ctx.estimator, X, y, test, train)[0]
        prefix = (X_train, X_test, X_train)
    data = (
        *prefix,
        y_train,
        y_test,
        fit_params,
        _check_method_params(X, score_params, indices=train),
        _check_method_params(X, score_params, indices=test),
    )
    _fit_node(members, depth, data, out, ctx, counts)
    return out, counts


# --------------------------------------------------------------------------
# The estimators
# --------------------------------------------------------------------------


class _ChainSearchMixin:
    """Replace BaseSearchCV's per-(candidate, fold) loop by a prefix tree."""

    def _check_pipeline(self):
        if not isinstance(self.estimator, Pipeline):
            raise TypeError(
                f"{type(self).__name__} searches a Pipeline, got "
                f"{type(self.estimator).__name__}. Wrap the estimator in "
                "sklearn.pipeline.make_pipeline(...) or use GridSearchCV."
            )
        if _is_passthrough(self.estimator.steps[-1][1]):
            raise ValueError(
                "The pipeline's last step is 'passthrough'; a search needs a final "
                "estimator to score. Put an estimator last."
            )
        if _routing_enabled():
            raise NotImplementedError(
                f"{type(self).__name__} does not support metadata routing yet; pass "
                "fit parameters as 'step__param' with routing disabled."
            )

    def _evaluate(self, candidate_params, cv_splits, X, y, scorer, fit_params, score_params):
        """Evaluate every candidate on every split.

        Returns ``_fit_and_score``-style dicts in GridSearchCV's order
        (candidate-major) and a Counter of fits per step name.
        """
        base = self.estimator
        n_splits = len(cv_splits)
        # clone + set_params exactly as GridSearchCV does, so each candidate's
        # steps are configured by Pipeline's own set_params logic.
        pipes = [clone(base).set_params(**clone(p, safe=False)) for p in candidate_params]
        step_names = [[name for name, _ in pipe.steps] for pipe in pipes]
        ids = _prefix_ids(candidate_params, step_names)
        members = [
            {"index": i, "steps": pipe.steps, "ids": row}
            for i, (pipe, row) in enumerate(zip(pipes, ids, strict=True))
        ]
        common = _common_depth(ids)
        ctx = _Context(self, scorer)
        all_names = list(dict.fromkeys(name for names in step_names for name in names))
        routed_fit = [
            _split_fit_params(_check_method_params(X, fit_params, indices=train), all_names)
            for train, _ in cv_splits
        ]

        # Phase 1: the steps every candidate shares, once per fold.
        prefixes = [None] * n_splits
        prefix_info = [(0.0, 0.0, None, Counter())] * n_splits
        if common > 0:
            phase1 = parallel_map(
                _fit_prefix,
                [
                    ((members[0]["steps"], common, X, y, train, test, routed_fit[s], ctx), {})
                    for s, (train, test) in enumerate(cv_splits)
                ],
                n_jobs=self.n_jobs,
                pre_dispatch=self.pre_dispatch,
            )
            prefixes, prefix_info = map(list, zip(*phase1, strict=True))

        # Phase 2: one task per (fold, group of candidates sharing step `common`).
        groups = _group(members, common)
        tasks, keys = [], []
        for s, (train, test) in enumerate(cv_splits):
            if prefix_info[s][2] is not None:
                continue  # the shared prefix failed on this fold
            for group in groups:
                tasks.append(
                    (
                        (group, common, X, y, train, test, prefixes[s]),
                        {"fit_params": routed_fit[s], "score_params": score_params, "ctx": ctx},
                    )
                )
                keys.append(s)
        results = parallel_map(
            _evaluate_group, tasks, n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch
        )
        del prefixes

        out = [None] * (len(candidate_params) * n_splits)
        counts = Counter()
        for s, (_, test) in enumerate(cv_splits):
            fit_time, score_time, error, n_fitted = prefix_info[s]
            counts += n_fitted
            if error is not None:
                for m in members:
                    result = _new_result(ctx, _num_samples(test))
                    out[m["index"] * n_splits + s] = result
                _fail(
                    [{"index": m["index"] * n_splits + s} for m in members],
                    out,
                    ctx,
                    fit_time,
                    score_time,
                    error,
                )
        for s, (group_out, group_counts) in zip(keys, results, strict=True):
            fit_time, score_time, _, _ = prefix_info[s]
            share = 1.0 / len(candidate_params)
            for index, result in group_out.items():
                result["fit_time"] += fit_time * share
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
            ``groups`` goes to the splitter; ``step__param`` entries go to
            that step's ``fit`` (sample-aligned ones are split by fold), and a
            ``sample_weight`` also goes to scorers that accept it, as in
            :class:`~sklearn.model_selection.GridSearchCV`.

        Returns
        -------
        self : object
            Fitted search.
        """
        self._check_pipeline()
        scorers, refit_metric = self._get_scorers()
        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(params)

        self._checked_cv_orig = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        self._check_input_parameters(X=X, y=y, split_params=routed.splitter.split)
        self.n_splits_ = self._checked_cv_orig.get_n_splits(X, y, **routed.splitter.split)

        all_params, all_out = [], []
        all_more_results = defaultdict(list)
        results = {}
        prefix_fits = Counter()

        def evaluate_candidates(candidate_params, cv=None, more_results=None, callback_ctx=None):
            nonlocal results
            cv = cv or self._checked_cv_orig
            candidate_params = list(candidate_params)
            splits = list(cv.split(X, y, **routed.splitter.split))
            if len(splits) != self.n_splits_:
                raise ValueError(
                    "cv.split and cv.get_n_splits return inconsistent results. "
                    f"Expected {self.n_splits_} splits, got {len(splits)}"
                )
            if self.verbose > 0:
                print(
                    f"Fitting {len(splits)} folds for each of {len(candidate_params)} "
                    f"candidates, totalling {len(splits) * len(candidate_params)} fits"
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
            if not out:
                raise ValueError("No fits were performed. Were there no candidates?")
            _warn_or_raise_about_fit_failures(out, self.error_score)
            if callable(self.scoring):
                _insert_error_scores(out, self.error_score)
            all_params.extend(candidate_params)
            all_out.extend(out)
            prefix_fits.update(counts)
            for key, value in (more_results or {}).items():
                all_more_results[key].extend(value)
            results = self._format_results(all_params, self.n_splits_, all_out, all_more_results)
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
        base_names = [name for name, _ in self.estimator.steps[:-1]]
        self.prefix_fits_ = {name: prefix_fits[name] for name in base_names}
        self.prefix_fits_.update(prefix_fits)  # steps that only a grid's `steps` lists name

        first_test_score = all_out[0]["test_scores"]
        self.multimetric_ = isinstance(first_test_score, dict)
        if callable(self.scoring) and self.multimetric_:
            self._check_refit_for_multimetric(first_test_score)
            refit_metric = self.refit

        if self.refit or not self.multimetric_:
            self.best_index_ = self._select_best_index(self.refit, refit_metric, results)
            if not callable(self.refit):
                self.best_score_ = results[f"mean_test_{refit_metric}"][self.best_index_]
            self.best_params_ = results["params"][self.best_index_]

        if self.refit:
            self.best_estimator_ = clone(self.estimator).set_params(
                **clone(self.best_params_, safe=False)
            )
            self.refit_time_ = self._refit_best(X, y, routed.estimator.fit, root_ctx, metadata)
            if hasattr(self.best_estimator_, "feature_names_in_"):
                self.feature_names_in_ = self.best_estimator_.feature_names_in_

        self.scorer_ = scorers._scorers if hasattr(scorers, "_scorers") else scorers
        self.cv_results_ = results
        if root_ctx is not None:
            root_ctx.call_on_fit_task_end(estimator=self, X=X, y=y, metadata=metadata)
        return self

    def _refit_best(self, X, y, fit_params, root_ctx, metadata):
        """Fit ``best_estimator_`` on all data; return the seconds it took."""
        if root_ctx is None:
            refit_ctx = nullcontext()
        else:
            subctx = root_ctx.subcontext(task_name="refit-with-best-params")
            refit_ctx = subctx.propagate_callback_context(self.best_estimator_)
        with refit_ctx:
            if root_ctx is not None:
                subctx.call_on_fit_task_begin(estimator=self, X=X, y=y, metadata=metadata)
            start = time.time()
            if y is not None:
                self.best_estimator_.fit(X, y, **fit_params)
            else:
                self.best_estimator_.fit(X, **fit_params)
            seconds = time.time() - start
        if root_ctx is not None:
            subctx.call_on_fit_task_end(estimator=self, X=X, y=y, metadata=metadata)
        return seconds


class ChainSearchCV(_ChainSearchMixin, GridSearchCV):
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
    outputs are freed once the candidates below it are scored.

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
        step. Steps named only in a grid's ``steps`` lists are added after
        the pipeline's own.

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

    The pipeline's own ``memory`` and ``verbose`` apply to the refit only:
    during the search, steps are fitted one at a time rather than through
    ``Pipeline.fit``.

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


class ChainRandomizedSearchCV(_ChainSearchMixin, RandomizedSearchCV):
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
