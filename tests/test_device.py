"""``device=`` on every wrapper that runs a torch module: the same results on the
CPU however it is spelled, a clear error for a device torch cannot use, the
user's module never moved. The CUDA tests skip without a GPU."""

import numpy as np
import pytest
import torch
from torch import nn

from skchain import MergedHeadsClassifier, ModuleClassifier, NeuralTransformer

D = 5
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 7), nn.ReLU(), nn.Linear(7, 3))


@pytest.fixture(scope="module")
def X():
    return np.random.RandomState(0).randn(40, D).astype(np.float32)


def _wrappers(device):
    """name -> (estimator on ``device``, how to fit it, the method to compare)."""
    torch.manual_seed(1)
    backbone = nn.Sequential(nn.Linear(D, 4), nn.Tanh())
    heads = [("a", nn.Linear(4, 2), [0, 1]), ("b", nn.Linear(4, 2), [1, 2])]
    return {
        "neural_transformer": (NeuralTransformer(_mlp(), device=device), "transform"),
        "module_classifier": (ModuleClassifier(_mlp(), [0, 1, 2], device=device), "predict_proba"),
        "merged_heads": (
            MergedHeadsClassifier(backbone, heads, calibration=None, device=device),
            "predict_proba",
        ),
    }


def _fit_run(est, method, X):
    y = np.arange(len(X)) % 3
    return getattr(est.fit(X, y), method)(X)


@pytest.mark.parametrize("name", sorted(_wrappers(None)))
@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "auto"], ids=str)
def test_cpu_device_however_spelled_gives_the_default_result(X, name, device):
    if device == "auto" and torch.cuda.is_available():
        pytest.skip("'auto' is CUDA here (see the CUDA tests)")
    est, method = _wrappers(device)[name]
    default, _ = _wrappers(None)[name]
    np.testing.assert_allclose(
        _fit_run(est, method, X), _fit_run(default, method, X), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("name", sorted(_wrappers(None)))
@pytest.mark.parametrize(
    "device,match",
    [("tpu", "not a device torch knows|not supported"), ("cuda:99", "GPU|CUDA"), (3, "device")],
    ids=["unknown", "missing_gpu", "wrong_type"],
)
def test_bad_device_is_a_clear_error(X, name, device, match):
    est, method = _wrappers(device)[name]
    with pytest.raises((ValueError, TypeError), match=match):
        _fit_run(est, method, X)


def test_module_classifier_device_without_fit_is_checked_at_the_call(X):
    with pytest.raises(ValueError, match="not a device torch knows|not supported"):
        ModuleClassifier(_mlp(), [0, 1, 2], device="tpu").predict(X)


def test_module_classifier_on_its_own_device_runs_the_module_itself(X):
    module = _mlp()
    clf = ModuleClassifier(module, [0, 1, 2], device="cpu").fit(X)
    assert clf.module_ is module  # no copy when the module already lives there


# -- on a GPU ------------------------------------------------------------------


@CUDA
@pytest.mark.parametrize("name", sorted(_wrappers(None)))
def test_cuda_gives_the_cpu_result_and_leaves_the_module_on_the_cpu(X, name):
    est, method = _wrappers("cuda")[name]
    default, _ = _wrappers(None)[name]
    out = _fit_run(est, method, X)
    assert isinstance(out, np.ndarray)  # results come back as NumPy
    np.testing.assert_allclose(out, _fit_run(default, method, X), rtol=1e-4, atol=1e-5)
    for module in [getattr(est, "net", None), getattr(est, "module", None),
                   getattr(est, "backbone", None)]:
        if isinstance(module, nn.Module):
            assert all(p.device.type == "cpu" for p in module.parameters())


@CUDA
def test_cuda_dask_transform_equals_the_cpu_one(X):
    da = pytest.importorskip("dask.array")
    module = _mlp()
    gpu = NeuralTransformer(module, device="cuda").fit(X)
    cpu = NeuralTransformer(module).fit(X)
    out = gpu.transform(da.from_array(X, chunks=16))
    np.testing.assert_allclose(out.compute(), cpu.transform(X), rtol=1e-4, atol=1e-5)
