"""Combine already-trained models at their outputs, without refitting them.

Size (over 600 lines): the two public estimators and their shared base, about
300 of the lines their numpydoc docstrings; members' checking and running live
in ``_members``.

Several models that predict the same task -- skorch nets, plain torch modules
loaded from weights, fitted scikit-learn estimators -- can be combined into one
estimator by averaging their predicted probabilities, by a majority vote, or by
weights learned on held-out data. Unlike :class:`sklearn.ensemble.VotingClassifier`,
which clones and refits every member, the estimators here treat their members as
*prefit*, as :class:`sklearn.frozen.FrozenEstimator` does: ``fit`` never trains,
copies or changes a member; it only checks the members and, where asked,
learns how to combine them, and ``clone`` shares the members.

:class:`ModuleClassifier` turns a plain pretrained ``torch.nn.Module`` whose
outputs are class logits into such a member.
"""

import warnings

import numpy as np
from scipy.optimize import minimize, nnls
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    TransformerMixin,
    clone,
)
from sklearn.utils import Bunch
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
)

from ._dask import blockwise, dask_fit
from ._members import (
    check_member_widths,
    check_members,
    fit_or_restore,
    input_tags,
    member_outputs,
    validate_rows,
)
from ._module_classifier import ModuleClassifier, check_known_labels
from ._params import ParamsChecked
from ._repr import DocLinkMixin
from ._sklearn_compat import HasMethods, StrOptions, _check_feature_names_in, _fit_context

__all__ = ["ModuleClassifier", "OutputEnsembleClassifier", "OutputEnsembleRegressor"]

# Probabilities are clipped here before the log in the learned-weights loss, so a
# member that gives a true class probability 0 costs a large but finite loss.
_EPS = 1e-12

# Why an ensemble that learns its combination cannot fit on a dask array.
_LEARNS = "it learns its weights or final_estimator from the members' outputs on every row"


def _check_weights(weights, n_members):
    """Fixed weights as a float array summing to one (``None`` -> equal)."""
    if weights is None:
        return np.full(n_members, 1.0 / n_members)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_members,):
        raise ValueError(
            f"weights has {w.size} values but there are {n_members} estimators; "
            "give one weight per member."
        )
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(
            f"weights must be finite, non-negative and not all zero; got {w.tolist()}."
        )
    return w / w.sum()


class _OutputEnsemble(ParamsChecked, DocLinkMixin, TransformerMixin, BaseEstimator):
    """Code shared by the two output ensembles."""

    def __sklearn_clone__(self):
        # As FrozenEstimator: the prefit members are shared, never copied (a
        # copy of a large pretrained net per fold and candidate costs seconds
        # and gigabytes); the other parameters are cloned as usual.
        params = self.get_params(deep=False)
        members = params.pop("estimators")
        if isinstance(members, (list, tuple)):
            members = [tuple(p) if isinstance(p, (list, tuple)) else p for p in members]
        params = {k: clone(v, safe=False) for k, v in params.items()}
        other = type(self)(estimators=members, **params)
        if hasattr(self, "_sklearn_output_config"):
            other._sklearn_output_config = dict(self._sklearn_output_config)
        return other

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.input_tags.allow_nan, tags.input_tags.sparse = input_tags(self.estimators)
        # transform gives float64 probabilities / predictions, or labels (hard vote).
        hard = getattr(self, "voting", "soft") == "hard"
        tags.transformer_tags.preserves_dtype = [] if hard else ["float64"]
        return tags

    @property
    def named_estimators(self):
        """The members by name (:class:`~sklearn.utils.Bunch`)."""
        return Bunch(**dict(self.estimators))

    @property
    def _learns(self):
        return isinstance(self.weights, str) or self.final_estimator is not None

    def _check_fit_inputs(self, X, y, kind):
        """Validation at the top of ``fit``: parameters, members, ``y``, ``X``.

        Returns the validated rows and records the members as ``estimators_``
        and ``named_estimators_`` (the objects themselves, not copies).
        """
        if self.final_estimator is not None and self.weights is not None:
            raise ValueError(
                "final_estimator and weights cannot be combined: the final estimator "
                "learns its own combination. Set weights=None."
            )
        check_members(self.estimators, kind)
        if y is None and self._learns:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is "
                "None: y is required to learn weights or a final_estimator; pass held-out "
                f"{'labels' if kind == 'classifier' else 'targets'}, or use fixed weights."
            )
        rows = validate_rows(self, X, reset=True)
        check_member_widths(self.estimators, self.n_features_in_)
        self.estimators_ = [est for _, est in self.estimators]
        self.named_estimators_ = Bunch(**dict(self.estimators))
        return rows

    def _rows(self, X):
        self._check_use()
        return validate_rows(self, X, reset=False)

    def _check_use(self):
        """What every use of a fitted ensemble checks first: fitted, the
        parameters as ``fit`` validates them, and the members those ``fit``
        saw (weights and column orders belong to them)."""
        check_is_fitted(self)
        self._check_params()
        members = self.estimators
        same = len(members) == len(self.estimators_) and all(
            isinstance(pair, (list, tuple)) and len(pair) == 2 and pair[1] is fitted
            for pair, fitted in zip(members, self.estimators_)
        )
        if not same:
            raise ValueError(
                f"The estimators of this {type(self).__name__} changed since fit "
                "(set_params(estimators=...)): its weights and class alignment were "
                "learned for the previous members. Call fit again with the new members."
            )

    def _names_out(self, input_features, suffixes):
        check_is_fitted(self, "n_features_in_")
        _check_feature_names_in(self, input_features, generate_names=False)
        prefix = type(self).__name__.lower()
        return np.asarray(
            [f"{prefix}_{name}{s}" for name, _ in self.estimators for s in suffixes],
            dtype=object,
        )



