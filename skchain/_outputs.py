"""What ``output="proba"``, ``"logits"``, ``"predict"``, ``"embedding"`` or a layer
name mean for a given net, and the feature names that go with them.

A net is first described (:func:`describe_net`): which torch module runs, whether
it is a classifier, its classes and how its raw output becomes probabilities.
:func:`plan_output` then turns the user's ``output`` into an :class:`OutputPlan`
that :func:`skchain._runner.run_module` executes. Every wrapper shares the two.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ._capture import last_linear, layer_names
from ._runner import to_proba as _logits_to_proba

__all__ = [
    "KEYWORDS",
    "NetInfo",
    "OutputPlan",
    "describe_net",
    "net_kind",
    "plan_output",
    "target_aligned",
]

KEYWORDS = ("auto", "proba", "logits", "predict", "embedding")


@dataclass
class NetInfo:
    """How a net's raw output is to be read.

    kind is one of ``"classifier"`` (skorch classifier, or a plain module read
    as a classifier), ``"binary"`` (skorch ``NeuralNetBinaryClassifier``: one
    logit column), ``"regressor"`` or ``"module"`` (any other net or a plain
    ``nn.Module``, whose output is taken as it is).
    """

    module: nn.Module
    kind: str
    classes: np.ndarray | None = None
    # Maps the module's raw output to probabilities (classifiers only).
    to_proba: object = None
    # The module itself returns probabilities (skorch's NLLLoss convention).
    outputs_proba: bool = False
    extra: dict = field(default_factory=dict)


def net_kind(net):
    """What a net is, initialized or not: the one classification of nets.

    ``"classifier"`` (skorch ``NeuralNetClassifier``), ``"binary"`` (skorch
    ``NeuralNetBinaryClassifier``: one logit column), ``"regressor"`` (skorch
    ``NeuralNetRegressor``) or ``"module"`` (any other skorch net, or a plain
    ``torch.nn.Module``).
    """
    from skorch import NeuralNetBinaryClassifier, NeuralNetClassifier, NeuralNetRegressor

    if isinstance(net, NeuralNetBinaryClassifier):
        return "binary"
    if isinstance(net, NeuralNetClassifier):
        return "classifier"
    if isinstance(net, NeuralNetRegressor):
        return "regressor"
    return "module"


def describe_net(net, module=None, classes=None):
    """Describe a skorch net (initialized) or a plain module.

    Parameters
    ----------
    net : skorch.NeuralNet or torch.nn.Module
    module : torch.nn.Module, default=None
        The module to run; defaults to ``net.module_`` or ``net`` itself.
    classes : array-like, default=None
        Class labels in the order of the output columns, when known.
    """
    from skorch import NeuralNet

    if isinstance(net, nn.Module):
        return NetInfo(
            module=net if module is None else module,
            kind="module",
            classes=None if classes is None else np.asarray(classes),
            to_proba=_logits_to_proba,
        )
    if not isinstance(net, NeuralNet):
        raise TypeError(
            f"Expected a skorch net or a torch.nn.Module, got {type(net).__name__}."
        )
    module = net.module_ if module is None else module
    kind = net_kind(net)
    if kind == "binary":
        classes = np.array([0, 1]) if classes is None else np.asarray(classes)
    elif kind == "classifier" and classes is None:
        try:
            classes = net.classes_
        except AttributeError:
            classes = None
    if kind not in ("classifier", "binary"):
        return NetInfo(module, kind)
    # skorch decides probabilities from the criterion ("auto" nonlinearity); reuse
    # its rule so our "proba" equals the net's own predict_proba.
    return NetInfo(
        module,
        kind,
        None if classes is None else np.asarray(classes),
        to_proba=net._get_predict_nonlinearity(),
        outputs_proba=kind == "classifier"
        and isinstance(getattr(net, "criterion_", None), nn.NLLLoss),
    )


@dataclass
class OutputPlan:
    """What to capture and how to post-process it; see :func:`plan_output`."""

    keyword: str | None
    layers: list | None = None
    layer_inputs: bool = False
    postprocess: object = None
    prefix: str = "output"

    def run_kwargs(self):
        return dict(
            layers=self.layers,
            layer_inputs=self.layer_inputs,
            postprocess=self.postprocess,
        )


def _last_linear(module):
    name = last_linear(module)
    if name is None:
        raise ValueError(
            'output="embedding" means the input of the last fully connected layer '
            f"(nn.Linear, a Keras Dense layer, an ONNX Gemm/MatMul), and "
            f"{type(module).__name__} has none. Name the layer "
            f"whose output you want instead; valid names: {layer_names(module)}."
        )
    return name


def _one_hot_argmax(proba):
    out = torch.zeros_like(proba)
    out.scatter_(1, proba.argmax(dim=1, keepdim=True), 1.0)
    return out


def _log_clamped(p):
    return torch.log(torch.clamp(p, min=torch.finfo(p.dtype).tiny))


def plan_output(output, info):
    """Resolve ``output`` against a described net.

    Keywords (a string):

    - ``"auto"``: ``"proba"`` for classifiers, ``"predict"`` for regressors and
      the raw final output for any other net or plain module.
    - ``"proba"``: class probabilities, as the net's ``predict_proba`` gives them
      (plain modules: softmax of the output, or sigmoid of a single column).
    - ``"logits"``: pre-softmax scores. A skorch classifier trained with its
      default ``NLLLoss`` returns probabilities, so their log is returned.
    - ``"predict"``: classifiers give the predicted label one-hot encoded (one
      column per class, so any label type works downstream); regressors their
      predictions.
    - ``"embedding"``: the input of the last ``nn.Linear`` layer.

    Any other string is the name of a submodule; a list is always a list of
    submodule names (use ``["embedding"]`` for a layer called ``embedding``).
    """
    kind = info.kind
    is_classifier = kind in ("classifier", "binary")
    if isinstance(output, str) and output in KEYWORDS:
        keyword = output
        if keyword == "auto":
            keyword = {"classifier": "proba", "binary": "proba", "regressor": "predict"}
            keyword = keyword.get(kind, None)
            if keyword is None:
                return OutputPlan("auto", prefix="output")
        if keyword == "proba":
            if not (is_classifier or kind == "module"):
                raise ValueError(
                    f'output="proba" needs a classifier, but the net is a {kind}. '
                    'Use output="predict", "embedding" or a layer name instead.'
                )
            return OutputPlan("proba", postprocess=info.to_proba, prefix="proba")
        if keyword == "logits":
            post = _log_clamped if info.outputs_proba else None
            return OutputPlan("logits", postprocess=post, prefix="logits")
        if keyword == "predict":
            if is_classifier:
                to_proba = info.to_proba

                def post(t):
                    return _one_hot_argmax(to_proba(t))

                return OutputPlan("predict", postprocess=post, prefix="predict")
            return OutputPlan("predict", prefix="predict")
        if keyword == "embedding":
            return OutputPlan(
                "embedding",
                layers=[_last_linear(info.module)],
                layer_inputs=True,
                prefix="embedding",
            )
    names = [output] if isinstance(output, str) else list(output)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"output must be one of {KEYWORDS}, a submodule name or a non-empty list "
            f"of submodule names; got {output!r}."
        )
    valid = layer_names(info.module)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(
            f"output={output!r}: no submodule named {unknown} in "
            f"{type(info.module).__name__}. Valid keywords: {list(KEYWORDS)}; "
            f"valid layer names: {valid}."
        )
    return OutputPlan(None, layers=names, prefix=None)


def target_aligned(output):
    """Whether ``output`` has the same meaning in every net trained on a target.

    Probabilities, logits and predictions are tied to the target's columns;
    hidden layers and embeddings are not (two trainings give unrelated units).
    """
    return isinstance(output, str) and output in ("auto", "proba", "logits", "predict")


def feature_names(plan, info, widths):
    """Names of the output columns.

    ``widths`` lists the flattened width of each captured layer (one entry for
    keyword outputs). Class-indexed outputs are named after the classes
    (``proba_cat``), everything else by position (``embedding_0``,
    ``encoder.2_0``).
    """
    if plan.layers and plan.keyword is None:
        return np.asarray(
            [f"{name}_{i}" for name, w in zip(plan.layers, widths, strict=True)
             for i in range(w)],
            dtype=object,
        )
    (width,) = widths
    classes = info.classes
    if (
        plan.keyword in ("proba", "logits", "predict")
        and classes is not None
        and len(classes) == width
    ):
        return np.asarray([f"{plan.prefix}_{c}" for c in classes], dtype=object)
    return np.asarray([f"{plan.prefix}_{i}" for i in range(width)], dtype=object)
