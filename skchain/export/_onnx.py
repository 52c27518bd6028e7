"""Export a fitted chain as one ONNX graph, for onnxruntime.

``to_onnx`` builds on skl2onnx:
skchain's estimators are registered with skl2onnx as converters. A net's
converter builds the torch module :func:`~skchain.to_torch` builds for it,
exports it with torch's ONNX exporter (the ``torch.export``-based one,
``dynamo=True``, opset 18) and splices that graph into the model skl2onnx is
assembling; scikit-learn's own steps are converted by skl2onnx. Classifiers
end in skl2onnx's two outputs ``label`` and ``probabilities`` (a plain
tensor: no ZipMap).
"""

import copy
import warnings
from contextlib import ExitStack

import numpy as np

from .._neural import NeuralTransformer
from .._runner import module_lock
from ..ensemble import ModuleClassifier, OutputEnsembleClassifier, OutputEnsembleRegressor
from ..heads import MergedHeadsClassifier
from ..text import TextEmbedder
from .._onnx_model import OnnxModel
from ._torch import (
    HeadColumns,
    NetOutput,
    _convert,
    _ensemble_parts,
    _merged_heads_parts,
    _module_classifier_parts,
    _neural_parts,
)

__all__ = ["to_onnx"]

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
            "'model.onnx', classes)), whose graph to_onnx embeds as it is."
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


# -- converters --------------------------------------------------------------------


def _shape_transformer(operator):
    from skl2onnx.common.data_types import FloatTensorType

    est = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([n, len(est.get_feature_names_out())])


def _convert_transformer(scope, operator, container):
    est = operator.raw_operator
    if _splice_onnx_member(scope, operator, container, est, operator.outputs[0].full_name):
        return
    model = _export_module(_convert(est).module, _row_shape(operator))
    _splice(scope, container, model, operator.inputs[0].full_name,
            operator.outputs[0].full_name)


def _shape_classifier(operator):
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    calculate_linear_classifier_output_shapes(operator)


def _convert_net_classifier(scope, operator, container):
    """ModuleClassifier, MergedHeadsClassifier: the net gives the probabilities."""
    est = operator.raw_operator
    label, proba = operator.outputs[0].full_name, operator.outputs[1].full_name
    if isinstance(est, MergedHeadsClassifier):
        merged, _ = _merged_heads_parts(est)
        if merged is None:
            _splice_columns_and_combiner(scope, operator, container, est)
            _add_label(scope, container, est.classes_, proba, label)
            return
    conv = _convert(est)
    if not _splice_onnx_member(scope, operator, container, est, proba):
        model = _export_module(conv.module, _row_shape(operator))
        _splice(scope, container, model, operator.inputs[0].full_name, proba)
    _add_label(scope, container, conv.classes, proba, label)


def _onnx_member(est):
    """``(OnnxModel, values read, post-processing)`` of a NeuralTransformer or
    ModuleClassifier that runs an ONNX model, else ``None``.

    The post-processing is ``None``, ``"softmax"`` (:func:`skchain._runner.to_proba`
    of logits), ``"renormalize"`` (probabilities divided by their row sum) or a
    torch module to export.
    """
    from torch import nn

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


def _splice_onnx_member(scope, operator, container, est, output_name):
    """Embed the graph of an ONNX member as it is (with the values it reads
    added as outputs of a private copy), then its post-processing; ``False``
    when ``est`` runs no ONNX model."""
    import onnx
    import onnx.version_converter
    from onnx import helper

    member = _onnx_member(est)
    if member is None:
        return False
    model, values, post = member
    proto = onnx.load_from_string(model._bytes)  # private copy
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
    outputs = {o.name for o in proto.graph.output}
    for name in values:
        if name not in outputs:
            proto.graph.output.append(onnx.ValueInfoProto(name=name))
    rename = _splice_nodes(scope, container, proto, operator.inputs[0].full_name)
    flat = []
    for name in values:
        out = scope.get_unique_variable_name("flat")
        container.nodes.append(helper.make_node(
            "Flatten", [rename(name)], [out], axis=1,
            name=scope.get_unique_operator_name("Flatten")))
        flat.append(out)
    joined = flat[0]
    if len(flat) > 1:
        joined = scope.get_unique_variable_name("concat")
        container.nodes.append(helper.make_node(
            "Concat", flat, [joined], axis=1, name=scope.get_unique_operator_name("Concat")))
    if post is None or isinstance(post, str):
        _add_probabilities(scope, container, joined, output_name, post,
                           _raw_width(model, _row_shape(operator)))
        return True
    # The post-processing keeps the width: the fitted estimator's output width.
    width = len(est.get_feature_names_out() if isinstance(est, NeuralTransformer)
                else est.classes_)
    _splice(scope, container, _export_module(post, (width,)), joined, output_name)
    return True


