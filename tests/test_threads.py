"""One fitted NeuralTransformer called from many threads at once."""

import threading

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler
from torch import nn

from skchain import NeuralTransformer
from skchain._testing import make_classifier_net

N_THREADS = 6
ROUNDS = 3


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X).astype(np.float32), y


def _module_state(module):
    """Everything a run could change: train flags, parameters and buffers, hooks."""
    flags = [m.training for m in module.modules()]
    tensors = {k: v.detach().clone() for k, v in module.state_dict().items()}
    hooks = [
        (len(m._forward_hooks), len(m._forward_pre_hooks)) for m in module.modules()
    ]
    return flags, tensors, hooks


def _assert_same_state(before, module):
    flags, tensors, hooks = before
    after = _module_state(module)
    assert after[0] == flags
    assert after[1].keys() == tensors.keys()
    for key, value in tensors.items():
        assert torch.equal(after[1][key], value), key
    assert after[2] == hooks


def _concurrent_transforms(nt, inputs):
    """``nt.transform`` of each input, all threads released at once."""
    barrier = threading.Barrier(len(inputs))
    results, errors = [None] * len(inputs), []

    def work(i):
        try:
            barrier.wait()
            for _ in range(ROUNDS):
                results[i] = nt.transform(inputs[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def _inputs(X):
    # Each thread gets different rows, so a mix-up between threads shows.
    rng = np.random.RandomState(0)
    return [X[rng.permutation(len(X))[: 40 + 7 * i]] for i in range(N_THREADS)]


@pytest.mark.parametrize(
    "output", ["proba", "embedding", "encoder.1", ["encoder.1", "head"], "logits"]
)
def test_trained_net_threads_equal_sequential(iris, output):
    X, y = iris
    net = make_classifier_net(n_classes=3, max_epochs=3, module__dropout=0.5)
    nt = NeuralTransformer(net, output=output, cv=None, random_state=0).fit(X, y)
    before = _module_state(nt.module_)
    inputs = _inputs(X)
    expected = [nt.transform(x) for x in inputs]
    for got, want in zip(_concurrent_transforms(nt, inputs), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    # skorch's flags on the trained module are left as skorch left them.
    _assert_same_state(before, nt.module_)


class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                  nn.Dropout(0.5))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("output", ["proba", "embedding", "body.1"])
def test_module_in_train_mode_threads_equal_sequential(iris, output, cache):
    X, _ = iris
    module = BatchNormNet()
    with torch.no_grad():  # non-trivial running statistics
        module.body[1].running_mean.uniform_(-1, 1)
        module.body[1].running_var.uniform_(0.5, 2)
    module.train()  # as a user might leave it: BatchNorm and Dropout active
    before = _module_state(module)
    nt = NeuralTransformer(module, output=output, cache=cache).fit(X)
    inputs = _inputs(X)
    expected = [nt.transform(x) for x in inputs]
    for got, want in zip(_concurrent_transforms(nt, inputs), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    # Run in eval mode: the same rows give the same outputs, whatever the batch.
    np.testing.assert_allclose(nt.transform(inputs[0][:5]), expected[0][:5], rtol=1e-5,
                               atol=1e-6)
    _assert_same_state(before, module)
    assert nt.module_ is module


def test_fit_and_transform_from_threads_on_shared_module(iris):
    """Clones sharing one pretrained module fit and transform side by side."""
    X, _ = iris
    module = BatchNormNet().train()
    before = _module_state(module)
    expected = NeuralTransformer(module, output="embedding", cache=False).fit_transform(X)
    barrier = threading.Barrier(N_THREADS)
    results, errors = [None] * N_THREADS, []

    def work(i):
        try:
            barrier.wait()
            nt = NeuralTransformer(module, output="embedding", cache=False)
            results[i] = nt.fit_transform(X)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got in results:
        np.testing.assert_array_equal(got, expected)
    _assert_same_state(before, module)


def test_seeded_search_on_dask_threads_equals_sequential(iris):
    """Seeded nets trained as tasks of a threaded dask cluster (workers are
    threads of this process): the same search results as one at a time."""
    distributed = pytest.importorskip(
        "dask.distributed", reason="dask.distributed is not installed (extra 'dask')"
    )
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline

    X, y = iris
    net = make_classifier_net(n_classes=3, hidden=8, max_epochs=4, batch_size=16)
    pipe = make_pipeline(
        NeuralTransformer(net, output="embedding", random_state=0, cache=False),
        LogisticRegression(max_iter=200),
    )
    grid = {"neuraltransformer__net__lr": [0.05, 0.1], "logisticregression__C": [0.1, 1.0]}
    cv = KFold(3, shuffle=True, random_state=0)
    sequential = GridSearchCV(pipe, grid, cv=cv).fit(X, y)
    with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=3,
            processes=False,
            protocol="tcp://",
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster),
        joblib.parallel_backend("dask"),
    ):
        threaded = GridSearchCV(pipe, grid, cv=cv, n_jobs=3).fit(X, y)
    np.testing.assert_array_equal(
        threaded.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"]
    )
    assert threaded.best_params_ == sequential.best_params_
