"""A plain pretrained torch classifier module as a scikit-learn classifier."""

import copy
import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from ._dask import blockwise, dask_fit
from ._members import fit_or_restore, run_torch
from ._models import MODEL_CONSTRAINT, as_module
from ._onnx_model import OnnxModel
from ._params import ParamsChecked
from ._repr import DocLinkMixin
from ._inputs import check_rows
from ._runner import module_lock, normalize_proba, resolve_device, to_proba
from ._sklearn_compat import Interval, StrOptions, _fit_context

__all__ = ["ModuleClassifier"]

# How far a row of float32 probabilities may be from summing to one before
# output="proba" is judged wrong (float32 softmax rows are within ~1e-6).
_PROBA_SUM_TOL = 1e-3


def _as_float64(t):
    return t.to(torch.float64)


def _lives_on(module, device):
    target = torch.device(device)
    return all(
        t.device.type == target.type and target.index in (None, t.device.index)
        for t in [*module.parameters(), *module.buffers()]
    )


def check_known_labels(y, classes, who):
    """Raise a ``ValueError`` for labels in ``y`` that are not in ``classes``."""
    unknown = np.setdiff1d(np.unique(y), classes)
    if unknown.size:
        raise ValueError(
            f"y has labels {unknown.tolist()!r:.80} that {who} cannot predict (the "
            f"classes it knows are {classes.tolist()!r:.80}); fit on rows of those "
            "classes only."
        )


