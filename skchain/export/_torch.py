"""Export a fitted chain as one torch module.

Size (over 600 lines): one small converter per supported scikit-learn step
(scalers, projections, linear models, containers), each a few lines; keeping
them in one table is what lets a reader see what ``to_torch`` covers.

``to_torch`` returns one ``torch.nn.Module``:
Each supported step becomes a small module holding its fitted numbers as
float32 buffers (so ``.to(device)`` moves them), and the steps are composed as
the scikit-learn containers compose them. skchain's own estimators contribute
the very module they run, with the output selection and post-processing of
their fitted plan, so the torch graph computes what ``transform`` and
``predict_proba`` compute.

Reading skchain's fitted internals is kept to one small function per
estimator type (``_neural_parts``, ``_module_classifier_parts``,
``_merged_heads_parts``, ``_ensemble_parts``).
"""

import copy
from contextlib import ExitStack

import numpy as np
import torch
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.linear_model import (
    ARDRegression,
    BayesianRidge,
    ElasticNet,
    ElasticNetCV,
    HuberRegressor,
    Lars,
    Lasso,
    LassoCV,
    LassoLars,
    LinearRegression,
    LogisticRegression,
    LogisticRegressionCV,
    Ridge,
    RidgeCV,
    SGDRegressor,
)
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, StandardScaler
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .._neural import NeuralTransformer
from .._capture import CutAt, _first_tensor
from .._models import as_module
from .._runner import module_lock
from ..ensemble import ModuleClassifier, OutputEnsembleClassifier, OutputEnsembleRegressor
from ..heads import MergedHeadsClassifier
from ..text import TextEmbedder

__all__ = ["to_torch"]

# The linear regressors whose predict is ``X @ coef_.T + intercept_``.
LINEAR_REGRESSORS = (
    ARDRegression,
    BayesianRidge,
    ElasticNet,
    ElasticNetCV,
    HuberRegressor,
    Lars,
    Lasso,
    LassoCV,
    LassoLars,
    LinearRegression,
    Ridge,
    RidgeCV,
    SGDRegressor,
)

# As in OutputEnsembleClassifier: a member's row sum is floored before dividing.
_EPS = 1e-12


def _f32(array):
    return torch.as_tensor(np.asarray(array, dtype=np.float32))


# -- building blocks -------------------------------------------------------------


class Standardize(nn.Module):
    """``(x - mean) / scale``, the two optional (StandardScaler)."""

    def __init__(self, mean, scale):
        super().__init__()
        self.register_buffer("mean", None if mean is None else _f32(mean))
        self.register_buffer("scale", None if scale is None else _f32(scale))

    def forward(self, x):
        if self.mean is not None:
            x = x - self.mean
        if self.scale is not None:
            x = x / self.scale
        return x


class MinMax(nn.Module):
    """``x * scale + min``, clipped to the range when the scaler clips."""

    def __init__(self, scale, offset, clip_range=None):
        super().__init__()
        self.register_buffer("scale", _f32(scale))
        self.register_buffer("offset", _f32(offset))
        self.clip_range = None if clip_range is None else tuple(map(float, clip_range))

    def forward(self, x):
        x = x * self.scale + self.offset
        if self.clip_range is not None:
            x = torch.clamp(x, self.clip_range[0], self.clip_range[1])
        return x


class Project(nn.Module):
    """``x @ weight.T - offset``, optionally divided by ``divisor`` (PCA, SVD)."""

    def __init__(self, weight, offset=None, divisor=None):
        super().__init__()
        self.register_buffer("weight", _f32(weight))
        self.register_buffer("offset", None if offset is None else _f32(offset))
        self.register_buffer("divisor", None if divisor is None else _f32(divisor))

    def forward(self, x):
        x = x @ self.weight.T
        if self.offset is not None:
            x = x - self.offset
        if self.divisor is not None:
            x = x / self.divisor
        return x


