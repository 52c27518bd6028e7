"""Merge classifier heads that share one frozen backbone into one model.

Transfer learning often leaves several classifiers behind that differ only in
their last layers: each is a *head* trained at its own time, on its own data and
its own labels, on top of the same frozen base model. :func:`merge_heads` joins
them into one ``torch.nn.Module`` that runs the backbone once per batch and
returns logits over the union of the labels.

Concatenating the heads' logits is not yet a classifier, though: the heads were
never trained against each other, so their scales are unrelated, and each head
is confident on inputs of labels it never saw. :class:`MergedHeadsClassifier`
learns, on held-out rows that cover all labels, how much to trust each head --
a temperature and bias per head, or a combiner model over all head outputs --
without changing a single weight of the backbone or the heads.
"""

import warnings
from numbers import Integral

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from ._outputs import layer_names
from ._runner import eval_mode, module_device, resolve_device, run_module

__all__ = ["CutModel", "MergedHeads", "MergedHeadsClassifier", "merge_heads"]


class _CutReached(Exception):
    """Raised by :class:`CutModel`'s hook: the rest of the model is not run."""


def _submodule(model, layer):
    valid = layer_names(model)
    if layer not in valid:
        raise ValueError(
            f"{type(model).__name__} has no submodule named {layer!r}; name the "
            f"first layer of its head, one of {valid}."
        )
    return model.get_submodule(layer)


class CutModel(nn.Module):
    """A pretrained model run up to (not including) one of its layers.

    ``CutModel(model, "fc")`` returns what ``model.fc`` receives when ``model``
    runs: the features its head was trained on. The model is neither copied nor
    changed; a forward pre-hook on the layer, present only during the call,
    captures its input and stops the forward pass there, so the layers after it
    cost nothing. :func:`merge_heads` builds one when given ``(model, layer)``.

    Parameters
    ----------
    model : torch.nn.Module
        The complete model.
    layer : str
        Name of a submodule of ``model``, as in ``model.named_modules()``
        (``"fc"``, ``"classifier.1"``): the first layer of the head.
    """

    def __init__(self, model, layer):
        super().__init__()
        if not isinstance(model, nn.Module) or not isinstance(layer, str):
            raise TypeError(
                "A cut model is given as (model, layer_name) with a torch.nn.Module "
                f"and a str; got ({type(model).__name__}, {type(layer).__name__})."
            )
        _submodule(model, layer)  # validates the name
        self.model = model
        self.layer = layer

    def forward(self, x):
        captured = []

        def hook(module, args):
            if not args:
                raise TypeError(
                    f"Layer {self.layer!r} is called with keyword arguments only, so "
                    "its input cannot be captured; cut at another layer."
                )
            captured.append(args[0])
            raise _CutReached

        handle = self.model.get_submodule(self.layer).register_forward_pre_hook(hook)
        try:
            self.model(x)
        except _CutReached:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ValueError(
                f"Layer {self.layer!r} was not called by {type(self.model).__name__}"
                ".forward, so the model cannot be cut there; name a layer its forward "
                "uses."
            )
        return captured[0]

    def extra_repr(self):
        return f"layer={self.layer!r}"


def _as_module(spec, what):
    """A module, or a cut model from ``(model, layer)``."""
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2:
        return CutModel(*spec)
    raise TypeError(
        f"{what} must be a torch.nn.Module or a (model, layer_name) pair; got "
        f"{type(spec).__name__}."
    )


def _without_prefix(state, prefix):
    return {k: v for k, v in state.items() if not k.startswith(prefix + ".")}


def _check_same_backbone(backbone, name, model, layer):
    """Warn when a head's own model has other backbone weights than ``backbone``.

    Only a (model, layer) backbone can be compared with a (model, layer) head.
    A common cause is BatchNorm: its running statistics change whenever the
    model runs in train mode, even with every weight frozen.
    """
    if not isinstance(backbone, CutModel) or model is backbone.model:
        return
    ours = _without_prefix(backbone.model.state_dict(), backbone.layer)
    theirs = _without_prefix(model.state_dict(), layer)
    if ours.keys() != theirs.keys():
        differ = sorted(ours.keys() ^ theirs.keys())
    else:
        differ = [k for k in ours if not torch.equal(ours[k], theirs[k].to(ours[k].device))]
    if differ:
        warnings.warn(
            f"Head {name!r} comes from a model whose layers other than {layer!r} "
            f"differ from the backbone model's ({len(differ)} tensors, e.g. "
            f"{differ[0]!r}): the head "
            "was trained on other features than the merged model computes. BatchNorm "
            "running statistics change in train mode even when weights are frozen.",
            UserWarning,
            stacklevel=4,
        )


