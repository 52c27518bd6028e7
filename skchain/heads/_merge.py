"""The merged module: one backbone, several heads, logits over the union of labels."""

import warnings

import numpy as np
import torch
from torch import nn

from .._models import as_module, is_pretrained_model
from .._onnx_model import OnnxModel
from .._onnx_parts import head_after, weights_before
from .._runner import module_device
from ._cut import CutModel, check_head_layer

__all__ = ["MergedHeads", "merge_heads"]


def _as_module(spec, what):
    """A module, or a cut model from ``(model, layer)``; the model may be an
    ONNX path or ``ModelProto`` too (see :func:`skchain._models.as_module`)."""
    if isinstance(spec, tuple) and len(spec) == 2:
        model, layer = spec
        if is_pretrained_model(model):
            model = as_module(model, what)
        return CutModel(model, layer)
    if is_pretrained_model(spec):
        return as_module(spec, what)
    raise TypeError(
        f"{what} must be a torch.nn.Module (or an ONNX model) or a "
        f"(model, layer_name) pair; got {type(spec).__name__}."
    )


def _without_prefix(state, prefix):
    return {k: v for k, v in state.items() if not k.startswith(prefix + ".")}


def _onnx_head(name, model, layer):
    """The graph of ``model`` after its value ``layer``: the head's module."""
    if not isinstance(layer, str):
        raise TypeError(
            f"Head {name!r}: an ONNX head is given as (model, value_name) with the "
            f"name of the value its head takes, a str; got {type(layer).__name__}."
        )
    return head_after(model, layer)


def _check_same_backbone(backbone, name, model, layer):
    """Warn when a head's own model has other backbone weights than ``backbone``.

    Only a (model, layer) backbone can be compared with a (model, layer) head.
    A common cause is BatchNorm: its running statistics change whenever the
    model runs in train mode, even with every weight frozen.
    """
    if not isinstance(backbone, CutModel) or model is backbone.model:
        return
    if isinstance(model, OnnxModel) or isinstance(backbone.model, OnnxModel):
        if not (isinstance(model, OnnxModel) and isinstance(backbone.model, OnnxModel)):
            return  # a torch and an ONNX model: no common naming of weights
        # The weights that compute the value each cut reads.
        ours = weights_before(backbone.model, backbone.layer)
        theirs = weights_before(model, layer)
        differ = sorted(ours.keys() ^ theirs.keys()) or [
            k for k in ours if ours[k] != theirs[k]]
        _warn_other_backbone(name, layer, differ)
        return
    ours = _without_prefix(backbone.model.state_dict(), backbone.layer)
    theirs = _without_prefix(model.state_dict(), layer)
    if ours.keys() != theirs.keys():
        differ = sorted(ours.keys() ^ theirs.keys())
    else:
        differ = [k for k in ours if not torch.equal(ours[k], theirs[k].to(ours[k].device))]
    _warn_other_backbone(name, layer, differ)


def _warn_other_backbone(name, layer, differ):
    if differ:
        warnings.warn(
            f"Head {name!r} comes from a model whose layers other than {layer!r} "
            f"differ from the backbone model's ({len(differ)} tensors, e.g. "
            f"{differ[0]!r}): the head "
            "was trained on other features than the merged model computes. BatchNorm "
            "running statistics change in train mode even when weights are frozen.",
            UserWarning,
            stacklevel=5,
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
        if isinstance(spec, tuple) and len(spec) == 2 and is_pretrained_model(spec[0]):
            model, layer = spec
            # An ONNX path or ModelProto: the one shared OnnxModel of it.
            model = as_module(model, f"Head {name!r}")
            if isinstance(model, OnnxModel):
                module = _onnx_head(name, model, layer)
            else:
                module = check_head_layer(model, layer)
            _check_same_backbone(backbone, name, model, layer)
        elif is_pretrained_model(spec):
            module = as_module(spec, f"Head {name!r}")
        else:
            raise TypeError(
                f"Head {name!r}: the module must be a torch.nn.Module, an ONNX model "
                "(a path, an onnx.ModelProto or an OnnxModel) or a (model, layer_name) "
                f"pair; got {type(spec).__name__}."
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
    backbone : torch.nn.Module, ONNX model or (model, str)
        The shared base model: a module whose output is what the heads take,
        or a complete pretrained model and the name of the first layer of its
        head, ``(model, "fc")``: the model runs up to that layer and its input
        is the features (see :class:`CutModel`). The model is not copied or
        changed. An ONNX model (a path, an ``onnx.ModelProto`` or an
        :class:`~skchain.OnnxModel`) may stand for the model; its "layer" is
        the name of the value the heads take (one of ``value_names``).
    heads : list of (str, module, labels) triples
        Like ``ColumnTransformer``'s ``transformers``: a unique name, the head
        module (taking the backbone's output and returning
        ``(batch, len(labels))`` logits), and the label of each output column.
        The module may also be given as ``(model, "fc")``, a complete model and
        the name of its head layer, which is then ``model.fc``; when
        ``backbone`` is also a ``(model, layer)`` pair, the two models'
        weights outside their heads are compared and a ``UserWarning`` says when
        they differ. An ONNX model is a head too: as it is (taking the
        features), or as ``(onnx_model, value_name)``, the part of its graph
        that computes its output from that value (run by onnxruntime, frozen,
        one per model and value, shared by every merge). Labels may overlap
        between heads: see :meth:`MergedHeads.pool`.

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