class Linear(nn.Module):
    """``x @ coef.T + intercept``; 1-D coefficients give 1-D predictions."""

    def __init__(self, coef, intercept):
        super().__init__()
        coef = np.asarray(coef)
        self.one_d = coef.ndim == 1
        self.register_buffer("coef", _f32(np.atleast_2d(coef)))
        self.register_buffer("intercept", _f32(np.ravel(intercept)))

    def forward(self, x):
        out = x @ self.coef.T + self.intercept
        return out[:, 0] if self.one_d else out


class LogisticProba(nn.Module):
    """LogisticRegression's ``predict_proba``: sigmoid pair (binary) or softmax."""

    def __init__(self, coef, intercept):
        super().__init__()
        self.register_buffer("coef", _f32(coef))
        self.register_buffer("intercept", _f32(intercept))

    def forward(self, x):
        z = x @ self.coef.T + self.intercept
        if z.shape[1] == 1:
            p = torch.sigmoid(z)
            return torch.cat([1 - p, p], dim=1)
        return torch.softmax(z, dim=1)


class Columns(nn.Module):
    """ColumnTransformer: each part on its columns, outputs side by side."""

    def __init__(self, parts, indices):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        for i, idx in enumerate(indices):
            self.register_buffer(f"index{i}", torch.as_tensor(np.asarray(idx, dtype=np.int64)))

    def forward(self, x):
        outs = [
            part(x[:, getattr(self, f"index{i}")]) for i, part in enumerate(self.parts)
        ]
        return torch.cat([o.reshape(o.shape[0], -1) for o in outs], dim=1)


class Union(nn.Module):
    """FeatureUnion: every part on all columns, weighted, side by side."""

    def __init__(self, parts, weights):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.weights = [None if w is None else float(w) for w in weights]

    def forward(self, x):
        outs = []
        for part, w in zip(self.parts, self.weights, strict=True):
            out = part(x)
            outs.append(out if w is None else out * w)
        return torch.cat([o.reshape(o.shape[0], -1) for o in outs], dim=1)


class NetOutput(nn.Module):
    """A net's selected output: the layers captured, then the post-processing.

    The same plan ``NeuralTransformer.transform`` executes, as a module: a
    cut at the plan's layers (all layers run, so tracers see the whole graph)
    and the plan's post-processing, in float32.
    """

    def __init__(self, module, layers=None, layer_inputs=False, postprocess=None):
        super().__init__()
        if layers:
            prefix = _sequential_prefix(module, layers, layer_inputs)
            if prefix is not None:
                module = prefix
            else:
                module = CutAt(module, layers, inputs=layer_inputs, stop_early=False)
        self.body = module
        self.postprocess = postprocess

    def forward(self, x):
        out = _first_tensor(self.body(x), "<final output>")
        if self.postprocess is not None:
            out = self.postprocess(out)
        return out.reshape(out.shape[0], -1).to(torch.float32)


def _sequential_prefix(module, layers, inputs):
    """The first layers of a plain ``nn.Sequential`` up to one of its children.

    What the hooks capture there, computed without hooks (so the module
    compiles as one graph and runs faster). ``None`` when that is not certain:
    a subclass (its forward may differ), a child used twice, several layers
    or a deeper name.
    """
    if type(module) is not nn.Sequential or len(layers) != 1:
        return None
    names = [name for name, _ in module.named_children()]
    if len(names) != len(module) or layers[0] not in names:
        return None
    stop = names.index(layers[0]) + (0 if inputs else 1)
    return module[:stop]


class Softmax(nn.Module):
    """``module``'s output as probabilities: softmax of logits or taken as is,
    then each row divided by its sum (what the classifiers do in float64)."""

    def __init__(self, module, logits=True, renormalize=True):
        super().__init__()
        self.module = module
        self.logits = logits
        self.renormalize = renormalize

    def forward(self, x):
        out = _first_tensor(self.module(x), "<final output>").to(torch.float32)
        if self.logits:
            out = torch.softmax(out, dim=1)
        if self.renormalize:
            out = out / out.sum(dim=1, keepdim=True)
        return out


