"""``MergedHeadsClassifier``: a merge of heads, calibrated on held-out rows."""

import copy
from contextlib import ExitStack, contextmanager
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils import assert_all_finite
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d
from torch import nn

from .._dask import blockwise, dask_fit
from .._models import MODEL_CONSTRAINT
from .._params import ParamsChecked
from .._repr import DocLinkMixin
from .._inputs import VALIDATION_ATTRIBUTES, check_rows, module_refuses
from .._runner import (
    check_finite_output,
    module_lock,
    normalize_proba,
    resolve_device,
    run_module,
    to_proba,
)
from .._sklearn_compat import HasMethods, Interval, StrOptions, _fit_context
from ._calibration import fit_temperatures, linear_combiner, set_scaling
from ._cut import CutModel
from ._merge import merge_heads

__all__ = ["MergedHeadsClassifier"]


class MergedHeadsClassifier(ParamsChecked, DocLinkMixin, ClassifierMixin, BaseEstimator):
    """One calibrated classifier from heads that share a frozen backbone.

    ``fit`` merges the heads (:func:`merge_heads`), computes the heads' outputs
    on the given rows once (batched, without gradients) and fits only the
    calibration on them -- never the backbone or the heads, whose weights stay
    bitwise as they were. ``predict_proba`` runs the backbone once per batch.

    The backbone and heads are pretrained and shared, as
    :class:`sklearn.frozen.FrozenEstimator` shares its estimator: ``clone``
    (and so every fold and candidate of a search) keeps the same module
    objects instead of copying them, and ``fit`` leaves them as they were --
    weights, buffers, train flags, device. Calls from several threads give
    the sequential results.

    Fit on held-out rows that cover all labels and that none of the heads was
    trained on: the calibration learns how the heads behave on new inputs,
    including inputs of labels a head never saw.

    Parameters
    ----------
    backbone : torch.nn.Module, ONNX model or (model, str)
        The shared frozen base model, or a complete pretrained model and the
        name of the first layer of its head; see :func:`merge_heads`. An ONNX
        model (path, ``onnx.ModelProto`` or :class:`~skchain.OnnxModel`) may
        stand for either, with a value name for the layer.
    heads : list of (str, module, labels) triples
        The heads, each with a unique name and the label of each output column;
        see :func:`merge_heads`. A head may be an ONNX model, or
        ``(onnx_model, value_name)``: its graph after that value.
    calibration : {"combiner", "temperature", "temperature_bias"} or None, \
            default="combiner"
        How the heads' outputs become probabilities over :attr:`classes_`:

        - ``"combiner"``: a classifier (``combiner``) trained on the
          concatenated head logits learns which head to trust for which
          outputs. The most accurate in the digits demonstration of the user
          guide, as good as a head retrained on all labels there; its number of
          parameters grows with ``n_columns x n_classes``.
        - ``"temperature"``: each head's logits are divided by a temperature
          fitted to minimise the log loss, so the heads' confidences are on
          one scale. One number per head.
        - ``"temperature_bias"``: a temperature and an additive bias per head
          (the bias sets how much probability mass a head gets a priori). Two
          numbers per head. Rescaling cannot stop a head from being confident
          on labels it never saw, so both temperature calibrations gain less
          than the combiner, and on some splits nothing.
        - ``None``: the naive merge, one softmax over all heads' logits
          (nothing is fitted; the baseline).
    combiner : classifier or None, default=None
        The model of ``calibration="combiner"``, cloned in ``fit``; it must
        have ``predict_proba``. ``None`` means
        ``LogisticRegression(max_iter=1000)``. Its parameters can be searched
        (``combiner__C``).
    device : {"auto", "cpu", "cuda"}, str or None, default=None
        Where the merged module runs; ``None`` runs it where the backbone and
        heads are. Your modules are never moved: when they are elsewhere,
        ``fit`` makes one copy of them on ``device`` (``merged_`` then holds
        the copy). To run without a copy, move them yourself and keep
        ``device=None``.
    batch_size : int, default=1024
        Rows per forward pass.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The union of the heads' labels, sorted. Labels in ``y`` that no head
        knows are an error.
    merged_ : MergedHeads
        The merged module, holding the given backbone and heads (not copies,
        unless ``device`` asked for one) and the fitted calibration: its
        forward gives the calibrated logits over ``classes_``, whose softmax is
        ``predict_proba`` -- one torch module to deploy. A combiner that is
        not a multinomial linear model (say a gradient boosting model) cannot
        live in the module: its
        ``merged_.combiner`` is ``None`` and ``predict_proba`` feeds
        :meth:`~MergedHeads.columns` to ``combiner_``.
    temperatures_ : ndarray of shape (n_heads,)
        Fitted temperature per head (ones when not calibrated by temperature).
    biases_ : ndarray of shape (n_heads,)
        Fitted bias per head (zeros unless ``"temperature_bias"``).
    combiner_ : classifier
        The fitted combiner (``calibration="combiner"`` only).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when X has string column names.

    See Also
    --------
    merge_heads : the merged torch module alone.

    Examples
    --------
    Two heads on one frozen feature extractor: one trained on digits 0-4, the
    other on 5-9, on different rows. Calibrated on held-out rows of all ten
    digits, the merge beats the naive softmax over both heads.

    >>> import numpy as np
    >>> import torch
    >>> from torch import nn
    >>> from sklearn.datasets import load_digits
    >>> from skorch import NeuralNetClassifier
    >>> from skchain import MergedHeadsClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X.astype(np.float32) / 16
    >>> _ = torch.manual_seed(0)
    >>> backbone = nn.Sequential(nn.Linear(64, 32), nn.Tanh())
    >>> def train_head(rows, labels):
    ...     net = NeuralNetClassifier(nn.Linear(32, 5), criterion=nn.CrossEntropyLoss,
    ...                               lr=0.5, max_epochs=30, train_split=None, verbose=0)
    ...     features = backbone(torch.from_numpy(X[rows])).detach()
    ...     return net.fit(features, np.searchsorted(labels, y[rows])).module_
    >>> low, high = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
    >>> rows = np.arange(1200)
    >>> heads = [
    ...     ("low", train_head(rows[(rows % 2 == 0) & (y[rows] < 5)], low), low),
    ...     ("high", train_head(rows[(rows % 2 == 1) & (y[rows] >= 5)], high), high),
    ... ]
    >>> held_out, test = slice(1200, 1500), slice(1500, None)
    >>> clf = MergedHeadsClassifier(backbone, heads).fit(X[held_out], y[held_out])
    >>> clf.classes_
    array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    >>> naive = MergedHeadsClassifier(backbone, heads, calibration=None)
    >>> naive_score = naive.fit(X[held_out], y[held_out]).score(X[test], y[test])
    >>> bool(clf.score(X[test], y[test]) > naive_score)  # about 0.82 against 0.77
    True
    >>> clf.merged_(torch.from_numpy(X[:2])).shape  # one calibrated torch module
    torch.Size([2, 10])
    """

    _parameter_constraints: dict = {
        "backbone": [*MODEL_CONSTRAINT, tuple],
        # Checked by merge_heads in fit, whose messages show how to spell heads
        # (a dict gets the one-line conversion to a list).
        "heads": "no_validation",
        "calibration": [StrOptions({"temperature", "temperature_bias", "combiner"}), None],
        "combiner": [HasMethods(["fit", "predict_proba"]), None],
        "device": [StrOptions({"auto", "cpu", "cuda"}), str, torch.device, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        backbone,
        heads,
        *,
        calibration="combiner",
        combiner=None,
        device=None,
        batch_size=1024,
    ):
        self.backbone = backbone
        self.heads = heads
        self.calibration = calibration
        self.combiner = combiner
        self.device = device
        self.batch_size = batch_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        # Only a combiner learns a mapping; the other calibrations keep the
        # heads' decisions up to a per-head rescaling.
        tags.classifier_tags.poor_score = self.calibration != "combiner"
        return tags

    def __sklearn_clone__(self):
        # As sklearn.frozen.FrozenEstimator shares its estimator: the pretrained
        # backbone and heads are shared by every clone (each fold and candidate
        # of a search), never deep-copied -- fit only reads them. The other
        # parameters (the combiner) are cloned as usual.
        params = self.get_params(deep=False)
        shared = {"backbone": params.pop("backbone"), "heads": params.pop("heads")}
        other = type(self)(**shared, **{k: clone(v, safe=False) for k, v in params.items()})
        for attribute in ("_metadata_request", "_sklearn_output_config"):
            if hasattr(self, attribute):
                setattr(other, attribute, copy.deepcopy(getattr(self, attribute)))
        return other

    def __sklearn_is_fitted__(self):
        return hasattr(self, "merged_")

    @_fit_context(prefer_skip_nested_validation=True)
    @dask_fit(
        lambda self: None
        if self.calibration is None
        else "it fits its calibration on the heads' outputs for every row"
    )
    def fit(self, X, y):
        """Fit the calibration on held-out rows; the networks are not trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Backbone inputs, one row per sample (any numeric dtype, memory
            order or container, converted to C-ordered float32 once): a table
            ``(n_samples, n_features)`` or, for an image backbone, the images
            ``(n_samples, C, H, W)``, handed to it unchanged. A dask array is refused
            (the calibration needs the heads' outputs on every row: compute
            the held-out rows), except with ``calibration=None``, which reads
            only its first rows.
        y : array-like of shape (n_samples,)
            Labels, each one a label of some head.

        Returns
        -------
        self : MergedHeadsClassifier
        """
        # Nothing is assigned to self until every step has succeeded: a fit
        # that raises (or is interrupted) leaves the previous fitted state, or
        # none, never half of each.
        previous = _fitted_attributes(self)
        try:
            fitted = self._fit(X, y)
        except BaseException:
            _replace_fitted_attributes(self, previous)
            raise
        validated = _fitted_attributes(self)
        fitted.update({k: validated[k] for k in VALIDATION_ATTRIBUTES if k in validated})
        _replace_fitted_attributes(self, fitted)
        return self

    def _fit(self, X, y):
        """Everything ``fit`` learns, as a dict of fitted attributes."""
        device = resolve_device(self.device)
        merged = merge_heads(self.backbone, self.heads)
        _check_initialised(merged)
        X = check_rows(self, X, reset=True)
        y = column_or_1d(y, warn=True)
        if y.dtype.kind == "f":
            assert_all_finite(y, input_name="y")
        check_consistent_length(X, y)
        check_classification_targets(y)
        unknown = np.setdiff1d(np.unique(y), merged.classes)
        if unknown.size:
            raise ValueError(
                f"y has labels {unknown.tolist()[:10]} that no head knows; the heads "
                f"cover {merged.classes.tolist()[:20]}. Give each head's labels in "
                "`heads`, or drop rows of other labels."
            )
        if self.calibration is not None and len(np.unique(y)) < 2:
            raise ValueError(
                f"calibration={self.calibration!r} learns how the heads compare, which "
                "needs held-out rows of at least two classes; y has one class. Use "
                "calibration=None for the naive merge."
            )
        merged = _on_device(merged, device)
        self._run(merged, _Probe(merged), X[:2])
        n_heads = len(merged.head_names)
        fitted = {
            "temperatures_": np.ones(n_heads),
            "biases_": np.zeros(n_heads),
        }
        if self.calibration is not None:
            # The heads' outputs on every row, computed once: all calibrations
            # are fitted on this small frozen matrix, not on the networks.
            Z = self._run(merged, _Columns(merged), X, dtype=np.float64)
            bad = ~np.isfinite(Z).all(axis=1)
            if bad.any():
                # A calibration fitted on NaN would be NaN (or the combiner's
                # error would blame X, which is finite): say where it comes from.
                raise ValueError(
                    f"The heads produced NaN or infinity on {int(bad.sum())} of "
                    f"{len(Z)} rows of X (first: row {int(np.flatnonzero(bad)[0])}), "
                    "so the calibration cannot be fitted. Check the backbone's and "
                    "heads' weights, and scale X as the backbone was trained on."
                )
            if self.calibration == "combiner":
                combiner = self.combiner
                if combiner is None:
                    combiner = LogisticRegression(max_iter=1000)
                combiner = clone(combiner).fit(Z, y)
                linear = linear_combiner(combiner, merged.classes, Z)
                if linear is not None:
                    merged.combiner = linear.to(merged.column_scale.device)
                fitted["combiner_"] = combiner
            else:
                y_index = np.searchsorted(merged.classes, y)
                scale, bias = fit_temperatures(
                    merged, Z, y_index, with_bias=self.calibration == "temperature_bias"
                )
                set_scaling(merged, scale, bias)
                fitted["temperatures_"] = 1.0 / scale
                fitted["biases_"] = bias
        fitted["merged_"] = merged
        fitted["classes_"] = merged.classes
        return fitted

    def _run(self, merged, module, X, **kwargs):
        with _holding(merged):
            return run_module(module, X, batch_size=self.batch_size, **kwargs)

    @blockwise(lambda self: ((len(self.classes_),), np.float64))
    def predict_proba(self, X):
        """Probabilities over :attr:`classes_`.

        Parameters
        ----------
        X : array-like or dask collection of shape (n_samples, n_features)
            A dask array or DataFrame gives a lazy dask array of the same
            rows, computed block by block (user guide: *Large data and clusters*).

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            float64; each row sums to one (within 1e-12).
        """
        check_is_fitted(self)
        self._check_params()  # as fit does; set_params may have changed them since
        X = check_rows(self, X, reset=False)
        merged = self.merged_
        who = type(self).__name__
        if len(self.classes_) == 1:
            # One label in all heads: a softmax over one column is all ones.
            return np.ones((X.shape[0], 1))
        if "combiner_" not in vars(self) or merged.combiner is not None:
            proba = self._run(merged, merged, X, postprocess=to_proba, dtype=np.float64)
            return check_finite_output(proba, who)
        columns = self._run(merged, _Columns(merged), X, dtype=np.float64)
        check_finite_output(columns, f"{who}'s heads")
        proba = normalize_proba(self.combiner_.predict_proba(columns))
        # The combiner knows the labels present in y; others get probability 0.
        out = np.zeros((X.shape[0], len(self.classes_)))
        out[:, np.searchsorted(self.classes_, self.combiner_.classes_)] = proba
        return out

    @blockwise(lambda self: ((), self.classes_.dtype))
    def predict(self, X):
        """The most probable label of each row.

        Parameters
        ----------
        X : array-like or dask collection of shape (n_samples, n_features)
            A dask array or DataFrame gives a lazy dask array of the same
            rows, computed block by block (user guide: *Large data and clusters*).

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


def _fitted_attributes(estimator):
    return {
        k: v for k, v in vars(estimator).items()
        if (k.endswith("_") and not k.startswith("_")) or k in VALIDATION_ATTRIBUTES
    }


def _replace_fitted_attributes(estimator, attributes):
    for name in _fitted_attributes(estimator):
        delattr(estimator, name)
    for name, value in attributes.items():
        setattr(estimator, name, value)


def _check_initialised(merged):
    """Refuse lazy parameters: running the modules would initialise (change) them."""
    lazy = [
        name
        for name, tensor in [*merged.named_parameters(), *merged.named_buffers()]
        if nn.parameter.is_lazy(tensor)
    ]
    if lazy:
        raise ValueError(
            f"The backbone or heads have uninitialised lazy parameters ({lazy[:3]}); "
            "running them would initialise them, changing your modules. Pretrained "
            "modules are used as they are: run the model once on a batch of real "
            "input before merging."
        )


def _on_device(merged, device):
    """``merged`` when its tensors are on ``device`` already, else one copy there.

    The user's modules are never moved: moving would change their device under
    the user's feet (and under other estimators that share them).
    """
    if device is None:
        return merged
    target = torch.device(device)
    tensors = [*merged.parameters(), *merged.buffers()]
    if all(
        t.device.type == target.type and target.index in (None, t.device.index) for t in tensors
    ):
        return merged
    return copy.deepcopy(merged).to(target)


@contextmanager
def _holding(merged):
    """Hold the runner's locks of ``merged`` and of the user's modules it runs.

    Clones share the backbone and heads, so two fitted clones (folds of a
    threaded search) run the same modules; the runner locks only the module it
    is given. The locks are taken in one global order (by id), so two threads
    never wait for each other's.
    """
    backbone = merged.backbone
    if isinstance(backbone, CutModel):
        backbone = backbone.model
    modules = {id(m): m for m in [merged, backbone, *merged.heads.values()]}
    with ExitStack() as stack:
        for key in sorted(modules):
            stack.enter_context(module_lock(modules[key]))
        yield


class _Columns(nn.Module):
    """``merged.columns`` as a forward, for :func:`~skchain._runner.run_module`."""

    def __init__(self, merged):
        super().__init__()
        self.merged = merged

    def forward(self, x):
        return self.merged.columns(x)


class _Probe(nn.Module):
    """The merged forward step by step, naming the part that fails.

    Run on two rows in ``fit`` before the whole pass, so that a head that does
    not fit the backbone is named instead of failing deep inside torch.
    """

    def __init__(self, merged):
        super().__init__()
        self.merged = merged

    def forward(self, x):
        merged = self.merged
        try:
            features = merged.backbone(x)
        except RuntimeError as exc:
            raise module_refuses(x, exc, who="The backbone") from exc
        if not isinstance(features, torch.Tensor):
            raise TypeError(
                f"The backbone returned {type(features).__name__}; it must return "
                "one tensor, the heads' input (cut a complete model with "
                "(model, layer_name))."
            )
        outputs = []
        for name, width in zip(merged.head_names, merged.head_widths, strict=True):
            try:
                outputs.append(merged._run_head(name, width, features))
            except RuntimeError as exc:
                raise ValueError(
                    f"Head {name!r} failed on the backbone's output of shape "
                    f"{tuple(features.shape)}: {exc}. Its first layer must take "
                    f"{tuple(features.shape[1:])} features per row; was it trained "
                    "on this backbone?"
                ) from exc
        return torch.cat(outputs, dim=1)