class ModuleClassifier(ParamsChecked, DocLinkMixin, ClassifierMixin, BaseEstimator):
    """A pretrained torch classifier module as a scikit-learn classifier.

    The module is used as it is: it is never trained, copied or changed, and
    ``fit`` only checks the data and records ``n_features_in_``. Because a
    pretrained module needs no fitting, a ``ModuleClassifier`` predicts right
    after construction too, so it can be given to
    :class:`OutputEnsembleClassifier` directly; its parameters are then
    checked at the first call.

    Parameters
    ----------
    module : torch.nn.Module, Keras 3 model, ONNX path or onnx.ModelProto
        The trained network; it maps a float32 batch of shape
        ``(n, n_features)`` (or ``(n, ...)``, e.g. images) to one output
        column per class (or a single logit column for two classes). A Keras
        3 model on the torch backend is a torch module; an ONNX model runs in
        onnxruntime as a :class:`~skchain.OnnxModel`.
    classes : array-like of shape (n_classes,)
        The label of each output column, in column order (the labels the
        module was trained with, e.g. as encoded by a ``LabelEncoder``).
    output : {"logits", "proba"}, default="logits"
        What the module returns: logits (softmax, or a sigmoid for a single
        column, is applied in float64) or probabilities (renormalised in
        float64). Outputs that cannot be probabilities with ``"proba"`` raise
        a ``ValueError``; outputs that look like probabilities with
        ``"logits"`` give a ``UserWarning``.
    batch_size : int, default=1024
        Rows per forward pass.
    device : {"auto", "cpu", "cuda"}, str, torch.device or None, default=None
        Where the module runs; the batches are moved there, never the whole
        ``X``, and the results come back as NumPy on the CPU. ``None`` runs it
        where it lives; ``"auto"`` picks CUDA when available. Your module is
        never moved: when it lives elsewhere, ``fit`` makes one private copy
        on ``device`` (``module_``), which later calls reuse; used without
        ``fit``, each call makes its own copy. Move the module yourself
        (``module.to("cuda")``) and keep ``device=None`` to run without a
        copy.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        ``classes`` as an array.
    module_ : torch.nn.Module
        The module that runs (only after ``fit``): ``module`` itself, or its
        copy on ``device``.
    n_features_in_ : int
        Number of features seen in ``fit`` (only after ``fit``; before it, any
        width the module accepts is used).
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

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
        "module": MODEL_CONSTRAINT,
        "classes": ["array-like"],
        "output": [StrOptions({"logits", "proba"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [StrOptions({"auto", "cpu", "cuda"}), str, torch.device, None],
    }

    def __init__(self, module, classes, *, output="logits", batch_size=1024, device=None):
        self.module = module
        self.classes = classes
        self.output = output
        self.batch_size = batch_size
        self.device = device

    def __sklearn_clone__(self):
        # As sklearn.frozen.FrozenEstimator: the pretrained module (a torch
        # module, a Keras model, an ONNX model) is shared by every clone -- each
        # fold and candidate of a search -- never copied; the other parameters
        # are cloned as usual.
        params = {k: clone(v, safe=False)
                  for k, v in self.get_params(deep=False).items() if k != "module"}
        other = type(self)(module=self.module, **params)
        if hasattr(self, "_metadata_request"):
            other._metadata_request = copy.deepcopy(self._metadata_request)
        return other

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
    @dask_fit(lambda self: None)
    def fit(self, X, y=None):
        """Check ``X`` (and ``y``) and record their width; the module is not trained.

        The module runs on the first row, so a module that cannot take ``X``
        or whose outputs do not match ``classes`` fails here.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Of a dask array or DataFrame only the first rows are read.
        y : array-like of shape (n_samples,), default=None
            If given, every label must be one of ``classes`` (with a dask
            ``X``: its length is checked, its first labels).

        Returns
        -------
        self : ModuleClassifier
        """
        with fit_or_restore(self):
            classes = self.classes_
            X32 = check_rows(self, X, reset=True)
            if y is not None:
                y = column_or_1d(y, warn=True)
                if y.shape[0] != X32.shape[0]:
                    raise ValueError(
                        f"X has {X32.shape[0]} rows but y has {y.shape[0]}; give one "
                        "label per row."
                    )
                check_classification_targets(y)
                check_known_labels(y, classes, type(self).__name__)
            running = self._running_module()
            self.module_ = running
            self._module_on_device_ = (self.module, resolve_device(self.device), running)
            self._proba_from_rows(X32[:1])
        return self

    def _running_module(self):
        """The module to run: ``module``, or a copy of it on ``device`` (the
        one ``fit`` made, while ``module`` and ``device`` are still those)."""
        device = resolve_device(self.device)
        module = as_module(self.module, "module")
        # An ONNX model runs in onnxruntime, wherever ``device`` is: no copy.
        if device is None or isinstance(module, OnnxModel) or _lives_on(module, device):
            return module
        kept = vars(self).get("_module_on_device_")
        if kept is not None and kept[0] is self.module and kept[1] == device:
            return kept[2]
        with module_lock(module):  # not while another thread runs it
            return copy.deepcopy(module).to(device)

    def _proba_from_rows(self, X32, who=None):
        """Probabilities for validated C-ordered float32 rows (the runner path)."""
        self._check_params()  # also when used without fit, the documented way
        classes = self.classes_
        who = who or type(self).__name__
        first = []  # the first batch's raw output, to check what the module returns

        def post(t):
            if not first:
                first.append(t[:8].to(torch.float64).cpu().numpy())
            return to_proba(t) if self.output == "logits" else _as_float64(t)

        proba = run_torch(
            self._running_module(),
            X32,
            f"{who}'s module",
            batch_size=self.batch_size,
            postprocess=post,
            dtype=np.float64,
        )
        if proba.shape[1] != classes.size:
            raise ValueError(
                f"{who}: the module gives {proba.shape[1]} probability columns per "
                f"row but classes has {classes.size} labels; give one label per "
                "output column."
            )
        if self.output == "proba":
            finite = np.isfinite(proba).all(axis=1)
            sums = proba[finite].sum(axis=1)
            if (proba[finite] < 0).any() or (np.abs(sums - 1) > _PROBA_SUM_TOL).any():
                raise ValueError(
                    f'{who} has output="proba", but the module\'s outputs are not '
                    f"probabilities (row sums from {sums.min():.3g} to {sums.max():.3g}, "
                    f"minimum {proba[finite].min():.3g}). If it returns logits, use "
                    'output="logits".'
                )
            return normalize_proba(proba)
        raw = first[0].reshape(first[0].shape[0], -1)
        if raw.shape[1] > 1 and np.isfinite(raw).all():
            if (raw >= 0).all() and np.allclose(raw.sum(axis=1), 1, atol=1e-5):
                warnings.warn(
                    f'{who} has output="logits", but the module\'s outputs look like '
                    "probabilities (non-negative rows summing to one); a softmax of "
                    'them flattens the prediction. Use output="proba" if the module '
                    "ends with a softmax.",
                    UserWarning,
                    stacklevel=3,
                )
        return proba

    @blockwise(lambda self: ((self.classes_.size,), np.float64))
    def predict_proba(self, X):
        """Class probabilities from the module, in float64.

        Parameters
        ----------
        X : array-like or dask collection of shape (n_samples, n_features)
            A dask array or DataFrame gives a lazy dask array of the same
            rows, computed block by block (user guide: *Large data and clusters*).
            Any numeric dtype, memory order or container; NaN or infinity is
            a ``ValueError``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Each row sums to one within 1e-12.
        """
        self._check_params()
        X32 = check_rows(self, X, reset=False)
        return self._proba_from_rows(X32)

    @blockwise(lambda self: ((), self.classes_.dtype))
    def predict(self, X):
        """The most probable class of each row.

        Parameters
        ----------
        X : array-like or dask collection of shape (n_samples, n_features)
            A dask array or DataFrame gives a lazy dask array of the same
            rows, computed block by block (user guide: *Large data and clusters*).

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