class HeadColumns(nn.Module):
    """Merged heads' calibrated columns (the input of a combiner)."""

    def __init__(self, merged):
        super().__init__()
        self.merged = merged

    def forward(self, x):
        return self.merged.columns(x)


class SoftVote(nn.Module):
    """Weighted mean of member probabilities, aligned to the shared classes."""

    def __init__(self, members, orders, weights):
        super().__init__()
        self.members = nn.ModuleList(members)
        for i, order in enumerate(orders):
            self.register_buffer(f"order{i}", torch.as_tensor(np.asarray(order, dtype=np.int64)))
        self.register_buffer("weights", None if weights is None else _f32(weights))

    def aligned(self, x):
        out = []
        for i, member in enumerate(self.members):
            p = member(x)
            p = p / torch.clamp(p.sum(dim=1, keepdim=True), min=_EPS)
            out.append(p[:, getattr(self, f"order{i}")])
        return out

    def forward(self, x):
        parts = self.aligned(x)
        return sum(w * p for w, p in zip(self.weights, parts, strict=True))


class HardVote(SoftVote):
    """Weighted vote shares: member labels one-hot, aligned, weighted and summed."""

    def aligned(self, x):
        out = []
        for i, member in enumerate(self.members):
            p = member(x)
            onehot = torch.zeros_like(p).scatter_(1, p.argmax(dim=1, keepdim=True), 1.0)
            out.append(onehot[:, getattr(self, f"order{i}")])
        return out


class Stacked(nn.Module):
    """Members' aligned outputs side by side, fed to a final estimator.

    ``place`` (shape ``(final width, n_classes)``, one-hot) puts the final
    classifier's columns at their classes (a missing class gets 0); ``None``
    for a regressor.
    """

    def __init__(self, vote, final, place=None):
        super().__init__()
        self.vote = vote
        self.final = final
        self.register_buffer("place", None if place is None else _f32(place))

    def forward(self, x):
        features = torch.cat(self.vote.aligned(x), dim=1)
        out = self.final(features)
        return out if self.place is None else out @ self.place


class MeanRegression(nn.Module):
    """Weighted mean of member predictions (OutputEnsembleRegressor)."""

    def __init__(self, members, weights, one_d):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", None if weights is None else _f32(weights))
        self.one_d = one_d

    def predictions(self, x):
        return [m(x).reshape(x.shape[0], -1) for m in self.members]

    def forward(self, x):
        out = sum(w * p for w, p in zip(self.weights, self.predictions(x), strict=True))
        return out[:, 0] if self.one_d else out


class StackedRegression(nn.Module):
    def __init__(self, mean, final):
        super().__init__()
        self.mean = mean
        self.final = final

    def forward(self, x):
        return self.final(torch.cat(self.mean.predictions(x), dim=1))


class Served(nn.Module):
    """The module ``to_torch`` returns: float32 rows in, the chain's output out.

    Attributes
    ----------
    classes_ : ndarray or None
        For a classifier: the label of each probability column
        (``classes_[proba.argmax(1)]`` is ``predict``).
    kind : {"classifier", "regressor", "transformer"}
    """

    def __init__(self, body, kind, classes=None):
        super().__init__()
        self.body = body
        self.kind = kind
        self.classes_ = None if classes is None else np.asarray(classes)

    def forward(self, x):
        return self.body(x)

    def extra_repr(self):
        return f"kind={self.kind!r}"


# -- skchain internals: one small reader per estimator type -----------------------


def _neural_parts(est):
    """(module, layers, layer_inputs, postprocess) of a fitted NeuralTransformer."""
    est._check_params()  # as its transform does
    plan = est._plan
    return est.module_, plan.layers, plan.layer_inputs, plan.postprocess


def _module_classifier_parts(est):
    """(module, is_logits, classes) of a ModuleClassifier."""
    est._check_params()  # as its predict does
    return as_module(est.module, "module"), est.output == "logits", est.classes_


