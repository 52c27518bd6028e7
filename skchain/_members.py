"""How the output ensembles check, feed and run their prefit members.

There are three kinds of member, and each is run the one way that fits it:

- ``"rows"``: a member that runs a torch module on validated float32 rows
  itself (:class:`skchain.ModuleClassifier`); the ensemble hands it the rows it
  has already validated, so the module goes through
  :func:`skchain._runner.run_module` and :func:`skchain._runner.to_proba`.
- ``"net"``: a fitted skorch net whose class keeps skorch's inference methods.
  Its ``module_`` is run by :func:`skchain._runner.run_module` with the net's own
  predict nonlinearity (what skorch's ``predict_proba`` applies), computed in
  float64, so the result is skorch's up to float32 rounding.
- ``"estimator"``: anything else (a scikit-learn estimator, or a skorch subclass
  that overrides how it predicts), called through its own
  ``predict_proba``/``predict``.

The ensemble validates X once, before any member runs (:func:`validate_rows`),
and gives each member what it needs: torch members the C-ordered float32 array;
estimators the validated array, or the caller's DataFrame itself when they were
fitted on one (so their feature names and column dtypes still reach them).
"""

from contextlib import contextmanager
from numbers import Integral

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted, validate_data

from ._outputs import describe_net
from ._inputs import VALIDATION_ATTRIBUTES, validate_numeric
from ._runner import check_finite_output, normalize_proba, run_module

__all__ = [
    "Rows",
    "check_member_widths",
    "check_members",
    "fit_or_restore",
    "input_tags",
    "member_kind",
    "member_outputs",
    "run_torch",
    "validate_rows",
]

# skorch methods that decide what a net predicts; a subclass overriding one of
# them is called through its own methods instead of having its module run here.
_SKORCH_INFERENCE = (
    "predict",
    "predict_proba",
    "infer",
    "evaluation_step",
    "forward",
    "forward_iter",
    "get_iterator",
    "get_dataset",
)


def _is_skorch_net(est):
    try:
        from skorch import NeuralNet
    except ImportError:  # skorch is optional for members
        return False
    return isinstance(est, NeuralNet)


def _keeps_skorch_inference(net):
    """Whether ``type(net)`` inherits every inference method from skorch itself."""
    base = next(c for c in type(net).__mro__ if c.__module__.startswith("skorch."))
    return all(getattr(type(net), m) is getattr(base, m) for m in _SKORCH_INFERENCE)


def member_kind(est):
    """How the member is run: ``"rows"``, ``"net"`` or ``"estimator"`` (see above).

    ``"estimator_f32"`` is a skorch net that predicts through its own
    (overridden) methods: called like an estimator, but given float32 rows.
    """
    if hasattr(type(est), "_proba_from_rows"):
        return "rows"
    if _is_skorch_net(est) and getattr(est, "initialized_", False):
        return "net" if _keeps_skorch_inference(est) else "estimator_f32"
    if _is_skorch_net(est):
        return "estimator_f32"
    return "estimator"


def _is_torch(kind):
    return kind != "estimator"


def _pairs(estimators):
    """The well-formed ``(name, estimator)`` pairs (tags are read before validation)."""
    if not isinstance(estimators, (list, tuple)):
        return []
    return [p for p in estimators if isinstance(p, (list, tuple)) and len(p) == 2]


def input_tags(estimators):
    """``(allow_nan, sparse)`` of an ensemble over ``estimators``.

    Torch members take neither NaN nor sparse rows; an ensemble of scikit-learn
    estimators takes what all of them take.
    """
    members = [est for _, est in _pairs(estimators)]
    if not members or any(_is_torch(member_kind(e)) for e in members):
        return False, False
    tags = []
    for est in members:
        try:
            tags.append(get_tags(est).input_tags)
        except (TypeError, AttributeError, ValueError):
            return False, False
    return all(t.allow_nan for t in tags), all(t.sparse for t in tags)


def check_members(estimators, kind):
    """Validate ``(name, estimator)`` pairs of fitted members; return their names.

    ``kind`` is ``"classifier"`` or ``"regressor"``.
    """
    from sklearn.base import is_classifier, is_regressor
    from torch import nn

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
        if isinstance(est, nn.Module):
            raise TypeError(
                f"Member {name!r} is a bare torch module; wrap it as "
                "skchain.ModuleClassifier(module, classes) to say what its outputs mean."
            )
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


# -- input -----------------------------------------------------------------------


class Rows:
    """X as each kind of member needs it: validated once by the ensemble."""

    def __init__(self, original, validated, f32):
        self.original = original
        self.validated = validated
        self.f32 = f32

    def for_member(self, est, kind):
        if _is_torch(kind):
            return self.f32
        # A member fitted on a DataFrame gets the caller's DataFrame (names and
        # column dtypes); any other gets the validated array.
        if hasattr(self.original, "columns") and hasattr(est, "feature_names_in_"):
            return self.original
        return self.validated


