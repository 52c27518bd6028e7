"""Property tests: random shapes, dtypes, memory orders, batch sizes and outputs.

For any valid input the result has the right shape, is finite for finite
input, does not depend on the batch size, the dtype the values arrive in or
their memory order, and is the same on a second call.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from skchain import ModuleClassifier, NeuralTransformer

N_FEATURES = 6
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _module():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(N_FEATURES, 8), nn.Tanh(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)
    )


MODULE = _module()
WIDTHS = {"proba": 3, "logits": 3, "embedding": 5, "1": 8, "3": 5, ("1", "3"): 13}

# Small integers are exact in every dtype below, so the float32 rows the
# module sees are bitwise the same whatever dtype they arrive in.
rows = st.integers(1, 40).flatmap(
    lambda n: arrays(np.int8, (n, N_FEATURES), elements=st.integers(-8, 8))
)
dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int16, np.int64])
orders = st.sampled_from(["C", "F"])
outputs = st.sampled_from(sorted(WIDTHS, key=str))


def _as(X, dtype, order):
    return np.array(X, dtype=dtype, order=order)


@SETTINGS
@given(X=rows, dtype=dtypes, order=orders, output=outputs, batch_size=st.integers(1, 64))
def test_neural_transformer_properties(X, dtype, order, output, batch_size):
    out = list(output) if isinstance(output, tuple) else output
    reference = NeuralTransformer(MODULE, output=out, cache=False).fit(X.astype(np.float32))
    nt = NeuralTransformer(MODULE, output=out, batch_size=batch_size, cache=False)
    Z = nt.fit(_as(X, dtype, order)).transform(_as(X, dtype, order))
    assert Z.shape == (X.shape[0], WIDTHS[output])
    assert Z.dtype == np.float32
    assert np.isfinite(Z).all()
    np.testing.assert_allclose(Z, reference.transform(X.astype(np.float32)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(Z, nt.transform(_as(X, dtype, order)))
    if output == "proba":
        np.testing.assert_allclose(Z.sum(axis=1), 1, rtol=1e-5)


@SETTINGS
@given(X=rows, dtype=dtypes, order=orders, batch_size=st.integers(1, 64))
def test_module_classifier_properties(X, dtype, order, batch_size):
    clf = ModuleClassifier(MODULE, ["a", "b", "c"], batch_size=batch_size)
    proba = clf.predict_proba(_as(X, dtype, order))
    assert proba.shape == (X.shape[0], 3)
    assert proba.dtype == np.float64
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=0, atol=1e-12)
    reference = ModuleClassifier(MODULE, ["a", "b", "c"]).predict_proba(X.astype(np.float32))
    np.testing.assert_allclose(proba, reference, rtol=1e-5, atol=1e-7)
    labels = clf.predict(_as(X, dtype, order))
    assert set(labels) <= {"a", "b", "c"}
    np.testing.assert_array_equal(labels, np.array(["a", "b", "c"])[proba.argmax(axis=1)])


@pytest.mark.parametrize("output", ["proba", "embedding"])
def test_the_module_is_left_as_it_was(output):
    module = _module()
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    n_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())
    NeuralTransformer(module, output=output).fit(np.ones((3, N_FEATURES))).transform(
        np.ones((4, N_FEATURES))
    )
    assert all(m.training for m in module.modules())
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key])
    assert n_hooks == sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()
    )