def _merged_heads_parts(est):
    """(merged module giving logits or None when the combiner cannot live in it, classes)."""
    est._check_params()  # as its predict does
    merged = est.merged_
    if est.calibration == "combiner" and merged.combiner is None:
        return None, est.classes_
    return merged, est.classes_


def _ensemble_parts(est):
    """(members, column positions per member, weights, final estimator) of a fitted ensemble."""
    est._check_use()  # as its predict does
    columns = getattr(est, "_columns_", None)
    return [e for _, e in est.estimators], columns, est.weights_, est.final_estimator_


# -- conversion ------------------------------------------------------------------


class _Converted:
    """A converted step: its module, and what its output is."""

    def __init__(self, module, kind, classes=None):
        self.module = module
        self.kind = kind
        self.classes = classes


def _unsupported(est, where, why=None):
    why = why or "it has no torch equivalent in skchain.to_torch"
    return TypeError(
        f"Cannot convert {where} ({type(est).__name__}) to torch: {why}. "
        "skchain.to_torch converts skchain's estimators, StandardScaler, MinMaxScaler, "
        "PCA, TruncatedSVD, LogisticRegression, the linear regressors, Pipeline, "
        "ColumnTransformer and FeatureUnion; export any scikit-learn step that "
        "skl2onnx supports with skchain.to_onnx instead."
    )


def _name(where, name):
    return f"step {name!r}" if where == "the estimator" else f"{where} > {name!r}"


def _convert(est, where="the estimator"):
    if isinstance(est, str) and est == "passthrough" or est is None:
        return _Converted(nn.Identity(), "transformer")
    if isinstance(est, TextEmbedder):
        raise TypeError(
            f"Cannot convert {where} (TextEmbedder) to torch or ONNX: its tokenizer "
            "runs in Python on strings, outside any graph. Compute the embeddings with "
            "the TextEmbedder and export the rest of the chain from its embeddings on, "
            "e.g. skchain.to_torch(pipe[1:]) or skchain.to_onnx(pipe[1:], embeddings)."
        )
    check_is_fitted(est)
    if isinstance(est, Pipeline):
        steps = [(n, s) for n, s in est.steps if s is not None and s != "passthrough"]
        if not steps:
            return _Converted(nn.Identity(), "transformer")
        parts = [_convert(s, _name(where, n)) for n, s in steps]
        last = parts[-1]
        return _Converted(nn.Sequential(*[p.module for p in parts]), last.kind, last.classes)
    if isinstance(est, ColumnTransformer):
        return _convert_columns(est, where)
    if isinstance(est, FeatureUnion):
        parts, weights = [], []
        tw = est.transformer_weights or {}
        for name, trans in est.transformer_list:
            if isinstance(trans, str) and trans == "drop":
                continue
            parts.append(_convert(trans, _name(where, name)).module)
            weights.append(tw.get(name))
        return _Converted(Union(parts, weights), "transformer")
    if isinstance(est, NeuralTransformer):
        module, layers, layer_inputs, post = _neural_parts(est)
        return _Converted(NetOutput(module, layers, layer_inputs, post), "transformer")
    if isinstance(est, ModuleClassifier):
        module, logits, classes = _module_classifier_parts(est)
        return _Converted(Softmax(module, logits=logits, renormalize=logits), "classifier",
                          classes)
    if isinstance(est, MergedHeadsClassifier):
        merged, classes = _merged_heads_parts(est)
        if merged is None:
            raise _unsupported(
                est, where,
                f"its combiner {type(est.combiner_).__name__} is not a multinomial linear "
                "model, so it is not part of the merged torch module; use a "
                "LogisticRegression combiner, or skchain.to_onnx, which converts the "
                "combiner with skl2onnx",
            )
        return _Converted(Softmax(merged, logits=True, renormalize=False), "classifier",
                          classes)
    if isinstance(est, OutputEnsembleClassifier):
        return _convert_ensemble_classifier(est, where)
    if isinstance(est, OutputEnsembleRegressor):
        return _convert_ensemble_regressor(est, where)
    if isinstance(est, FunctionTransformer) and est.func is None:
        # What ColumnTransformer stores for "passthrough".
        return _Converted(nn.Identity(), "transformer")
    if isinstance(est, StandardScaler):
        return _Converted(Standardize(est.mean_, est.scale_), "transformer")
    if isinstance(est, MinMaxScaler):
        return _Converted(
            MinMax(est.scale_, est.min_, est.feature_range if est.clip else None),
            "transformer",
        )
    if isinstance(est, PCA):
        C = np.asarray(est.components_, dtype=np.float64)
        offset = np.asarray(est.mean_, dtype=np.float64) @ C.T
        divisor = np.sqrt(est.explained_variance_) if est.whiten else None
        return _Converted(Project(C, offset, divisor), "transformer")
    if isinstance(est, TruncatedSVD):
        return _Converted(Project(est.components_), "transformer")
    if isinstance(est, (LogisticRegression, LogisticRegressionCV)):
        if len(est.classes_) > 2 and getattr(est, "multi_class", "auto") == "ovr":
            raise _unsupported(est, where, "one-vs-rest probabilities are not supported")
        return _Converted(LogisticProba(est.coef_, est.intercept_), "classifier", est.classes_)
    if isinstance(est, LINEAR_REGRESSORS):
        return _Converted(Linear(est.coef_, est.intercept_), "regressor")
    raise _unsupported(est, where)


