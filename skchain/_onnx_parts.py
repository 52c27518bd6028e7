"""Parts of an ONNX graph: the graph after a value, as a model of its own.

``merge_heads(backbone, [(name, (onnx_model, value), labels)])`` takes, as the
head, what the ONNX model computes from the value ``value`` on: the nodes
between that value and the model's output, with their weights, as an
:class:`~skchain.OnnxModel` whose input is the value (:func:`head_after`).
It is built once per model and value and shared by every merge (the
:class:`~skchain.OnnxModel` holds the cache), reads the same external data
files, and is refused, naming the value it also reads, when the output
depends on the input otherwise than through ``value`` (a connection around
it). :func:`weights_before` is what two models must share for a head of one
to fit the features of the other.
"""

import hashlib

from torch import nn

from ._onnx_model import OnnxModel, _import_onnx

__all__ = ["head_after", "nodes_between", "weights_before"]


def nodes_between(graph, outputs, stop):
    """Indices, in graph order, of the nodes that compute ``outputs`` from
    the values ``stop`` (walking back from the outputs)."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    seen, stack = set(), list(outputs)
    while stack:
        value = stack.pop()
        index = producer.get(value)
        if value in stop or index is None or index in seen:
            continue
        seen.add(index)
        stack.extend(inp for inp in graph.node[index].input if inp)
    return sorted(seen)


def _value_info(proto, name):
    """The type of the value ``name`` (float of unknown shape when the
    graph and shape inference give none)."""
    onnx, _ = _import_onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # the graph's own value infos, if any
        inferred = proto
    graph = inferred.graph
    for info in [*graph.value_info, *graph.output, *graph.input]:
        if info.name == name and info.type.HasField("tensor_type"):
            out = onnx.ValueInfoProto()
            out.CopyFrom(info)
            return out
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)


def head_after(model, name):
    """The graph after the value ``name`` -- what computes the output from
    it -- as an :class:`OnnxModel` that takes ``name`` as its input: the
    head of ``(model, name)`` in :func:`~skchain.merge_heads`. One per
    value (shared by every merge), reading the same external files."""
    model.tap(name)  # raises naming the values
    with model._lock:
        head = model._heads.get(name)
    if head is not None:
        return head
    onnx, _ = _import_onnx()
    proto = model._proto()
    graph = proto.graph
    final = model.output or model.output_names[0]
    nodes = nodes_between(graph, [final], stop={name})
    initializers = {init.name: init for init in graph.initializer}
    produced = {out for i in nodes for out in graph.node[i].output} | {name}
    needed = {inp for i in nodes for inp in graph.node[i].input if inp}
    loose = sorted(needed - produced - set(initializers))
    if loose:
        raise ValueError(
            f"In {model.source}, the output {final!r} depends on {loose[:3]} "
            f"besides the value {name!r} (a connection around it), so the graph "
            f"after {name!r} is no head on its own. Name a value that everything "
            "after it goes through, such as the input of the last Gemm/MatMul "
            f"({model._last_linear!r})."
        )
    output = next(o for o in graph.output if o.name == final)
    sub = onnx.helper.make_graph(
        [graph.node[i] for i in nodes], f"{graph.name} after {name}",
        [_value_info(proto, name)], [output],
        initializer=[initializers[n] for n in sorted(needed & set(initializers))],
    )
    sub = onnx.helper.make_model(sub, ir_version=proto.ir_version,
                                 opset_imports=proto.opset_import,
                                 functions=proto.functions)
    head = OnnxModel.__new__(OnnxModel)
    nn.Module.__init__(head)
    head._init_from(sub, sub.SerializeToString(), f"{model.source} after {name!r}",
                    model._files, output=None, providers=model.providers)
    with model._lock:
        return model._heads.setdefault(name, head)


def weights_before(model, name):
    """``{initializer name: digest}`` of the weights that compute the value
    ``name``: what two models must share for a head of one to fit the
    other's features (computed once per value)."""
    with model._lock:
        known = model._weight_digests.get(name)
    if known is not None:
        return known
    from onnx import numpy_helper
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    proto = model._proto()
    graph = proto.graph
    used = {inp for i in nodes_between(graph, [name], stop={model.input_name})
            for inp in graph.node[i].input}
    out = {}
    for init in graph.initializer:
        if init.name not in used:
            continue
        if uses_external_data(init):
            model._files.check_unchanged()
            load_external_data_for_tensor(init, model._files.folder)
        array = numpy_helper.to_array(init)
        out[init.name] = hashlib.blake2b(
            str((array.dtype, array.shape)).encode() + array.tobytes(), digest_size=16
        ).hexdigest()
    with model._lock:
        return model._weight_digests.setdefault(name, out)