def _check_heads(heads, backbone):
    """Validate ``heads``; return ``[(name, module, labels_array)]``."""
    if isinstance(heads, dict) or not isinstance(heads, (list, tuple)):
        raise TypeError(
            "heads must be a list of (name, module, labels) triples, like "
            "ColumnTransformer's transformers; got "
            f"{type(heads).__name__}. From a dict {{name: (module, labels)}}: "
            "[(name, m, labels) for name, (m, labels) in d.items()]."
        )
    if not heads:
        raise ValueError("heads is empty; give at least one (name, module, labels) triple.")
    checked, names, kinds = [], set(), set()
    for item in heads:
        if not (isinstance(item, (tuple, list)) and len(item) == 3):
            raise TypeError(f"Each head is a (name, module, labels) triple; got {item!r:.80}.")
        name, spec, labels = item
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(
                f"Head name {name!r} must be a non-empty str without '.' (it names a "
                "submodule of the merged module)."
            )
        if hasattr(nn.ModuleDict(), name):
            raise ValueError(
                f"Head name {name!r} is taken by a torch.nn.ModuleDict attribute; "
                "choose another name."
            )
        if name in names:
            raise ValueError(f"Head name {name!r} is used twice; names must be unique.")
        names.add(name)
        if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], nn.Module):
            model, layer = spec
            module = _submodule(model, layer)
            _check_same_backbone(backbone, name, model, layer)
        elif isinstance(spec, nn.Module):
            module = spec
        else:
            raise TypeError(
                f"Head {name!r}: the module must be a torch.nn.Module or a "
                f"(model, layer_name) pair; got {type(spec).__name__}."
            )
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(
                f"Head {name!r}: labels must be a non-empty 1-D list, one label per "
                f"output column; got shape {labels.shape}."
            )
        if len(np.unique(labels)) != labels.size:
            raise ValueError(f"Head {name!r}: labels {labels.tolist()} contain duplicates.")
        kinds.add("number" if labels.dtype.kind in "biuf" else "other")
        checked.append((name, module, labels))
    if len(kinds) > 1:
        raise TypeError(
            "Some heads have numeric labels and others not; use one label type for "
            "all heads (e.g. str for all) so the union of labels can be sorted."
        )
    return checked


def _pool(columns, gather, pad):
    """Logits per class from columns; see :meth:`MergedHeads.pool`."""
    if gather.shape[1] == 1:
        return columns[:, gather[:, 0]]
    grouped = columns[:, gather].masked_fill(pad, float("-inf"))
    return torch.logsumexp(grouped, dim=2)


