"""The graphs of the nets in :func:`~skchain.to_onnx`: ONNX members embedded
as they are, and merged heads assembled from their parts.

- An ONNX member (:class:`~skchain.OnnxModel` run by a
  :class:`~skchain.NeuralTransformer` or :class:`~skchain.ModuleClassifier`)
  is not exported again: its own graph is spliced in, with the values it reads
  added as outputs of a private copy, converted to the chain's opset, and its
  external data files' weights loaded into the chain's graph (so the exported
  model holds every weight; a chain over 2 GB is saved with
  ``onnx.save_model(model, path, save_as_external_data=True)``).
- Merged heads whose backbone or heads are ONNX models cannot go through
  torch's exporter as one module (onnxruntime is not part of torch's graph):
  the backbone and each head are spliced one by one -- an ONNX part as its
  graph, a torch part exported by torch -- and the rest (scaling, pooling or
  linear combiner, softmax) is a small torch module holding none of them.
"""

import copy

import numpy as np
import torch
from torch import nn

from .._capture import CutAt
from .._neural import NeuralTransformer
from .._onnx_model import OnnxModel
from .._onnx_parts import nodes_between
from .._runner import module_lock
from ..ensemble import ModuleClassifier
from ..heads import CutModel
from ..heads._merge import _pool
from ._onnx_graph import (
    ML_OPSET,
    OPSET,
    _add_probabilities,
    _const,
    _export_module,
    _no_zipmap,
    _raw_width,
    _row_shape,
    _splice,
    _splice_nodes,
)
from ._torch import HeadColumns, NetOutput, _module_classifier_parts, _neural_parts

__all__ = ["has_onnx_part", "splice_merged_heads", "splice_onnx_member"]


def has_onnx_part(module):
    """Whether ``module`` runs an ONNX model somewhere inside."""
    return any(isinstance(m, OnnxModel) for m in module.modules())


def _onnx_member(est):
    """``(OnnxModel, values read, post-processing)`` of a NeuralTransformer or
    ModuleClassifier that runs an ONNX model, else ``None``.

    The post-processing is ``None``, ``"softmax"`` (:func:`skchain._runner.to_proba`
    of logits), ``"renormalize"`` (probabilities divided by their row sum) or a
    torch module to export.
    """

    if isinstance(est, NeuralTransformer):
        module, layers, _, post = _neural_parts(est)
        if not isinstance(module, OnnxModel):
            return None
        # A layer of an ONNX model is a value its graph computes (the
        # embedding too: the value that enters the last Gemm/MatMul).
        values = list(layers) if layers else [module.output or module.output_names[0]]
        if post is None:
            return module, values, None
        if est._plan.keyword == "proba":
            return module, values, "softmax"  # to_proba of the logits
        return module, values, NetOutput(nn.Identity(), postprocess=post)
    if isinstance(est, ModuleClassifier):
        module, logits, _ = _module_classifier_parts(est)
        if not isinstance(module, OnnxModel):
            return None
        values = [module.output or module.output_names[0]]
        return module, values, "softmax" if logits else "renormalize"
    return None