def _learn_simplex_weights(q):
    """Weights on the simplex minimising ``-mean(log(q @ w))``.

    ``q[i, m]`` is member ``m``'s probability of row ``i``'s true class. The loss
    is convex in ``w``, so SLSQP from equal weights finds the global minimum.
    """
    n, m = q.shape

    def loss(w):
        mix = np.maximum(q @ w, _EPS)
        return -np.mean(np.log(mix)), -(q / mix[:, None]).mean(axis=0)

    result = minimize(
        loss,
        np.full(m, 1.0 / m),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
        options={"maxiter": 500, "ftol": 1e-12},
    )
    if not result.success:
        warnings.warn(
            f"Learning the ensemble weights did not converge ({result.message}); the "
            "last weights are used.",
            UserWarning,
            stacklevel=3,
        )
    w = np.clip(result.x, 0.0, None)
    return w / w.sum()




class OutputEnsembleClassifier(ClassifierMixin, _OutputEnsemble):
    """Combine fitted classifiers by averaging, voting or learned weights.

    The members are used as they are: ``fit`` never trains, copies or changes
    them, and :func:`sklearn.base.clone` (as used by ``GridSearchCV`` and
    ``cross_val_score``) shares them, as :class:`sklearn.frozen.FrozenEstimator`
    does. What ``fit`` learns, if anything, is how to combine them.

    ``X`` is validated once, before any member runs: with a torch member it
    must be a finite numeric 2-D table (any dtype, memory order or container,
    converted once to C-ordered float32 for the torch members); scikit-learn
    members get the validated array, or the caller's DataFrame when they were
    fitted on one. skorch nets and :class:`ModuleClassifier` members are run
    by skchain's runner (batches, eval mode, no gradients, a per-module lock,
    so threads sharing the ensemble get sequential results); probabilities are
    float64 with rows summing to one within 1e-12.

    Parameters
    ----------
    estimators : list of (str, estimator) tuples
        The fitted members: skorch ``NeuralNetClassifier`` nets, scikit-learn
        classifiers, or plain torch modules wrapped in :class:`ModuleClassifier`.
        All must know the same set of classes; their ``classes_`` may be in
        any order (their outputs are aligned to the sorted labels).
    voting : {"soft", "hard"}, default="soft"
        ``"soft"`` predicts the class of highest weighted mean probability.
        ``"hard"`` counts each member's predicted label with its weight and
        predicts the label of highest total; a tie goes to the label that
        sorts first in ``classes_``. ``predict_proba`` exists only for
        ``"soft"``.
    weights : array-like of shape (n_estimators,), "learn" or None, default=None
        ``None`` weighs all members equally; numbers are fixed weights
        (normalised to sum to one). ``"learn"`` finds non-negative weights
        summing to one that minimise the log loss of the weighted mean
        probabilities on the data passed to ``fit`` (with ``voting="hard"``
        those weights then weigh the votes). That data must be held out from
        the members' training data: on their training rows every member looks
        good, and an overfit one looks best.
    final_estimator : estimator, default=None
        Instead of weights, a classifier trained on the members' aligned
        outputs, concatenated (probabilities for ``"soft"``, one-hot votes for
        ``"hard"``): stacking on held-out data. Needs ``weights=None``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The sorted labels shared by the members.
    weights_ : ndarray of shape (n_estimators,)
        The weights used (equal, normalised fixed, or learned); ``None`` with
        a ``final_estimator``.
    final_estimator_ : estimator or None
        The fitted combiner.
    estimators_ : list of estimators
        The members themselves (not copies), in order.
    named_estimators_ : :class:`~sklearn.utils.Bunch`
        The members by name.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    See Also
    --------
    OutputEnsembleRegressor : The same for regressors.
    ModuleClassifier : A plain torch module as a member.
    sklearn.ensemble.VotingClassifier : Refits its members, or shares
        :class:`~sklearn.frozen.FrozenEstimator` members.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.naive_bayes import GaussianNB
    >>> from skchain import OutputEnsembleClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> lr = LogisticRegression(max_iter=1000).fit(X[::2], y[::2])
    >>> nb = GaussianNB().fit(X[::2], y[::2])
    >>> ens = OutputEnsembleClassifier([("lr", lr), ("nb", nb)], weights="learn")
    >>> ens.fit(X[1::2], y[1::2]).weights_.round(2).sum()
    np.float64(1.0)
    >>> ens.predict(X[:3]).tolist()
    [0, 0, 0]
    """

    _parameter_constraints: dict = {
        "estimators": [list],
        "voting": [StrOptions({"soft", "hard"})],
        "weights": ["array-like", StrOptions({"learn"}), None],
        "final_estimator": [HasMethods(["fit", "predict"]), None],
    }

    def __init__(self, estimators, *, voting="soft", weights=None, final_estimator=None):
        self.estimators = estimators
        self.voting = voting
        self.weights = weights
        self.final_estimator = final_estimator

    def _member_classes(self):
        """The sorted shared labels and, per member, its column positions in them."""
        sets = []
        for name, est in self.estimators:
            try:
                sets.append((name, np.asarray(est.classes_)))
            except AttributeError as exc:
                raise TypeError(
                    f"Member {name!r} ({type(est).__name__}) has no classes_, so its "
                    "outputs cannot be matched to labels; give a skorch net its "
                    "classes (classes=[...]) or use a fitted classifier."
                ) from exc
        classes = np.unique(sets[0][1])
        for name, own in sets[1:]:
            if own.size != classes.size or not np.array_equal(np.unique(own), classes):
                raise ValueError(
                    f"Member {name!r} predicts the classes {own.tolist()!r:.80} but "
                    f"member {sets[0][0]!r} predicts {sets[0][1].tolist()!r:.80}; all "
                    "members must know the same labels (in any order). Combine "
                    "classifiers over different labels with skchain.merge_heads."
                )
        return classes, [np.searchsorted(classes, own) for _, own in sets]

    def _member_probas(self, rows):
        """Shape (n_members, n_samples, n_classes), float64, columns in ``classes_`` order."""
        k = self.classes_.size
        out = []
        for (name, est), cols in zip(self.estimators, self._columns_, strict=True):
            proba = member_outputs(name, est, rows, "predict_proba")
            aligned = np.zeros((proba.shape[0], k))
            aligned[:, cols] = proba
            out.append(aligned)
        return np.stack(out)

    def _member_votes(self, rows):
        """Shape (n_members, n_samples): index in ``classes_`` of each member's label."""
        votes = []
        for name, est in self.estimators:
            pred = member_outputs(name, est, rows, "predict")
            idx = np.searchsorted(self.classes_, pred)
            idx = np.clip(idx, 0, self.classes_.size - 1)
            if not np.array_equal(self.classes_[idx], pred):
                raise ValueError(f"Member {name!r} predicted a label outside its classes_.")
            votes.append(idx)
        return np.stack(votes)

    def _features(self, rows):
        """Concatenated member outputs, the input of ``final_estimator``."""
        if self.voting == "soft":
            return np.concatenate(list(self._member_probas(rows)), axis=1)
        eye = np.eye(self.classes_.size)
        return np.concatenate([eye[v] for v in self._member_votes(rows)], axis=1)

    @_fit_context(prefer_skip_nested_validation=False)
    @dask_fit(lambda self: _LEARNS if self._learns else None)
    def fit(self, X, y=None):
        """Check the members and learn how to combine them; no member is trained.

        A failed ``fit`` leaves the previous fitted state as it was (or none).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows the members did not see in training (for ``weights="learn"``
            and ``final_estimator``); with fixed weights only checked (of a
            dask array, only its first rows; learning needs rows in memory).
        y : array-like of shape (n_samples,), default=None
            True labels; needed for ``weights="learn"`` and ``final_estimator``.

        Returns
        -------
        self : OutputEnsembleClassifier
        """
        with fit_or_restore(self):
            self._fit(X, y)
        return self

    def _fit(self, X, y):
        rows = self._check_fit_inputs(X, y, "classifier")
        needs_proba = self.voting == "soft" or isinstance(self.weights, str)
        for name, est in self.estimators:
            if needs_proba and not hasattr(est, "predict_proba"):
                raise TypeError(
                    f"Member {name!r} ({type(est).__name__}) has no predict_proba, "
                    'which voting="soft" and weights="learn" need; use voting="hard".'
                )
        self.classes_, self._columns_ = self._member_classes()
        if y is not None:
            y = column_or_1d(y, warn=True)
            check_consistent_length(rows.validated, y)
            check_classification_targets(y)
            check_known_labels(y, self.classes_, "the ensemble's members")
            y_idx = np.searchsorted(self.classes_, y)
        # Every member runs once on X, also with fixed weights: a member that
        # cannot take X fails here, not in predict.
        if needs_proba:
            probas = self._member_probas(rows)
        else:
            self._member_votes(rows)
        self.final_estimator_ = None
        if self.final_estimator is not None:
            self.weights_ = None
            features = self._features(rows)
            self.final_estimator_ = clone(self.final_estimator).fit(features, y_idx)
        elif isinstance(self.weights, str):
            q = probas[:, np.arange(y_idx.size), y_idx].T
            self.weights_ = _learn_simplex_weights(q)
        else:
            self.weights_ = _check_weights(self.weights, len(self.estimators))

    def _soft(self):
        # Only "hard" hides predict_proba: a typo set after fit reaches
        # predict_proba, which raises fit's error for it.
        return not (isinstance(self.voting, str) and self.voting == "hard")

    @available_if(_soft)
    @blockwise(lambda self: ((self.classes_.size,), np.float64))
    def predict_proba(self, X):
        """Weighted mean of the members' probabilities (soft voting only).

        Parameters
        ----------
        X : array-like or dask collection of shape (n_samples, n_features)
            A dask array or DataFrame gives a lazy dask array of the same
            rows, computed block by block (user guide: *Large data and clusters*).

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            float64, columns in ``classes_`` order; each row sums to one
            within 1e-12.
        """
        rows = self._rows(X)
        if self.final_estimator_ is not None:
            # The combiner may have seen only some classes; its columns are placed.
            f = self.final_estimator_
            proba = np.zeros((rows.validated.shape[0], self.classes_.size))
            proba[:, f.classes_.astype(int)] = f.predict_proba(self._features(rows))
            return proba
        return np.tensordot(self.weights_, self._member_probas(rows), axes=1)

    @blockwise(lambda self: ((), self.classes_.dtype))
    def predict(self, X):
        """The combined prediction: soft average or hard weighted vote.

        Parameters
        ----------
        X : array-like or dask collection of shape (n_samples, n_features)
            A dask array or DataFrame gives a lazy dask array of the same
            rows, computed block by block (user guide: *Large data and clusters*).

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        self._check_use()
        if self.voting == "soft":
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        rows = self._rows(X)
        if self.final_estimator_ is not None:
            return self.classes_[self.final_estimator_.predict(self._features(rows)).astype(int)]
        votes = self._member_votes(rows)
        counts = np.zeros((votes.shape[1], self.classes_.size))
        for w, v in zip(self.weights_, votes, strict=True):
            counts[np.arange(v.size), v] += w
        # argmax returns the first maximum: ties go to the label sorted first.
        return self.classes_[np.argmax(counts, axis=1)]

    @blockwise(
        lambda self: ((len(self.estimators) * self.classes_.size,), np.float64)
        if self.voting == "soft"
        else ((len(self.estimators),), self.classes_.dtype)
    )
    def transform(self, X):
        """The members' outputs side by side, as ``VotingClassifier.transform``.

        Parameters
        ----------
        X : array-like or dask collection of shape (n_samples, n_features)
            A dask array or DataFrame gives a lazy dask array of the same
            rows, computed block by block (user guide: *Large data and clusters*).

        Returns
        -------
        outputs : ndarray
            ``voting="soft"``: shape (n_samples, n_estimators * n_classes), each
            member's probabilities with columns in ``classes_`` order.
            ``voting="hard"``: shape (n_samples, n_estimators), each member's
            predicted label.
        """
        rows = self._rows(X)
        if self.voting == "soft":
            return np.concatenate(list(self._member_probas(rows)), axis=1)
        return self.classes_[self._member_votes(rows)].T

    def get_feature_names_out(self, input_features=None):
        """Names of the ``transform`` columns, as ``VotingClassifier`` names them.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked against ``feature_names_in_``.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``<classname>_<member><i>`` for class ``i`` of ``classes_`` (soft),
            ``<classname>_<member>`` (hard).
        """
        check_is_fitted(self)
        suffixes = [""] if self.voting == "hard" else range(self.classes_.size)
        return self._names_out(input_features, suffixes)


# -- regression -----------------------------------------------------------------


class OutputEnsembleRegressor(RegressorMixin, _OutputEnsemble):
    """Combine fitted regressors by a (weighted or learned) mean of predictions.

    As :class:`OutputEnsembleClassifier`, the members are used as they are,
    never trained, copied or changed; ``clone`` shares them; ``X`` is validated
    once before any member runs.

    Parameters
    ----------
    estimators : list of (str, estimator) tuples
        The fitted members (skorch ``NeuralNetRegressor`` nets, scikit-learn
        regressors). They must predict the same number of targets.
    weights : array-like of shape (n_estimators,), "learn" or None, default=None
        ``None``: the plain mean. Numbers: fixed weights, normalised to sum to
        one. ``"learn"``: non-negative least squares of ``y`` on the members'
        predictions (:func:`scipy.optimize.nnls`, all targets stacked), then
        normalised to sum to one, on held-out data passed to ``fit``.
    final_estimator : estimator, default=None
        Instead of weights, a regressor trained on the members' predictions
        side by side. Needs ``weights=None``.

    Attributes
    ----------
    weights_ : ndarray of shape (n_estimators,)
        The weights used; ``None`` with a ``final_estimator``.
    final_estimator_ : estimator or None
    estimators_ : list of estimators
        The members themselves (not copies), in order.
    named_estimators_ : :class:`~sklearn.utils.Bunch`
        The members by name.
    n_targets_ : int
        Number of targets the members predict.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.dummy import DummyRegressor
    >>> from skchain import OutputEnsembleRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> good = Ridge(alpha=0.1).fit(X[:200], y[:200])
    >>> dummy = DummyRegressor().fit(X[:200], y[:200])
    >>> ens = OutputEnsembleRegressor([("ridge", good), ("dummy", dummy)], weights="learn")
    >>> bool(ens.fit(X[200:300], y[200:300]).weights_[0] > 0.8)
    True
    """

    _parameter_constraints: dict = {
        "estimators": [list],
        "weights": ["array-like", StrOptions({"learn"}), None],
        "final_estimator": [HasMethods(["fit", "predict"]), None],
    }

    def __init__(self, estimators, *, weights=None, final_estimator=None):
        self.estimators = estimators
        self.weights = weights
        self.final_estimator = final_estimator

    def _predictions(self, rows):
        """Shape (n_members, n_samples, n_targets), float64.

        skorch regressors predict shape (n, 1) where scikit-learn's give (n,);
        both are one target here.
        """
        preds = []
        for name, est in self.estimators:
            p = np.asarray(member_outputs(name, est, rows, "predict"), dtype=np.float64)
            preds.append(p.reshape(p.shape[0], -1))
        shapes = {p.shape for p in preds}
        if len(shapes) > 1:
            raise ValueError(
                f"The members predict arrays of different shapes {sorted(shapes)}; "
                "they must predict the same targets."
            )
        return np.stack(preds)

    @_fit_context(prefer_skip_nested_validation=False)
    @dask_fit(lambda self: _LEARNS if self._learns else None)
    def fit(self, X, y=None):
        """Check the members and learn their weights or combiner; no member is trained.

        A failed ``fit`` leaves the previous fitted state as it was (or none).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Held-out rows (for ``weights="learn"`` and ``final_estimator``,
            in memory); with fixed weights only checked (of a dask array,
            only its first rows).
        y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
            Needed for ``weights="learn"`` and ``final_estimator``.

        Returns
        -------
        self : OutputEnsembleRegressor
        """
        with fit_or_restore(self):
            self._fit(X, y)
        return self

    def _fit(self, X, y):
        rows = self._check_fit_inputs(X, y, "regressor")
        n = len(self.estimators)
        if y is not None:
            y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
            if y.ndim == 2 and y.shape[1] == 1:
                y = column_or_1d(y, warn=True)
            check_consistent_length(rows.validated, y)
        # Every member runs once on X, also with fixed weights: a member that
        # cannot take X fails here, not in predict.
        preds = self._predictions(rows)
        if y is not None and self.final_estimator is None:
            # Also with fixed weights: a y the members cannot predict is a
            # mistake to report now, not a score that silently broadcasts.
            width = 1 if y.ndim == 1 else y.shape[1]
            if width != preds.shape[2]:
                raise ValueError(
                    f"y has {width} target column(s) but the members predict "
                    f"{preds.shape[2]}; give y with one column per predicted target."
                )
        self.n_targets_ = preds.shape[2]
        self.final_estimator_ = None
        if not self._learns:
            self.weights_ = _check_weights(self.weights, n)
            return
        if self.final_estimator is not None:
            self.weights_ = None
            features = np.concatenate(list(preds), axis=1)
            self.final_estimator_ = clone(self.final_estimator).fit(features, y)
            return
        y2 = y.reshape(y.shape[0], -1)
        if y2.shape != preds.shape[1:]:
            raise ValueError(
                f"y has shape {y.shape} but the members predict {preds.shape[1:]} values."
            )
        A = preds.transpose(1, 2, 0).reshape(-1, n)  # rows: (sample, target) pairs
        w, _ = nnls(A, y2.ravel())
        if w.sum() <= 0:
            warnings.warn(
                "Non-negative least squares gave every member weight 0 (no member "
                "correlates positively with y); equal weights are used.",
                UserWarning,
                stacklevel=4,
            )
            w = np.ones(n)
        self.weights_ = w / w.sum()

    @blockwise(
        lambda self: ((() if self.n_targets_ == 1 else (self.n_targets_,)), np.float64)
    )
    def predict(self, X):
        """The weighted mean of the members' predictions (or the combiner's).

        Parameters
        ----------
        X : array-like or dask collection of shape (n_samples, n_features)
            A dask array or DataFrame gives a lazy dask array of the same
            rows, computed block by block (user guide: *Large data and clusters*).

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_targets)
            Shape (n_samples,) when the members predict one target, whatever
            shape each member gives it ((n,) or skorch's (n, 1)).
        """
        rows = self._rows(X)
        preds = self._predictions(rows)
        if self.final_estimator_ is not None:
            out = np.asarray(self.final_estimator_.predict(np.concatenate(list(preds), axis=1)))
        else:
            out = np.tensordot(self.weights_, preds, axes=1)
        return out.reshape(out.shape[0]) if self.n_targets_ == 1 else out

    @blockwise(lambda self: ((len(self.estimators) * self.n_targets_,), np.float64))
    def transform(self, X):
        """The members' predictions side by side, as ``VotingRegressor.transform``.

        Parameters
        ----------
        X : array-like or dask collection of shape (n_samples, n_features)
            A dask array or DataFrame gives a lazy dask array of the same
            rows, computed block by block (user guide: *Large data and clusters*).

        Returns
        -------
        predictions : ndarray of shape (n_samples, n_estimators * n_targets)
            One column per member (per target, member by member).
        """
        preds = self._predictions(self._rows(X))
        return np.concatenate(list(preds), axis=1)

    def get_feature_names_out(self, input_features=None):
        """Names of the ``transform`` columns, as ``VotingRegressor`` names them.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked against ``feature_names_in_``.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``<classname>_<member>`` (one target) or ``<classname>_<member><j>``
            for target ``j``.
        """
        check_is_fitted(self)
        suffixes = [""] if self.n_targets_ == 1 else range(self.n_targets_)
        return self._names_out(input_features, suffixes)