def _splice_columns_and_combiner(scope, operator, container, est):
    """Merged heads whose combiner is not linear (so not in the torch module):
    the heads' columns from torch, then the combiner from skl2onnx."""
    import skl2onnx

    merged = est.merged_
    columns = HeadColumns(merged)
    model = _export_module(columns, _row_shape(operator))
    z = scope.get_unique_variable_name("head_columns")
    _splice(scope, container, model, operator.inputs[0].full_name, z)
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


def _sub_options(est):
    from sklearn.base import is_classifier
    from sklearn.pipeline import Pipeline

    if is_classifier(est) and not isinstance(est, Pipeline):
        return {"zipmap": False}
    return None


def _sub_estimator(est, X, opv):
    """skl2onnx's OnnxSubEstimator, with a Pipeline unrolled step by step
    (OnnxSubEstimator does not take a Pipeline)."""
    from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
    from sklearn.pipeline import Pipeline

    if isinstance(est, Pipeline):
        steps = [s for _, s in est.steps if s is not None and s != "passthrough"]
        for step in steps[:-1]:
            X = OnnxSubEstimator(step, X, op_version=opv)[0]
        est = steps[-1]
    return OnnxSubEstimator(est, X, op_version=opv, options=_sub_options(est))


def _const(scope, container, value):
    from onnx import TensorProto

    value = np.asarray(value, dtype=np.float32)
    name = scope.get_unique_variable_name("const")
    container.add_initializer(name, TensorProto.FLOAT, list(value.shape),
                              value.ravel().tolist())
    return name


def _convert_ensemble_classifier(scope, operator, container):
    from onnx import TensorProto
    from skl2onnx.algebra.onnx_ops import (
        OnnxArgMax,
        OnnxCast,
        OnnxConcat,
        OnnxDiv,
        OnnxEqual,
        OnnxIdentity,
        OnnxMatMul,
        OnnxMax,
        OnnxMul,
        OnnxReduceSumApi11,
        OnnxReshape,
        OnnxSum,
    )

    opv = container.target_opset
    est = operator.raw_operator
    members, columns, weights, final = _ensemble_parts(est)
    classes = np.asarray(est.classes_)
    k = classes.size
    X = operator.inputs[0]
    aligned = []
    for member, cols in zip(members, columns, strict=True):
        sub = _sub_estimator(member, X, opv)
        if est.voting == "soft":
            p = sub[1]
            total = OnnxReduceSumApi11(p, axes=[1], keepdims=1, op_version=opv)
            p = OnnxDiv(p, OnnxMax(total, np.array([1e-12], dtype=np.float32),
                                   op_version=opv), op_version=opv)
            perm = np.zeros((k, k), dtype=np.float32)
            perm[np.arange(k), cols] = 1.0
            aligned.append(OnnxMatMul(p, perm, op_version=opv))
        else:
            if classes.dtype.kind not in "iub":
                raise ValueError(
                    'skchain.to_onnx converts voting="hard" ensembles with integer '
                    "labels only; encode the labels or use voting=\"soft\"."
                )
            label = OnnxReshape(sub[0], np.array([-1, 1], dtype=np.int64), op_version=opv)
            onehot = OnnxEqual(label, classes.astype(np.int64).reshape(1, -1), op_version=opv)
            aligned.append(OnnxCast(onehot, to=TensorProto.FLOAT, op_version=opv))
    if final is None:
        terms = [OnnxMul(a, np.array([w], dtype=np.float32), op_version=opv)
                 for a, w in zip(aligned, weights, strict=True)]
        proba = terms[0] if len(terms) == 1 else OnnxSum(*terms, op_version=opv)
    else:
        features = OnnxConcat(*aligned, axis=1, op_version=opv)
        fp = _sub_estimator(final, features, opv)[1]
        fcls = np.asarray(final.classes_).astype(int)
        place = np.zeros((fcls.size, k), dtype=np.float32)
        place[np.arange(fcls.size), fcls] = 1.0
        proba = OnnxMatMul(fp, place, op_version=opv)
    proba = OnnxIdentity(proba, op_version=opv, output_names=[operator.outputs[1]])
    proba.add_to(scope, container)
    index = OnnxArgMax(proba, axis=1, keepdims=0, op_version=opv)
    label_values = classes.astype(np.int64) if classes.dtype.kind in "iub" else classes
    from skl2onnx.algebra.onnx_ops import OnnxGather

    label = OnnxGather(label_values, index, axis=0, op_version=opv,
                       output_names=[operator.outputs[0]])
    label.add_to(scope, container)


def _shape_regressor(operator):
    from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes

    calculate_linear_regressor_output_shapes(operator)


def _convert_ensemble_regressor(scope, operator, container):
    from skl2onnx.algebra.onnx_ops import OnnxConcat, OnnxIdentity, OnnxMul, OnnxSum

    opv = container.target_opset
    est = operator.raw_operator
    members, _, weights, final = _ensemble_parts(est)
    X = operator.inputs[0]
    preds = [_sub_estimator(m, X, opv)[0] for m in members]
    if final is None:
        terms = [OnnxMul(p, np.array([w], dtype=np.float32), op_version=opv)
                 for p, w in zip(preds, weights, strict=True)]
        out = terms[0] if len(terms) == 1 else OnnxSum(*terms, op_version=opv)
    else:
        features = OnnxConcat(*preds, axis=1, op_version=opv)
        out = _sub_estimator(final, features, opv)[0]
    OnnxIdentity(out, op_version=opv, output_names=[operator.outputs[0]]).add_to(
        scope, container
    )


