"""The target as a net trains on it, and whether a module's output fits it.

``NeuralTransformer`` trains skorch nets on encoded labels (0..k-1 for
classifiers, float32 columns for regressors): encoding once, before the folds,
keeps a fold that misses a class from changing what its columns mean.
"""

import numpy as np
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets

from ._outputs import net_kind

__all__ = ["check_output_fits_target", "encode_target"]


def encode_target(net, y, n_samples, classes=None):
    """``(encoded y, class labels or None)``: y as ``net`` trains on it; ``classes``
    fixes the label set (cross fitting: every fold's columns mean the same
    classes)."""
    kind = net_kind(net)
    if y is None:
        if kind != "module":
            raise ValueError(
                f"NeuralTransformer with a {type(net).__name__} requires y to "
                "be passed, but the target y is None: call fit(X, y), or use "
                "frozen=True to use a fitted net without training it."
            )
        return None, None
    y = np.asarray(y)
    if y.shape[0] != n_samples:
        raise ValueError(
            f"X has {n_samples} rows but y has {y.shape[0]}; they must match."
        )
    if kind in ("classifier", "binary"):
        check_classification_targets(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = np.ravel(y)
        encoder = LabelEncoder().fit(y if classes is None else classes)
        if len(encoder.classes_) < 2:
            raise ValueError(
                f"y has only one class ({encoder.classes_[0]!r}); a classifier "
                "net needs at least two classes to learn from."
            )
        if kind == "binary":
            if len(encoder.classes_) > 2:
                raise ValueError(
                    "NeuralNetBinaryClassifier needs two classes, y has "
                    f"{len(encoder.classes_)}; use NeuralNetClassifier instead."
                )
            return encoder.transform(y).astype(np.float32), encoder.classes_
        return encoder.transform(y).astype(np.int64), encoder.classes_
    if kind == "regressor":
        y = np.asarray(y, dtype=np.float32)
        if not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity; clean or impute it first.")
        # A 1-D target against an (n, 1) output is broadcast by MSELoss into an
        # (n, n) difference and the net learns a constant: make it a column.
        return (y.reshape(-1, 1) if y.ndim == 1 else y), None
    return y, None


def check_output_fits_target(kind, shape, y, classes):
    """Fail before training when a module's output of ``shape`` (per batch)
    cannot fit the encoded target ``y`` of a net of ``kind``."""
    ndim = len(shape)
    if kind == "classifier":
        n_classes = len(classes)
        if ndim != 2 or shape[1] != n_classes:
            raise ValueError(
                f"The module returns shape {shape} per batch but y has "
                f"{n_classes} classes: a classifier's last layer needs exactly "
                f"{n_classes} outputs, one per class (set the output size "
                "through net__module__<param>)."
            )
    elif kind == "binary":
        if not (ndim == 1 or (ndim == 2 and shape[1] == 1)):
            raise ValueError(
                f"The module returns shape {shape} per batch, but "
                "NeuralNetBinaryClassifier needs one logit per row: shape "
                "(n_samples,) or (n_samples, 1)."
            )
    elif kind == "regressor":
        n_targets = y.shape[1]
        if ndim != 2 or shape[1] != n_targets:
            raise ValueError(
                f"The module returns shape {shape} but y has "
                f"{n_targets} target column(s); the module must return "
                f"(n_samples, {n_targets})."
            )