def validate_rows(ensemble, X, *, reset):
    """Validate ``X`` for ``ensemble`` before any member runs; return :class:`Rows`.

    With a torch member, X must be finite numeric rows (a table in any dtype,
    order or container, or an N-D array of images or sequences; see
    :mod:`skchain._inputs`) and is converted once to C-ordered float32 for the
    torch members. An ensemble of scikit-learn estimators only checks the
    shape, width, feature names and (unless every member allows it) NaN, and
    keeps the values' dtype, so its members see what they would see alone.
    """
    pairs = _pairs(ensemble.estimators)
    torch_members = any(_is_torch(member_kind(est)) for _, est in pairs)
    allow_nan, sparse = input_tags(ensemble.estimators)
    if torch_members:
        # Images and sequences only where every member is a torch model: a
        # scikit-learn member takes 2-D tables.
        all_torch = all(_is_torch(member_kind(est)) for _, est in pairs)
        validated = validate_numeric(
            ensemble, X, reset=reset, dtype=[np.float64, np.float32], allow_nd=all_torch
        )
        with np.errstate(over="ignore"):  # reported below, naming the fix
            f32 = np.ascontiguousarray(validated, dtype=np.float32)
        if not np.isfinite(f32).all():
            raise ValueError(
                "X has values beyond float32's range (|x| > 3.4e38), which the torch "
                "members cannot represent; scale X."
            )
        return Rows(X, validated, f32)
    validated = validate_data(
        ensemble,
        X,
        reset=reset,
        dtype=None,
        accept_sparse=sparse,
        ensure_all_finite="allow-nan" if allow_nan else True,
    )
    return Rows(X, validated, None)


def check_member_widths(estimators, n_features):
    """A member that recorded another input width fails here, naming itself."""
    for name, est in estimators:
        width = getattr(est, "n_features_in_", None)
        if isinstance(width, (int, np.integer)) and width != n_features:
            raise ValueError(
                f"X has {n_features} features but member {name!r} "
                f"({type(est).__name__}) was fitted on {width}; all members must take "
                "the same columns."
            )


# -- running ---------------------------------------------------------------------


def run_torch(module, X32, who, **kwargs):
    """:func:`run_module`, with torch's shape/dtype errors turned into a ``ValueError``.

    A module fed rows of the wrong width fails inside its first layer with a
    ``RuntimeError`` such as ``mat1 and mat2 shapes cannot be multiplied``;
    the user needs to know which model and what to change.
    """
    try:
        out = run_module(module, X32, **kwargs)
    except RuntimeError as exc:
        raise ValueError(
            f"{who} could not run on X of shape {X32.shape} ({exc}). Check that X "
            "has the columns, in the order, the module was trained on."
        ) from exc
    return check_finite_output(out, who)


def _net_batch_size(net, n, who):
    """The rows per forward pass that the skorch ``net``'s own predict would
    use: its ``batch_size`` (or ``iterator_valid__batch_size``), -1 or None
    for all rows."""
    size = getattr(net, "iterator_valid__batch_size", net.batch_size)
    if size is None or (isinstance(size, Integral) and size == -1):
        return n
    if not isinstance(size, Integral) or isinstance(size, bool) or size < 1:
        raise ValueError(
            f"{who} has batch_size={size!r}: skorch takes a positive int, or -1 "
            "for all rows in one batch. Set the net's batch_size to one of those."
        )
    return int(size)


def _net_outputs(net, X32, who, method):
    """What a plain skorch net's ``predict_proba``/``predict`` give, via the runner."""
    info = describe_net(net)
    classifier = info.kind in ("classifier", "binary")
    if classifier:
        to_proba = info.to_proba  # the net's own predict nonlinearity

        # ... applied in float64: rows sum to one within 1e-12.
        def post(t):
            return to_proba(t.to(torch.float64))
    else:
        # skorch's predict of a regressor (or any net) is its predict_proba:
        # the forward output through the same nonlinearity (identity for MSE).
        post = net._get_predict_nonlinearity()
    out = run_torch(
        info.module,
        X32,
        who,
        batch_size=_net_batch_size(net, X32.shape[0], who),
        postprocess=post,
        dtype=np.float64,
    )
    if not classifier:
        return out  # skorch regressors predict shape (n, n_targets)
    proba = normalize_proba(out)
    if method == "predict_proba":
        return proba
    if info.kind == "binary":
        return info.classes[(proba[:, 1] > net.threshold).astype(int)]
    # Labels from classes_, where skorch's own predict returns column indices.
    return info.classes[np.argmax(proba, axis=1)]


def member_outputs(name, est, rows, method):
    """One member's ``predict_proba`` (float64, rows summing to one) or ``predict``."""
    kind = member_kind(est)
    who = f"Member {name!r} ({type(est).__name__})"
    X = rows.for_member(est, kind)
    if kind == "rows":
        proba = est._proba_from_rows(X, who=who)
        if method == "predict_proba":
            return proba
        return est.classes_[np.argmax(proba, axis=1)]
    if kind == "net":
        return _net_outputs(est, X, who, method)
    out = getattr(est, method)(X)
    if method == "predict_proba":
        return normalize_proba(out)
    return np.asarray(out)


# -- fitted state ------------------------------------------------------------------


def _fitted_state(estimator):
    return {
        k: v for k, v in vars(estimator).items()
        if (k.endswith("_") and not k.startswith("__")) or k in VALIDATION_ATTRIBUTES
    }


@contextmanager
def fit_or_restore(estimator):
    """Run a ``fit`` body; if it raises, put the previous fitted state back.

    A failed ``fit`` then leaves either the previous fitted estimator, intact,
    or (first fit) an unfitted one, never new attributes beside old ones.
    """
    before = _fitted_state(estimator)
    try:
        yield
    except BaseException:
        for key in _fitted_state(estimator):
            delattr(estimator, key)
        vars(estimator).update(before)
        raise
