"""The plumbing of :func:`~skchain.to_onnx`'s graphs: torch modules exported
by torch's ONNX exporter, graphs spliced into the one skl2onnx assembles, and
the few nodes every converter adds (probabilities, labels, constants).

Nothing here knows skchain's estimators: :mod:`._onnx_members` and
:mod:`._onnx` build on it.
"""

import copy
import warnings
from contextlib import ExitStack

import numpy as np

from .._onnx_model import OnnxModel
from .._runner import module_lock


#: ONNX opset of the exported graphs (torch's exporter and skl2onnx agree on it).
OPSET = 18
ML_OPSET = 3


def _import_onnx():
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
        import skl2onnx  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"skchain.to_onnx needs skl2onnx, onnx and onnxscript ({exc}); install "
            "them with: pip install 'skchain[onnx]'."
        ) from None


# -- torch graph -> ONNX graph ----------------------------------------------------


def _export_module(module, row_shape):
    """ONNX model of a torch module taking ``(batch, *row_shape)`` float32 rows."""
    import onnx.inliner
    import torch

    if any(isinstance(m, OnnxModel) for m in module.modules()):
        raise ValueError(
            "skchain.to_onnx cannot export a torch module that runs an ONNX model "
            "inside its forward (an OnnxModel under torch layers): onnxruntime is "
            "not part of torch's graph. Give the ONNX model to the skchain wrapper "
            "directly (NeuralTransformer('model.onnx'), ModuleClassifier("
            "'model.onnx', classes), or as a backbone or head of merge_heads), whose "
            "graph to_onnx embeds as it is."
        )

    # A copy on the CPU: the estimator's own module keeps its device and flags.
    with ExitStack() as stack:
        for sub in module.modules():
            stack.enter_context(module_lock(sub))
        module = copy.deepcopy(module)
    module = module.to("cpu").eval().requires_grad_(False)
    x = torch.zeros(2, *row_shape)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        # The exporter reports its progress and optional packages as warnings.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (x,),
            dynamo=True,
            opset_version=OPSET,
            dynamic_shapes=({0: batch},),
            verbose=False,
            report=False,
            verify=False,
        )
    model = program.model_proto
    # skl2onnx splices nodes, not functions: inline any the exporter kept.
    return onnx.inliner.inline_local_functions(model)


def _splice(scope, container, model, input_name, output_name, output_index=0):
    """Add ``model``'s graph to the container, from ``input_name`` to ``output_name``.

    Every name is made unique in the scope, so one chain can hold several nets.
    """
    from onnx import helper

    rename = _splice_nodes(scope, container, model, input_name)
    container.nodes.append(helper.make_node(
        "Identity", [rename(model.graph.output[output_index].name)], [output_name],
        name=scope.get_unique_operator_name("Identity"),
    ))


def _splice_nodes(scope, container, model, input_name):
    """Add ``model``'s nodes and initializers, fed from ``input_name``; return
    the function that maps its value names to their names in the container."""
    from onnx import TensorProto, helper

    graph = model.graph
    if len(graph.input) != 1:
        raise ValueError(
            f"The exported net has {len(graph.input)} inputs; skchain.to_onnx needs one."
        )
    names = {"": ""}

    def rename(name):
        if name not in names:
            names[name] = scope.get_unique_variable_name(name)
        return names[name]

    container.nodes.append(helper.make_node(
        "Identity", [input_name], [rename(graph.input[0].name)],
        name=scope.get_unique_operator_name("Identity"),
    ))
    for init in graph.initializer:
        tensor = TensorProto()
        tensor.CopyFrom(init)
        tensor.name = rename(init.name)
        container.initializers.append(tensor)
    for node in graph.node:
        if any(attr.type in (onnx_graph_types()) for attr in node.attribute):
            raise ValueError(
                f"The exported net uses control flow ({node.op_type}), which "
                "skchain.to_onnx cannot splice; make the module's forward free of "
                "data-dependent branches."
            )
        new = helper.make_node(
            node.op_type,
            [rename(n) for n in node.input],
            [rename(n) for n in node.output],
            name=scope.get_unique_operator_name(node.name or node.op_type),
            domain=node.domain or None,
        )
        new.attribute.extend(node.attribute)
        container.nodes.append(new)
    for opset in model.opset_import:
        container.node_domain_version_pair_sets.add((opset.domain, opset.version))
    return rename


def onnx_graph_types():
    from onnx import AttributeProto

    return (AttributeProto.GRAPH, AttributeProto.GRAPHS)


