"""Export a fitted chain as one ONNX graph, for onnxruntime.

``to_onnx`` builds on skl2onnx:
skchain's estimators are registered with skl2onnx as converters. A net's
converter builds the torch module :func:`~skchain.to_torch` builds for it,
exports it with torch's ONNX exporter (the ``torch.export``-based one,
``dynamo=True``, opset 18) and splices that graph into the model skl2onnx is
assembling; scikit-learn's own steps are converted by skl2onnx. Classifiers
end in skl2onnx's two outputs ``label`` and ``probabilities`` (a plain
tensor: no ZipMap).

This module holds the converters and :func:`to_onnx`; the graph plumbing is
:mod:`._onnx_graph`, the graphs of ONNX members and of merged heads
:mod:`._onnx_members`.
"""

import numpy as np

from .._neural import NeuralTransformer
from ..ensemble import ModuleClassifier, OutputEnsembleClassifier, OutputEnsembleRegressor
from ..heads import MergedHeadsClassifier
from ..text import TextEmbedder
from ._onnx_graph import (
    ML_OPSET,
    OPSET,
    _add_label,
    _export_module,
    _import_onnx,
    _no_zipmap,
    _row_shape,
    _splice,
    _sub_options,
)
from ._onnx_members import splice_merged_heads, splice_onnx_member
from ._torch import _convert, _ensemble_parts, _merged_heads_parts

__all__ = ["to_onnx"]


# -- converters --------------------------------------------------------------------


def _shape_transformer(operator):
    from skl2onnx.common.data_types import FloatTensorType

    est = operator.raw_operator
    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([n, len(est.get_feature_names_out())])


def _convert_transformer(scope, operator, container):
    est = operator.raw_operator
    if splice_onnx_member(scope, operator, container, est, operator.outputs[0].full_name):
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
        if splice_merged_heads(scope, operator, container, est, merged):
            _add_label(scope, container, est.classes_, proba, label)
            return
    conv = _convert(est)
    if not splice_onnx_member(scope, operator, container, est, proba):
        model = _export_module(conv.module, _row_shape(operator))
        _splice(scope, container, model, operator.inputs[0].full_name, proba)
    _add_label(scope, container, conv.classes, proba, label)


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