class MergedHeads(nn.Module):
    """A backbone and several heads as one module over the union of labels.

    Build it with :func:`merge_heads`. Each forward runs the backbone once and
    every head on its output.

    Attributes
    ----------
    backbone : torch.nn.Module
    heads : torch.nn.ModuleDict
        The heads, by name, in the order given.
    classes : ndarray of shape (n_classes,)
        The union of the heads' labels, sorted (as scikit-learn's ``classes_``):
        column ``k`` of the output is ``classes[k]``.
    column_labels : ndarray of shape (n_columns,)
        The label of each column of :meth:`columns` (the heads' outputs
        concatenated in head order).
    column_heads : ndarray of shape (n_columns,)
        The head name of each column of :meth:`columns`.
    column_scale, column_bias : torch.Tensor of shape (n_columns,)
        Buffers applied to the concatenated head outputs,
        ``columns = raw * column_scale + column_bias``: ones and zeros after
        :func:`merge_heads`, fitted per head by
        :class:`MergedHeadsClassifier`'s temperature calibrations.
    combiner : torch.nn.Linear or None
        ``None`` after :func:`merge_heads`. :class:`MergedHeadsClassifier`
        sets it to its fitted linear combiner (from ``n_columns`` to
        ``n_classes``), which then replaces :meth:`pool`.
    """

    def __init__(self, backbone, heads):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({name: module for name, module, _ in heads})
        self.head_names = [name for name, _, _ in heads]
        self.head_widths = [len(labels) for _, _, labels in heads]
        self.column_labels = np.concatenate([labels for _, _, labels in heads])
        self.column_heads = np.repeat(self.head_names, self.head_widths)
        self.classes = np.unique(self.column_labels)
        n_columns = len(self.column_labels)
        # Buffers start where the backbone is, so a model already on the GPU
        # merges without a .to() call.
        device = module_device(backbone)
        self.register_buffer("column_scale", torch.ones(n_columns, device=device))
        self.register_buffer("column_bias", torch.zeros(n_columns, device=device))
        # pool(): class k gathers the columns labelled classes[k]; a label that
        # several heads know has several, padded to one width and masked.
        column_class = np.searchsorted(self.classes, self.column_labels)
        groups = [np.flatnonzero(column_class == k) for k in range(len(self.classes))]
        width = max(len(g) for g in groups)
        gather = np.zeros((len(groups), width), dtype=np.int64)
        pad = np.ones((len(groups), width), dtype=bool)
        for k, group in enumerate(groups):
            gather[k, : len(group)] = group
            pad[k, : len(group)] = False
        self.register_buffer("_gather", torch.from_numpy(gather).to(device), persistent=False)
        self.register_buffer("_pad", torch.from_numpy(pad).to(device), persistent=False)
        self.register_module("combiner", None)

    def columns(self, x):
        """The heads' outputs, concatenated in head order and scaled.

        Parameters
        ----------
        x : torch.Tensor
            A batch of backbone inputs.

        Returns
        -------
        torch.Tensor of shape (batch, n_columns)
        """
        features = self.backbone(x)
        outputs = [
            self._run_head(name, width, features)
            for name, width in zip(self.head_names, self.head_widths, strict=True)
        ]
        return torch.cat(outputs, dim=1) * self.column_scale + self.column_bias

    def _run_head(self, name, width, features):
        out = self.heads[name](features)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != width:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"Head {name!r} returned {shape}, but it has {width} labels: it must "
                f"return logits of shape (batch, {width}), one column per label."
            )
        return out

    def pool(self, columns):
        """Logits over :attr:`classes` from (scaled) columns.

        A label known by one head keeps its column. A label known by several
        gets the log-sum-exp of their columns, so that its softmax probability
        is the sum of theirs under a softmax over all columns.
        """
        return _pool(columns, self._gather, self._pad)

    def forward(self, x):
        """Logits over :attr:`classes`, shape ``(batch, n_classes)``.

        ``combiner(columns)`` when a combiner is set, else ``pool(columns)``.
        """
        columns = self.columns(x)
        if self.combiner is not None:
            return self.combiner(columns)
        return self.pool(columns)


class _Columns(nn.Module):
    """``merged.columns`` as a forward, for :func:`~skchain._runner.run_module`."""

    def __init__(self, merged):
        super().__init__()
        self.merged = merged

    def forward(self, x):
        return self.merged.columns(x)


def merge_heads(backbone, heads):
    """Join heads trained on one frozen backbone into one module.

    The returned module runs the backbone once per batch, every head on its
    output, and returns logits over the union of the heads' labels. Nothing is
    copied: the module holds the given backbone and heads, whose weights stay
    as they are.

    The returned logits are the *naive* merge: one softmax over all heads'
    outputs, which is rarely well calibrated (each head is confident on inputs
    of labels it never saw). :class:`MergedHeadsClassifier` fits the
    calibration on held-out data.

    Parameters
    ----------
    backbone : torch.nn.Module or (torch.nn.Module, str)
        The shared base model: a module whose output is what the heads take,
        or a complete pretrained model and the name of the first layer of its
        head, ``(model, "fc")``: the model runs up to that layer and its input
        is the features (see :class:`CutModel`). The model is not copied or
        changed.
    heads : list of (str, module, labels) triples
        Like ``ColumnTransformer``'s ``transformers``: a unique name, the head
        module (taking the backbone's output and returning
        ``(batch, len(labels))`` logits), and the label of each output column.
        The module may also be given as ``(model, "fc")``, a complete model and
        the name of its head layer, which is then ``model.fc``; when
        ``backbone`` is also a ``(model, layer)`` pair, the two models'
        weights outside their heads are compared and a ``UserWarning`` says when
        they differ. Labels may overlap between heads: see
        :meth:`MergedHeads.pool`.

    Returns
    -------
    merged : MergedHeads
        A ``torch.nn.Module``; ``merged(x)`` has one column per label of
        ``merged.classes``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skchain import merge_heads
    >>> _ = torch.manual_seed(0)
    >>> backbone = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    >>> merged = merge_heads(backbone, [
    ...     ("animals", nn.Linear(8, 2), ["dog", "cat"]),
    ...     ("vehicles", nn.Linear(8, 3), ["bus", "car", "van"]),
    ... ])
    >>> merged.classes
    array(['bus', 'car', 'cat', 'dog', 'van'], dtype='<U3')
    >>> merged(torch.randn(6, 4)).shape
    torch.Size([6, 5])

    Two complete models that share a base: cut the first before its head and
    take the second model's head.

    >>> model_a = nn.Sequential(backbone, nn.Linear(8, 2))
    >>> model_b = nn.Sequential(backbone, nn.Linear(8, 3))
    >>> merged = merge_heads((model_a, "1"), [("a", model_a[1], ["dog", "cat"]),
    ...                                        ("b", (model_b, "1"), ["bus", "car", "van"])])
    >>> x = torch.randn(6, 4)
    >>> torch.equal(merged.columns(x), torch.cat([model_a(x), model_b(x)], dim=1))
    True
    """
    backbone = _as_module(backbone, "backbone")
    return MergedHeads(backbone, _check_heads(heads, backbone))