def _add_probabilities(scope, container, values, output_name, how, width):
    """``output_name`` from ``values`` (``width`` columns) in float32: as they
    are (``how=None``), :func:`skchain._runner.to_proba` of logits
    (``"softmax"``; a sigmoid for one column) or rows divided by their sum
    (``"renormalize"``)."""
    from onnx import TensorProto, helper

    def node(op, inputs, **attrs):
        out = scope.get_unique_variable_name(op.lower())
        container.nodes.append(helper.make_node(
            op, inputs, [out], name=scope.get_unique_operator_name(op), **attrs))
        return out

    values = node("Cast", [values], to=TensorProto.FLOAT)
    if how == "softmax" and width == 1:
        # One logit column is a binary logit: [1 - sigmoid, sigmoid].
        p = node("Sigmoid", [values])
        one = _const(scope, container, np.ones((1, 1), dtype=np.float32))
        values = node("Concat", [node("Sub", [one, p]), p], axis=1)
    elif how == "softmax":
        values = node("Softmax", [values], axis=1)
    if how in ("softmax", "renormalize"):
        axes = _const_int64(scope, container, [1])
        values = node("Div", [values, node("ReduceSum", [values, axes], keepdims=1)])
    container.nodes.append(helper.make_node(
        "Identity", [values], [output_name], name=scope.get_unique_operator_name("Identity")))


def _raw_width(model, row_shape):
    """Columns of an ONNX model's final output, from one run on zeros."""
    import torch

    with torch.no_grad():
        out = model(torch.zeros(1, *row_shape))
    return int(np.prod(out.shape[1:]))


def _const_int64(scope, container, value):
    from onnx import TensorProto

    name = scope.get_unique_variable_name("axes")
    container.add_initializer(name, TensorProto.INT64, [len(value)], list(value))
    return name


def _row_shape(operator):
    """Shape of one input row (``(n_features,)``, or an image's ``(C, H, W)``)."""
    shape = operator.inputs[0].type.shape
    if len(shape) < 2 or not all(isinstance(d, (int, np.integer)) for d in shape[1:]):
        raise ValueError(
            f"{type(operator.raw_operator).__name__} needs a float input of known "
            f"row shape (n, ...); skl2onnx gives it shape {shape}."
        )
    return tuple(int(d) for d in shape[1:])


def _classes_tensor(classes, scope, container):
    from onnx import TensorProto

    classes = np.asarray(classes)
    name = scope.get_unique_variable_name("classes")
    if classes.dtype.kind in "iub":
        container.add_initializer(name, TensorProto.INT64, [classes.size],
                                  classes.astype(np.int64).tolist())
    elif classes.dtype.kind in "UOS":
        container.add_initializer(name, TensorProto.STRING, [classes.size],
                                  [str(c).encode() for c in classes])
    else:
        raise ValueError(
            f"skchain.to_onnx supports integer or string class labels; got dtype "
            f"{classes.dtype}. Encode the labels (LabelEncoder) before fitting."
        )
    return name


def _add_label(scope, container, classes, proba_name, label_name):
    """``label = classes[argmax(probabilities)]`` (the first maximum, as numpy)."""
    index = scope.get_unique_variable_name("index")
    container.add_node("ArgMax", [proba_name], [index], axis=1, keepdims=0,
                       name=scope.get_unique_operator_name("ArgMax"))
    container.add_node("Gather", [_classes_tensor(classes, scope, container), index],
                       [label_name], axis=0, name=scope.get_unique_operator_name("Gather"))


def _const(scope, container, value):
    from onnx import TensorProto

    value = np.asarray(value, dtype=np.float32)
    name = scope.get_unique_variable_name("const")
    container.add_initializer(name, TensorProto.FLOAT, list(value.shape),
                              value.ravel().tolist())
    return name


def _sub_options(est):
    from sklearn.base import is_classifier
    from sklearn.pipeline import Pipeline

    if is_classifier(est) and not isinstance(est, Pipeline):
        return {"zipmap": False}
    return None


def _no_zipmap(estimator, options):
    """``{id(classifier): {"zipmap": False}}`` for every scikit-learn classifier
    skl2onnx would otherwise end with a ZipMap."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    stack = [estimator]
    while stack:
        est = stack.pop()
        if isinstance(est, Pipeline):
            stack.extend(s for _, s in est.steps)
        elif isinstance(est, ColumnTransformer):
            stack.extend(t for _, t, _ in est.transformers_)
        elif isinstance(est, FeatureUnion):
            stack.extend(t for _, t in est.transformer_list)
        elif hasattr(est, "fit") and _sub_options(est) is not None:
            options.setdefault(id(est), {}).setdefault("zipmap", False)
    return options