def _convert_columns(ct, where):
    if getattr(ct, "sparse_output_", False):
        raise _unsupported(ct, where, "its output is sparse")
    indices = ct._transformer_to_input_indices
    parts, selected = [], []
    for name, trans, _ in ct.transformers_:
        if isinstance(trans, str) and trans == "drop":
            continue
        idx = indices.get(name, [])
        if len(idx) == 0:
            continue
        if isinstance(trans, str) and trans == "passthrough":
            parts.append(nn.Identity())
        else:
            parts.append(_convert(trans, _name(where, name)).module)
        selected.append(idx)
    return _Converted(Columns(parts, selected), "transformer")


def _members(members, where, kind):
    out = []
    for i, member in enumerate(members):
        conv = _convert(member, f"{where} > member {i}")
        if conv.kind != kind:
            raise _unsupported(member, f"{where} > member {i}", f"it is not a {kind}")
        out.append(conv)
    return out


def _convert_ensemble_classifier(est, where):
    members, columns, weights, final = _ensemble_parts(est)
    convs = _members(members, where, "classifier")
    # aligned[:, columns[i][j]] = p[:, j], i.e. aligned = p[:, argsort(columns[i])].
    orders = [np.argsort(cols) for cols in columns]
    vote_cls = SoftVote if est.voting == "soft" else HardVote
    vote = vote_cls([c.module for c in convs], orders, weights)
    if final is None:
        return _Converted(vote, "classifier", est.classes_)
    fconv = _convert(final, f"{where} > final_estimator")
    if fconv.kind != "classifier":
        raise _unsupported(final, f"{where} > final_estimator", "it is not a classifier")
    k = len(est.classes_)
    fcls = np.asarray(final.classes_).astype(int)
    place = np.zeros((fcls.size, k))
    place[np.arange(fcls.size), fcls] = 1.0
    return _Converted(Stacked(vote, fconv.module, place), "classifier", est.classes_)


def _convert_ensemble_regressor(est, where):
    members, _, weights, final = _ensemble_parts(est)
    convs = _members(members, where, "regressor")
    one_d = _one_d_members(getattr(est, "n_features_in_", None), convs)
    mean = MeanRegression([c.module for c in convs], weights, one_d)
    if final is None:
        return _Converted(mean, "regressor")
    fconv = _convert(final, f"{where} > final_estimator")
    return _Converted(StackedRegression(mean, fconv.module), "regressor")