def _fit_temperatures(merged, Z, y_index, with_bias):
    """Per-head inverse temperature (and bias) minimising the log loss.

    The union logits are ``pool(Z * exp(s[head]) + b[head])``. The first
    head's bias is pinned to 0 because adding one constant to every head
    changes nothing; bounds keep a head whose labels are absent from ``y``
    from running off to infinity.
    """
    n_heads = len(merged.head_names)
    head_of_column = torch.from_numpy(np.repeat(np.arange(n_heads), merged.head_widths))
    Z = torch.from_numpy(np.asarray(Z, dtype=np.float64))
    target = torch.from_numpy(y_index)
    # The same pooling as the module's forward, on CPU in float64.
    gather, pad = merged._gather.cpu(), merged._pad.cpu()

    def loss_and_grad(theta):
        theta = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        log_scale = theta[:n_heads]
        bias = theta[n_heads:] if with_bias else torch.zeros(n_heads, dtype=torch.float64)
        columns = Z * log_scale.exp()[head_of_column] + bias[head_of_column]
        loss = torch.nn.functional.cross_entropy(_pool(columns, gather, pad), target)
        loss.backward()
        return loss.item(), theta.grad.numpy().copy()

    bounds = [(-np.log(1e3), np.log(1e3))] * n_heads
    theta0 = np.zeros(n_heads)
    if with_bias:
        bounds += [(0.0, 0.0)] + [(-50.0, 50.0)] * (n_heads - 1)
        theta0 = np.zeros(2 * n_heads)
    result = minimize(loss_and_grad, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
    scale = np.exp(result.x[:n_heads])
    bias = result.x[n_heads:] if with_bias else np.zeros(n_heads)
    return scale, bias


def _linear_combiner(combiner, classes, Z):
    """The fitted combiner as an ``nn.Linear`` over the columns, or ``None``.

    A linear classifier whose ``predict_proba`` is the softmax of
    ``Z @ coef_.T + intercept_`` (multinomial logistic regression; a binary one
    is the softmax of ``[0, z]``) becomes part of the torch module, so the
    merged module alone is the calibrated model. Whether the combiner really
    behaves so is checked on ``Z`` rather than assumed from its type; any other
    combiner stays a scikit-learn step after the module.
    """
    coef = getattr(combiner, "coef_", None)
    intercept = getattr(combiner, "intercept_", None)
    if coef is None or intercept is None or not np.array_equal(combiner.classes_, classes):
        return None
    coef = np.atleast_2d(coef)
    intercept = np.atleast_1d(intercept)
    if coef.shape[0] == 1 and len(classes) == 2:
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    if coef.shape != (len(classes), Z.shape[1]) or intercept.shape != (len(classes),):
        return None
    linear = nn.Linear(Z.shape[1], len(classes))
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(coef))
        linear.bias.copy_(torch.from_numpy(intercept))
    linear.requires_grad_(False)
    rows = Z[:256]
    with torch.no_grad():
        ours = softmax(linear(torch.from_numpy(rows)).double().numpy(), axis=1)
    if not np.allclose(ours, combiner.predict_proba(rows), atol=1e-4):
        return None
    return linear


