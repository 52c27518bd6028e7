"""Combine already-trained models at their outputs, without refitting them.

Several models that predict the same task -- skorch nets, plain torch modules
loaded from weights, fitted scikit-learn estimators -- can be combined into one
estimator by averaging their predicted probabilities, by a majority vote, or by
weights learned on held-out data. Unlike :class:`sklearn.ensemble.VotingClassifier`,
which clones and refits every member, the estimators here treat their members as
*prefit*: ``fit`` never trains a member and never changes one of its weights; it
only checks the members and, where asked, learns how to combine them.

:class:`ModuleClassifier` turns a plain pretrained ``torch.nn.Module`` whose
outputs are class logits into such a member.
"""

import copy
import warnings
from numbers import Integral

import numpy as np
import torch
from scipy.optimize import minimize, nnls
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    _fit_context,
    clone,
    is_classifier,
    is_regressor,
)
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)
from torch import nn

from ._runner import run_module

__all__ = ["ModuleClassifier", "OutputEnsembleClassifier", "OutputEnsembleRegressor"]

# Probabilities are clipped here before the log in the learned-weights loss, so a
# member that gives a true class probability 0 costs a large but finite loss.
_EPS = 1e-12


# -- a plain torch classifier as a member --------------------------------------


class ModuleClassifier(ClassifierMixin, BaseEstimator):
    """A pretrained torch classifier module as a scikit-learn classifier.

    The module is used as it is: it is never trained, and ``fit`` only checks
    the data and records ``n_features_in_``. Because a pretrained module needs
    no fitting, a ``ModuleClassifier`` predicts right after construction too,
    so it can be given to :class:`OutputEnsembleClassifier` directly.

    Parameters
    ----------
    module : torch.nn.Module
        The trained network; it maps a float32 batch of shape
        ``(n, n_features)`` to one output column per class.
    classes : array-like of shape (n_classes,)
        The label of each output column, in column order (the labels the
        module was trained with, e.g. as encoded by a ``LabelEncoder``).
    output : {"logits", "proba"}, default="logits"
        What the module returns: logits (a softmax is applied) or
        probabilities (used as they are).
    batch_size : int, default=1024
        Rows per forward pass. The batches go to the device the module lives
        on: move it first (``module.to("cuda")``) to predict on a GPU.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        ``classes`` as an array.
    n_features_in_ : int
        Number of features seen in ``fit`` (only after ``fit``; before it, any
        width the module accepts is used).

    See Also
    --------
    OutputEnsembleClassifier : Combines such members.

    Examples
    --------
    >>> import torch
    >>> from skchain import ModuleClassifier
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> clf = ModuleClassifier(torch.nn.Linear(4, 3), classes=["a", "b", "c"])
    >>> X = torch.randn(5, 4).numpy()
    >>> clf.predict_proba(X).shape
    (5, 3)
    >>> clf.predict(X)[:2].tolist()
    ['c', 'b']
    """

    _parameter_constraints: dict = {
        "module": [nn.Module],
        "classes": ["array-like"],
        "output": [StrOptions({"logits", "proba"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, module, classes, *, output="logits", batch_size=1024):
        self.module = module
        self.classes = classes
        self.output = output
        self.batch_size = batch_size

    @property
    def classes_(self):
        classes = np.asarray(self.classes)
        if classes.ndim != 1 or classes.size < 2 or len(np.unique(classes)) != classes.size:
            raise ValueError(
                "classes must be a 1-D list of at least 2 distinct labels, one per "
                f"output column of the module; got {classes.tolist()!r:.80}."
            )
        return classes

    def __sklearn_is_fitted__(self):
        # A pretrained module is fitted by construction.
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.target_tags.required = False
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check ``X`` (and ``y``) and record their width; the module is not trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), default=None
            If given, every label must be one of ``classes``.

        Returns
        -------
        self : ModuleClassifier
        """
        if y is None:
            validate_data(self, X, dtype=np.float32)
        else:
            _, y = validate_data(self, X, y, dtype=np.float32)
            check_classification_targets(y)
            _check_known_labels(y, self.classes_, type(self).__name__)
        return self

    def predict_proba(self, X):
        """Class probabilities from the module.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        classes = self.classes_
        X = validate_data(self, X, dtype=np.float32, reset=False)
        post = (lambda t: torch.softmax(t, dim=1)) if self.output == "logits" else None
        proba = run_module(self.module, X, batch_size=self.batch_size, postprocess=post)
        if proba.ndim != 2 or proba.shape[1] != classes.size:
            raise ValueError(
                f"The module returns {proba.shape[1:]} values per row but classes has "
                f"{classes.size} labels; give one label per output column."
            )
        proba = proba.astype(np.float64)
        if self.output == "logits":
            # float32 softmax rows sum to 1 only up to ~1e-7; metrics warn about that.
            proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict(self, X):
        """The most probable class of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


# -- shared helpers ---------------------------------------------------------------


def _check_known_labels(y, classes, who):
    unknown = np.setdiff1d(np.unique(y), classes)
    if unknown.size:
        raise ValueError(
            f"y has labels {unknown.tolist()!r:.80} that {who} cannot predict (the "
            f"classes it knows are {classes.tolist()!r:.80}); fit on rows of those "
            "classes only."
        )


def _check_estimators(estimators, kind):
    """Validate ``(name, estimator)`` pairs of already-fitted members."""
    if isinstance(estimators, dict) or not isinstance(estimators, (list, tuple)):
        raise TypeError(
            "estimators must be a list of (name, fitted_estimator) pairs, as in "
            f"VotingClassifier; got {type(estimators).__name__}."
        )
    if not estimators:
        raise ValueError("estimators is empty; give at least one (name, estimator) pair.")
    names = []
    for item in estimators:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"Each member is a (name, estimator) pair; got {item!r:.80}.")
        name, est = item
        if not isinstance(name, str) or not name:
            raise ValueError(f"Member name {name!r} must be a non-empty str.")
        if name in names:
            raise ValueError(f"Member name {name!r} is used twice; names must be unique.")
        names.append(name)
        wrong = is_regressor(est) if kind == "classifier" else is_classifier(est)
        if wrong or not hasattr(est, "predict"):
            raise TypeError(
                f"Member {name!r} ({type(est).__name__}) is not a {kind}; every member "
                f"must be a fitted {kind} with a predict method."
            )
        try:
            check_is_fitted(est)
        except NotFittedError as exc:
            raise ValueError(
                f"Member {name!r} ({type(est).__name__}) is not fitted. Members are "
                "used as they are and never trained here: fit it first (for a "
                "pretrained torch module use skchain.ModuleClassifier)."
            ) from exc
    return names


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


def _clone_prefit(estimator):
    """``clone`` that keeps the fitted members (copied whole) and the output config.

    scikit-learn's ``clone`` rebuilds estimators from their parameters, which
    would leave the members unfitted; a deep copy keeps their fitted state and
    weights bit for bit, and the copy is independent of the original.
    """
    params = estimator.get_params(deep=False)
    members = copy.deepcopy(params.pop("estimators"))
    params = {k: clone(v, safe=False) for k, v in params.items()}
    other = type(estimator)(estimators=members, **params)
    if hasattr(estimator, "_sklearn_output_config"):
        other._sklearn_output_config = copy.deepcopy(estimator._sklearn_output_config)
    return other


class _OutputEnsemble(BaseEstimator):
    """Code shared by the two output ensembles."""

    def __sklearn_clone__(self):
        return _clone_prefit(self)

    @property
    def named_estimators(self):
        """The members by name (a dict)."""
        return dict(self.estimators)

    @property
    def _learns(self):
        return isinstance(self.weights, str) or self.final_estimator is not None

    def _check_fit_inputs(self, X, y, kind):
        """Validation at the top of ``fit``: parameters, members, ``y``, ``X``."""
        if self.final_estimator is not None and self.weights is not None:
            raise ValueError(
                "final_estimator and weights cannot be combined: the final estimator "
                "learns its own combination. Set weights=None."
            )
        _check_estimators(self.estimators, kind)
        if y is None and self._learns:
            raise ValueError(
                "y is required to learn weights or a final_estimator; pass held-out "
                f"{'labels' if kind == 'classifier' else 'targets'}, or use fixed weights."
            )
        self._validate_X(X, reset=True)

    def _validate_X(self, X, reset):
        # Members validate the values themselves (they may take text or
        # DataFrames); here only the width and feature names are recorded/checked.
        if not reset and getattr(X, "ndim", 2) == 1:
            return  # the members raise their "Reshape your data" error
        validate_data(self, X, reset=reset, skip_check_array=True)


# -- classification -----------------------------------------------------------


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

    The members are used as they are: ``fit`` never trains them and never
    changes their weights, and :func:`sklearn.base.clone` (as used by
    ``GridSearchCV`` and ``cross_val_score``) copies them whole, fitted. What
    ``fit`` learns, if anything, is how to combine them.

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
    n_features_in_ : int
        Number of features seen during ``fit`` (when ``X`` has a width).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    See Also
    --------
    OutputEnsembleRegressor : The same for regressors.
    ModuleClassifier : A plain torch module as a member.
    sklearn.ensemble.VotingClassifier : Refits its members instead.

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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        return tags

    def _member_classes(self):
        """The sorted shared labels and, per member, its column positions in them."""
        sets = [(name, np.asarray(est.classes_)) for name, est in self.estimators]
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

    def _member_probas(self, X):
        """Shape (n_members, n_samples, n_classes), columns in ``classes_`` order."""
        k = self.classes_.size
        out = []
        for (_, est), cols in zip(self.estimators, self._columns_, strict=True):
            proba = np.asarray(est.predict_proba(X), dtype=np.float64)
            aligned = np.zeros((proba.shape[0], k))
            # float32 members' rows sum to 1 only up to rounding; renormalise in
            # float64 so the mixture is a distribution to ~1e-16.
            aligned[:, cols] = proba / np.maximum(proba.sum(axis=1, keepdims=True), _EPS)
            out.append(aligned)
        return np.stack(out)

    def _member_votes(self, X):
        """Shape (n_members, n_samples): index in ``classes_`` of each member's label."""
        votes = []
        for name, est in self.estimators:
            pred = np.asarray(est.predict(X))
            idx = np.searchsorted(self.classes_, pred)
            idx = np.clip(idx, 0, self.classes_.size - 1)
            if not np.array_equal(self.classes_[idx], pred):
                raise ValueError(f"Member {name!r} predicted a label outside its classes_.")
            votes.append(idx)
        return np.stack(votes)

    def _features(self, X):
        """Concatenated member outputs, the input of ``final_estimator``."""
        if self.voting == "soft":
            probas = self._member_probas(X)
            return np.concatenate(list(probas), axis=1)
        votes = self._member_votes(X)
        eye = np.eye(self.classes_.size)
        return np.concatenate([eye[v] for v in votes], axis=1)

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Check the members and learn how to combine them; no member is trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows the members did not see in training (for ``weights="learn"``
            and ``final_estimator``); with fixed weights only checked.
        y : array-like of shape (n_samples,), default=None
            True labels; needed for ``weights="learn"`` and ``final_estimator``.

        Returns
        -------
        self : OutputEnsembleClassifier
        """
        self._check_fit_inputs(X, y, "classifier")
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
            check_consistent_length(X, y)
            check_classification_targets(y)
            _check_known_labels(y, self.classes_, "the ensemble's members")
            y_idx = np.searchsorted(self.classes_, y)
        # Every member runs once on X, also with fixed weights: a member that
        # cannot take X (wrong width, NaN, sparse...) fails here, not in predict.
        if needs_proba:
            probas = self._member_probas(X)
        else:
            self._member_votes(X)
        self.final_estimator_ = None
        if self.final_estimator is not None:
            self.weights_ = None
            self.final_estimator_ = clone(self.final_estimator).fit(self._features(X), y_idx)
        elif isinstance(self.weights, str):
            q = probas[:, np.arange(y_idx.size), y_idx].T
            self.weights_ = _learn_simplex_weights(q)
        else:
            self.weights_ = _check_weights(self.weights, len(self.estimators))
        return self

    def _final_proba(self, X):
        # The combiner may have seen only some classes; its columns are placed.
        f = self.final_estimator_
        features = self._features(X)
        proba = np.zeros((features.shape[0], self.classes_.size))
        proba[:, f.classes_.astype(int)] = f.predict_proba(features)
        return proba

    def _soft(self):
        return self.voting == "soft"

    @available_if(_soft)
    def predict_proba(self, X):
        """Weighted mean of the members' probabilities (soft voting only).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in ``classes_`` order.
        """
        check_is_fitted(self)
        self._validate_X(X, reset=False)
        if self.final_estimator_ is not None:
            return self._final_proba(X)
        return np.tensordot(self.weights_, self._member_probas(X), axes=1)

    def predict(self, X):
        """The combined prediction: soft average or hard weighted vote.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        if self.voting == "soft":
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        self._validate_X(X, reset=False)
        if self.final_estimator_ is not None:
            return self.classes_[self.final_estimator_.predict(self._features(X)).astype(int)]
        votes = self._member_votes(X)
        counts = np.zeros((votes.shape[1], self.classes_.size))
        for w, v in zip(self.weights_, votes, strict=True):
            counts[np.arange(v.size), v] += w
        # argmax returns the first maximum: ties go to the label sorted first.
        return self.classes_[np.argmax(counts, axis=1)]


# -- regression -----------------------------------------------------------------


class OutputEnsembleRegressor(RegressorMixin, _OutputEnsemble):
    """Combine fitted regressors by a (weighted or learned) mean of predictions.

    As :class:`OutputEnsembleClassifier`, the members are used as they are and
    never trained; ``clone`` keeps them fitted.

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
    n_features_in_ : int
        Number of features seen during ``fit`` (when ``X`` has a width).
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        return tags

    def _predictions(self, X):
        """Shape (n_members, n_samples, n_targets), and whether a member gives 1-D.

        skorch regressors predict shape (n, 1) where scikit-learn's give (n,);
        the ensemble follows scikit-learn when any member does.
        """
        preds, one_d = [], False
        for _, est in self.estimators:
            p = np.asarray(est.predict(X), dtype=np.float64)
            one_d = one_d or p.ndim == 1
            preds.append(p.reshape(p.shape[0], -1))
        shapes = {p.shape for p in preds}
        if len(shapes) > 1:
            raise ValueError(
                f"The members predict arrays of different shapes {sorted(shapes)}; "
                "they must predict the same targets."
            )
        return np.stack(preds), one_d

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Check the members and learn their weights or combiner; no member is trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Held-out rows (for ``weights="learn"`` and ``final_estimator``).
        y : array-like of shape (n_samples,) or (n_samples, n_targets), default=None
            Needed for ``weights="learn"`` and ``final_estimator``.

        Returns
        -------
        self : OutputEnsembleRegressor
        """
        self._check_fit_inputs(X, y, "regressor")
        n = len(self.estimators)
        if y is not None:
            y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
            if y.ndim == 2 and y.shape[1] == 1:
                y = column_or_1d(y, warn=True)
            check_consistent_length(X, y)
        # Every member runs once on X, also with fixed weights: a member that
        # cannot take X fails here, not in predict.
        preds, _ = self._predictions(X)
        self.final_estimator_ = None
        if not self._learns:
            self.weights_ = _check_weights(self.weights, n)
            return self
        if self.final_estimator is not None:
            self.weights_ = None
            features = np.concatenate(list(preds), axis=1)
            self.final_estimator_ = clone(self.final_estimator).fit(features, y)
            return self
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
                stacklevel=3,
            )
            w = np.ones(n)
        self.weights_ = w / w.sum()
        return self

    def predict(self, X):
        """The weighted mean of the members' predictions (or the combiner's).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        check_is_fitted(self)
        self._validate_X(X, reset=False)
        preds, one_d = self._predictions(X)
        if self.final_estimator_ is not None:
            return self.final_estimator_.predict(np.concatenate(list(preds), axis=1))
        out = np.tensordot(self.weights_, preds, axes=1)
        return out[:, 0] if one_d else out