def _one_d_members(n_in, convs):
    """Whether any member predicts 1-D, as the ensemble decides it at predict."""
    if n_in is None:
        return True
    x = torch.zeros(2, n_in)
    with torch.no_grad():
        for c in convs:
            mod = copy.deepcopy(c.module).eval()
            if mod(x).ndim == 1:
                return True
    return False


def to_torch(estimator):
    """Convert a fitted chain into one ``torch.nn.Module``.

    The module takes a float32 tensor of rows, shape ``(n, n_features)``, and
    returns what the chain's last step gives: class probabilities for a
    classifier (labels in its ``classes_`` attribute), predictions for a
    regressor, features for a transformer. It holds copies of the weights
    and fitted numbers as buffers, so it can be moved to a GPU, compiled with
    :func:`torch.compile` and exported with :func:`torch.export.export`, and
    the estimator stays as it was. It is returned in eval mode on the CPU,
    without gradients.

    Converts skchain's :class:`~skchain.NeuralTransformer` (every
    ``output``), :class:`~skchain.ModuleClassifier`,
    :class:`~skchain.MergedHeadsClassifier` (with a linear combiner or a
    temperature calibration), :class:`~skchain.OutputEnsembleClassifier` and
    :class:`~skchain.OutputEnsembleRegressor` (with convertible members),
    and :class:`~sklearn.preprocessing.StandardScaler`,
    :class:`~sklearn.preprocessing.MinMaxScaler`,
    :class:`~sklearn.decomposition.PCA`,
    :class:`~sklearn.decomposition.TruncatedSVD`,
    :class:`~sklearn.linear_model.LogisticRegression`, the linear
    regressors (:class:`~sklearn.linear_model.LinearRegression`,
    :class:`~sklearn.linear_model.Ridge`, ...),
    :class:`~sklearn.pipeline.Pipeline`,
    :class:`~sklearn.compose.ColumnTransformer` (columns by position or
    name, ``"passthrough"``, ``"drop"``) and
    :class:`~sklearn.pipeline.FeatureUnion` made of them.

    Parameters
    ----------
    estimator : fitted estimator
        A supported step or container of them.

    Returns
    -------
    module : torch.nn.Module
        With attributes ``classes_`` (labels of a classifier's probability
        columns, else ``None``) and ``kind`` (``"classifier"``,
        ``"regressor"`` or ``"transformer"``).

    Raises
    ------
    TypeError
        Naming the first step that has no torch equivalent (a tree model, a
        :class:`~skchain.TextEmbedder`...); :func:`~skchain.to_onnx`
        converts every step skl2onnx supports.

    See Also
    --------
    to_onnx : The chain as an ONNX graph, for onnxruntime.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.decomposition import PCA
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skchain import NeuralTransformer, to_torch
    >>> X, y = load_iris(return_X_y=True)
    >>> X = X.astype(np.float32)
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh())
    >>> pipe = make_pipeline(StandardScaler(), NeuralTransformer(net), PCA(3),
    ...                      LogisticRegression()).fit(X, y)
    >>> module = to_torch(pipe)
    >>> with torch.no_grad():
    ...     proba = module(torch.from_numpy(X)).numpy()
    >>> bool(np.abs(proba - pipe.predict_proba(X)).max() < 1e-5)
    True
    >>> bool((module.classes_[proba.argmax(1)] == pipe.predict(X)).all())
    True
    """
    conv = _convert(estimator)
    kind = conv.kind
    served = Served(conv.module, kind, conv.classes if kind == "classifier" else None)
    # A copy: moving, compiling or exporting the served module leaves the
    # estimator's own modules (device, training flags, weights) as they were.
    # The nets' run locks are held so that no run's transient hooks are copied.
    with ExitStack() as stack:
        for module in served.modules():
            stack.enter_context(module_lock(module))
        served = copy.deepcopy(served)
    served = served.to("cpu").eval()
    served.requires_grad_(False)
    return served