def _splice_onnx_values(scope, container, model, input_name, values):
    """Splice ``model``'s graph fed from ``input_name``; return the names, in
    the container, of its ``values``."""
    import onnx
    import onnx.version_converter

    # A private copy, holding the external files' weights: the chain's graph
    # carries every weight (the user's model and files stay as they were).
    proto = model._proto(with_data=True)
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                   OPSET)
    if version != OPSET:
        # One opset per graph: the member's nodes are brought to the chain's.
        proto = onnx.version_converter.convert_version(proto, OPSET)
    if model.input_dtype != np.float32:
        raise ValueError(
            f"skchain.to_onnx embeds ONNX models that take float32 input; "
            f"{model.source} takes {np.dtype(model.input_dtype).name}."
        )
    # Only the nodes (and weights) that compute the values read: a backbone
    # cut at a value does not carry its own head into the chain.
    graph = proto.graph
    nodes = []
    for i in nodes_between(graph, values, stop={model.input_name}):
        node = onnx.NodeProto()
        node.CopyFrom(graph.node[i])
        nodes.append(node)
    used = {name for node in nodes for name in node.input}
    weights = [init for init in graph.initializer if init.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    kept = []
    for init in weights:
        tensor = onnx.TensorProto()
        tensor.CopyFrom(init)
        kept.append(tensor)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    rename = _splice_nodes(scope, container, proto, input_name)
    return [rename(name) for name in values]


def splice_onnx_member(scope, operator, container, est, output_name):
    """Embed the graph of an ONNX member as it is (with the values it reads
    added as outputs of a private copy), then its post-processing; ``False``
    when ``est`` runs no ONNX model."""
    from onnx import helper

    member = _onnx_member(est)
    if member is None:
        return False
    model, values, post = member
    read = _splice_onnx_values(scope, container, model, operator.inputs[0].full_name, values)
    flat = []
    for name in read:
        out = scope.get_unique_variable_name("flat")
        container.nodes.append(helper.make_node(
            "Flatten", [name], [out], axis=1,
            name=scope.get_unique_operator_name("Flatten")))
        flat.append(out)
    joined = _concat(scope, container, flat)
    if post is None or isinstance(post, str):
        _add_probabilities(scope, container, joined, output_name, post,
                           _raw_width(model, _row_shape(operator)))
        return True
    # The post-processing keeps the width: the fitted estimator's output width.
    width = len(est.get_feature_names_out() if isinstance(est, NeuralTransformer)
                else est.classes_)
    _splice(scope, container, _export_module(post, (width,)), joined, output_name)
    return True


def _concat(scope, container, names):
    from onnx import helper

    if len(names) == 1:
        return names[0]
    joined = scope.get_unique_variable_name("concat")
    container.nodes.append(helper.make_node(
        "Concat", list(names), [joined], axis=1, name=scope.get_unique_operator_name("Concat")))
    return joined


# -- merged heads ----------------------------------------------------------------


class _AfterHeads(nn.Module):
    """What merged heads compute from the heads' raw outputs -- the column
    scaling, then (``proba``) the pooling or linear combiner and the softmax
    -- holding copies of those numbers only (no backbone, no head), so that
    torch's exporter exports it."""

    def __init__(self, merged, proba):
        super().__init__()
        for name in ("column_scale", "column_bias", "_gather", "_pad"):
            self.register_buffer(name.lstrip("_"), getattr(merged, name).detach().cpu().clone())
        self.combiner = None if merged.combiner is None else copy.deepcopy(merged.combiner).cpu()
        self.proba = proba

    def forward(self, raw):
        columns = raw * self.column_scale + self.column_bias
        if not self.proba:
            return columns
        if self.combiner is not None:
            logits = self.combiner(columns)
        else:
            logits = _pool(columns, self.gather, self.pad)
        return torch.softmax(logits, dim=1)


def _output_shape(module, row_shape):
    """Shape of one row of ``module``'s output, from a run on zeros of a copy
    in eval mode (running the user's module could change it: BatchNorm)."""
    if not (isinstance(module, OnnxModel)
            or isinstance(module, CutAt) and isinstance(module.model, OnnxModel)):
        with module_lock(module):
            module = copy.deepcopy(module)
        module = module.cpu().eval()
    with torch.no_grad():
        out = module(torch.zeros(2, *row_shape))
    return tuple(out.shape[1:])


def _splice_part(scope, container, module, input_name, row_shape):
    """Splice a backbone or head fed from ``input_name``; return its output."""
    if isinstance(module, OnnxModel):
        final = module.output or module.output_names[0]
        return _splice_onnx_values(scope, container, module, input_name, [final])[0]
    if isinstance(module, CutModel) and isinstance(module.model, OnnxModel):
        # The value the heads take (a cut at an ONNX value reads it as is).
        return _splice_onnx_values(scope, container, module.model, input_name,
                                   [module.layer])[0]
    # A torch part (an ONNX model under torch layers is refused, naming why).
    out = scope.get_unique_variable_name("part")
    _splice(scope, container, _export_module(module, row_shape), input_name, out)
    return out


def _splice_columns(scope, container, merged, input_name, row_shape, output_name, proba):
    """``output_name``: the merged heads' scaled columns, or (``proba``) their
    probabilities over ``merged.classes``."""
    if not proba and not has_onnx_part(merged):
        # All torch: one export of the columns, as to_torch computes them.
        _splice(scope, container, _export_module(HeadColumns(merged), row_shape),
                input_name, output_name)
        return
    features = _splice_part(scope, container, merged.backbone, input_name, row_shape)
    feature_shape = _output_shape(merged.backbone, row_shape)
    raw = _concat(scope, container, [
        _splice_part(scope, container, merged.heads[name], features, feature_shape)
        for name in merged.head_names
    ])
    after = _export_module(_AfterHeads(merged, proba), (len(merged.column_labels),))
    _splice(scope, container, after, raw, output_name)


def splice_merged_heads(scope, operator, container, est, merged):
    """The probabilities of a fitted MergedHeadsClassifier: from its merged
    module part by part when it holds ONNX models (``merged`` is its module
    when the calibration lives in it), or from its columns then its
    non-linear combiner by skl2onnx (``merged`` is ``None``); ``False`` for a
    torch-only merge whose calibration lives in the module (exported whole)."""
    input_name, proba = operator.inputs[0].full_name, operator.outputs[1].full_name
    if merged is not None:
        if not has_onnx_part(merged):
            return False
        _splice_columns(scope, container, merged, input_name, _row_shape(operator),
                        proba, proba=True)
        return True
    _splice_combiner(scope, operator, container, est)
    return True


def _splice_combiner(scope, operator, container, est):
    """Merged heads whose combiner is not linear (so not in the torch module):
    the heads' columns, then the combiner from skl2onnx."""
    import skl2onnx

    merged = est.merged_
    z = scope.get_unique_variable_name("head_columns")
    _splice_columns(scope, container, merged, operator.inputs[0].full_name,
                    _row_shape(operator), z, proba=False)
    combiner = est.combiner_
    width = len(merged.column_labels)
    sub = skl2onnx.to_onnx(
        combiner, np.zeros((1, width), dtype=np.float32),
        target_opset={"": container.target_opset, "ai.onnx.ml": ML_OPSET},
        options=_no_zipmap(combiner, {}),
    )
    names = [o.name for o in sub.graph.output]
    if "probabilities" not in names:
        raise ValueError(
            f"skl2onnx converted the combiner {type(combiner).__name__} without a "
            "probabilities output; use a combiner with predict_proba that skl2onnx "
            "converts."
        )
    raw = scope.get_unique_variable_name("combiner_proba")
    _splice(scope, container, sub, z, raw, output_index=names.index("probabilities"))
    # The combiner knows the labels present in its y; the others get 0.
    k = len(est.classes_)
    cols = np.searchsorted(est.classes_, combiner.classes_)
    place = np.zeros((len(cols), k), dtype=np.float32)
    place[np.arange(len(cols)), cols] = 1.0
    container.add_node("MatMul", [raw, _const(scope, container, place)],
                       [operator.outputs[1].full_name],
                       name=scope.get_unique_operator_name("MatMul"))