def _refuse_text_shape(operator):
    _convert(operator.raw_operator)  # raises the TypeError saying what to do


def _refuse_text(scope, operator, container):
    _convert(operator.raw_operator)


_REGISTERED = False


def _register():
    global _REGISTERED
    if _REGISTERED:
        return
    from skl2onnx import update_registered_converter

    update_registered_converter(NeuralTransformer, "SkchainNeuralTransformer",
                                _shape_transformer, _convert_transformer)
    update_registered_converter(TextEmbedder, "SkchainTextEmbedder",
                                _refuse_text_shape, _refuse_text)
    # skl2onnx passes its classifier options; only their plain-tensor values
    # are implemented, so any other value is refused by skl2onnx itself.
    classifier_options = {"zipmap": [False], "nocl": [False]}
    for cls in (ModuleClassifier, MergedHeadsClassifier):
        update_registered_converter(cls, f"Skchain{cls.__name__}",
                                    _shape_classifier, _convert_net_classifier,
                                    options=classifier_options)
    update_registered_converter(OutputEnsembleClassifier, "SkchainOutputEnsembleClassifier",
                                _shape_classifier, _convert_ensemble_classifier,
                                options=classifier_options)
    update_registered_converter(OutputEnsembleRegressor, "SkchainOutputEnsembleRegressor",
                                _shape_regressor, _convert_ensemble_regressor)
    _REGISTERED = True


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


def to_onnx(estimator, X, *, target_opset=None, options=None):
    """Convert a fitted chain into one ONNX graph.

    Works on any fitted skchain estimator and on any scikit-learn
    :class:`~sklearn.pipeline.Pipeline`,
    :class:`~sklearn.compose.ColumnTransformer` or
    :class:`~sklearn.pipeline.FeatureUnion` holding them next to steps
    skl2onnx converts. Each net's graph comes from torch's ONNX exporter
    (:func:`torch.onnx.export` with ``dynamo=True``, opset 18); the rest is
    skl2onnx's. The graph runs in onnxruntime without Python, skchain or torch.

    Parameters
    ----------
    estimator : fitted estimator
    X : array-like of shape (n_samples, n_features)
        A sample of the input, as :func:`skl2onnx.to_onnx` takes it (only its
        type and width are used). A numeric array is converted to float32:
        the graph takes float32 rows, as the nets do.
    target_opset : int or dict, default=None
        ``None`` means ``{"": 18, "ai.onnx.ml": 3}``.
    options : dict, default=None
        skl2onnx options, by estimator id or type. Every scikit-learn
        classifier gets ``{"zipmap": False}``, unless set here.

    Returns
    -------
    model : onnx.ModelProto
        Input ``X``. Classifiers: outputs ``label`` and ``probabilities``
        (a float32 tensor, columns in ``classes_`` order; for a
        ``voting="hard"`` ensemble, the weighted vote shares). Regressors:
        ``variable``. Transformers: ``variable``.

    Raises
    ------
    ImportError
        When skl2onnx, onnx or onnxscript is missing (``pip install 'skchain[onnx]'``).
    TypeError
        For a :class:`~skchain.TextEmbedder`, whose tokenizer is Python:
        export the chain from its embeddings on.

    See Also
    --------
    to_torch : The chain as one torch module.

    Examples
    --------
    >>> import numpy as np
    >>> import onnxruntime as ort
    >>> import torch
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skchain import NeuralTransformer, to_onnx
    >>> X, y = load_iris(return_X_y=True)
    >>> X = X.astype(np.float32)
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh())
    >>> pipe = make_pipeline(StandardScaler(), NeuralTransformer(net),
    ...                      LogisticRegression()).fit(X, y)
    >>> model = to_onnx(pipe, X[:1])
    >>> session = ort.InferenceSession(model.SerializeToString(),
    ...                                providers=["CPUExecutionProvider"])
    >>> label, proba = session.run(["label", "probabilities"], {"X": X})
    >>> bool((label == pipe.predict(X)).all())
    True
    >>> bool(np.abs(proba - pipe.predict_proba(X)).max() < 1e-5)
    True
    """
    _import_onnx()
    import skl2onnx

    _register()
    if isinstance(X, np.ndarray) and X.dtype.kind in "iuf":
        X = X.astype(np.float32)
    elif hasattr(X, "dtypes") and all(dt.kind in "iuf" for dt in X.dtypes):
        X = X.astype(np.float32)  # a numeric DataFrame: one float32 input per column
    if target_opset is None:
        target_opset = {"": OPSET, "ai.onnx.ml": ML_OPSET}
    options = _no_zipmap(estimator, dict(options or {}))
    return skl2onnx.to_onnx(estimator, X, target_opset=target_opset, options=options)