class MergedHeadsClassifier(ClassifierMixin, BaseEstimator):
    """One calibrated classifier from heads that share a frozen backbone.

    ``fit`` merges the heads (:func:`merge_heads`), computes the heads' outputs
    on the given rows once (batched, without gradients) and fits only the
    calibration on them -- never the backbone or the heads, whose weights stay
    bitwise as they were. ``predict_proba`` runs the backbone once per batch.

    Fit on held-out rows that cover all labels and that none of the heads was
    trained on: the calibration learns how the heads behave on new inputs,
    including inputs of labels a head never saw.

    Parameters
    ----------
    backbone : torch.nn.Module or (torch.nn.Module, str)
        The shared frozen base model, or a complete pretrained model and the
        name of the first layer of its head; see :func:`merge_heads`.
    heads : list of (str, module, labels) triples
        The heads, each with a unique name and the label of each output column;
        see :func:`merge_heads`.
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
        Where the merged module runs; ``None`` keeps the backbone's device.
        Moving the module does not change its weights.
    batch_size : int, default=1024
        Rows per forward pass.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The union of the heads' labels, sorted. Labels in ``y`` that no head
        knows are an error.
    merged_ : MergedHeads
        The merged module, holding the given backbone and heads (not copies)
        and the fitted calibration: its forward gives the calibrated logits
        over ``classes_``, whose softmax is ``predict_proba`` -- one torch
        module to deploy. A combiner that is not a multinomial linear model
        (say a gradient boosting model) cannot live in the module: its
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
        "backbone": [nn.Module, tuple],
        "heads": [list, tuple],
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

    def _device(self):
        return None if self.device is None else resolve_device(self.device)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the calibration on held-out rows; the networks are not trained.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Backbone inputs, one row per sample (any numeric dtype, converted
            to float32 once). Image backbones reshape the rows themselves, e.g.
            with a first ``nn.Unflatten(1, (1, 8, 8))`` layer.
        y : array-like of shape (n_samples,)
            Labels, each one a label of some head.

        Returns
        -------
        self : MergedHeadsClassifier
        """
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        merged = merge_heads(self.backbone, self.heads)
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
        if self.device is not None:
            merged.to(self._device())
        self._check_shapes(merged, X[:2])
        n_heads = len(merged.head_names)
        self.temperatures_ = np.ones(n_heads)
        self.biases_ = np.zeros(n_heads)
        if self.calibration is not None:
            # The heads' outputs on every row, computed once: all calibrations
            # are fitted on this small frozen matrix, not on the networks.
            Z = self._columns(merged, X)
            if self.calibration == "combiner":
                combiner = self.combiner
                if combiner is None:
                    combiner = LogisticRegression(max_iter=1000)
                self.combiner_ = clone(combiner).fit(Z, y)
                linear = _linear_combiner(self.combiner_, merged.classes, Z)
                if linear is not None:
                    merged.combiner = linear.to(module_device(merged))
            else:
                y_index = np.searchsorted(merged.classes, y)
                scale, bias = _fit_temperatures(
                    merged, Z, y_index, with_bias=self.calibration == "temperature_bias"
                )
                self._set_scaling(merged, scale, bias)
                self.temperatures_ = 1.0 / scale
                self.biases_ = bias
        self.merged_ = merged
        self.classes_ = merged.classes
        return self

    @staticmethod
    def _set_scaling(merged, scale, bias):
        widths = merged.head_widths
        with torch.no_grad():
            merged.column_scale.copy_(torch.from_numpy(np.repeat(scale, widths)))
            merged.column_bias.copy_(torch.from_numpy(np.repeat(bias, widths)))

    def _check_shapes(self, merged, X):
        """Run two rows through the backbone and each head, naming what fails."""
        x = torch.from_numpy(np.array(X))  # a copy: validated X may be read-only
        with torch.inference_mode(), eval_mode(merged):
            x = x.to(module_device(merged))
            try:
                features = merged.backbone(x)
            except RuntimeError as exc:
                raise ValueError(
                    f"The backbone failed on input of shape (n, {X.shape[1]}): {exc}"
                ) from exc
            if not isinstance(features, torch.Tensor):
                raise TypeError(
                    f"The backbone returned {type(features).__name__}; it must return "
                    "one tensor, the heads' input (cut a complete model with "
                    "(model, layer_name))."
                )
            for name, width in zip(merged.head_names, merged.head_widths, strict=True):
                try:
                    merged._run_head(name, width, features)
                except RuntimeError as exc:
                    raise ValueError(
                        f"Head {name!r} failed on the backbone's output of shape "
                        f"{tuple(features.shape)}: {exc}. Its first layer must take "
                        f"{tuple(features.shape[1:])} features per row; was it trained "
                        "on this backbone?"
                    ) from exc

    def _columns(self, merged, X):
        return run_module(_Columns(merged), X, batch_size=self.batch_size, device=self._device())

    def predict_proba(self, X):
        """Probabilities over :attr:`classes_`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            float64; each row sums to one.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        if self.calibration != "combiner" or self.merged_.combiner is not None:
            logits = run_module(self.merged_, X, batch_size=self.batch_size, device=self._device())
            return softmax(logits.astype(np.float64), axis=1)
        proba = self.combiner_.predict_proba(self._columns(self.merged_, X))
        # The combiner knows the labels present in y; others get probability 0.
        out = np.zeros((X.shape[0], len(self.classes_)))
        out[:, np.searchsorted(self.classes_, self.combiner_.classes_)] = proba
        return out

    def predict(self, X):
        """The most probable label of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
