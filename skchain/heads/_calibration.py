"""Fitting a merge's calibration on the heads' frozen outputs.

Both functions work on ``Z``, the heads' concatenated outputs on the held-out
rows, computed once: no calibration ever runs the networks again.
"""

import numpy as np
import torch
from scipy.optimize import minimize
from torch import nn

from .._runner import to_proba
from ._merge import _pool

__all__ = ["fit_temperatures", "linear_combiner", "set_scaling"]


def fit_temperatures(merged, Z, y_index, with_bias):
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


def linear_combiner(combiner, classes, Z):
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
    rows = np.asarray(Z[:256])
    with torch.no_grad():
        ours = to_proba(linear(torch.from_numpy(rows.astype(np.float32)))).numpy()
    # atol: the module computes in float32, the combiner in float64.
    if not np.allclose(ours, combiner.predict_proba(rows), atol=1e-4):
        return None
    return linear


def set_scaling(merged, scale, bias):
    """Write per-head scales and biases into the merged module's column buffers."""
    widths = merged.head_widths
    with torch.no_grad():
        merged.column_scale.copy_(torch.from_numpy(np.repeat(scale, widths)))
        merged.column_bias.copy_(torch.from_numpy(np.repeat(bias, widths)))
