"""Training a net inside NeuralTransformer: seeds under threads, Ctrl+C, failed fits."""

import threading

import numpy as np
import pytest
import torch
from joblib import parallel_backend
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback
from torch import nn

from skchain import NeuralTransformer
from skchain._testing import MLP, make_classifier_net


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X).astype(np.float32), y


class InterruptAt(Callback):
    """Raises KeyboardInterrupt (as Ctrl+C would) at the start of epoch ``epoch``."""

    def __init__(self, epoch=2):
        self.epoch = epoch

    def initialize(self):
        self.ended_ = False
        return self

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt

    def on_train_end(self, net, **kwargs):
        self.ended_ = True


class FailingMLP(MLP):
    """An MLP whose forward raises on its ``fail_at``-th training call."""

    def __init__(self, fail_at=3, **kwargs):
        super().__init__(**kwargs)
        self.fail_at = fail_at
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError("boom in forward")
        return super().forward(x)


def _dropout_net(**kwargs):
    # Dropout draws from torch's global generator during training: the case a
    # per-fit generator for the shuffle alone would not cover.
    return make_classifier_net(n_classes=3, max_epochs=4, module__dropout=0.3,
                               batch_size=16, **kwargs)


# -- interrupts and failures ------------------------------------------------------------


@pytest.mark.parametrize("method", ["fit", "fit_transform"])
@pytest.mark.parametrize("cv", [None, 3])
def test_keyboard_interrupt_propagates(iris, method, cv):
    X, y = iris
    callback = InterruptAt(epoch=2)
    net = make_classifier_net(n_classes=3, max_epochs=10, callbacks=[callback])
    nt = NeuralTransformer(net, cv=cv, random_state=0)
    with pytest.raises(KeyboardInterrupt):
        getattr(nt, method)(X, y)
    # Nothing half-trained looks fitted.
    assert not hasattr(nt, "module_") and not hasattr(nt, "n_features_in_")
    assert not hasattr(nt, "classes_")


def test_interrupt_still_ends_training_for_callbacks(iris):
    X, y = iris
    net = make_classifier_net(n_classes=3, max_epochs=10, callbacks=[("stop", InterruptAt())])
    nt = NeuralTransformer(net, cv=None, random_state=0)
    seen = []

    class Record(Callback):
        def on_train_end(self, net, **kwargs):
            seen.append(len(net.history))

    nt.set_params(net__callbacks=[("stop", InterruptAt()), ("record", Record())])
    with pytest.raises(KeyboardInterrupt):
        nt.fit(X, y)
    assert seen == [2]  # on_train_end ran after the two finished epochs


@pytest.mark.parametrize("method", ["fit", "fit_transform"])
def test_interrupted_refit_keeps_the_previous_fit(iris, method):
    X, y = iris
    nt = NeuralTransformer(make_classifier_net(n_classes=3, max_epochs=3), cv=3,
                           random_state=0).fit(X, y)
    module, net, classes = nt.module_, nt.net_, nt.classes_
    before = nt.transform(X)
    # A refit on other columns and labels that is interrupted half way.
    X2 = np.hstack([X, X[:, :1]])
    labels = np.array(["a", "b", "c"])[y]
    nt.set_params(net__callbacks=[InterruptAt(epoch=1)])
    with pytest.raises(KeyboardInterrupt):
        getattr(nt, method)(X2, labels)
    assert nt.module_ is module and nt.net_ is net
    np.testing.assert_array_equal(nt.classes_, classes)
    assert nt.n_features_in_ == 4
    np.testing.assert_array_equal(nt.transform(X), before)


def test_failing_refit_keeps_the_previous_fit(iris):
    X, y = iris
    net = make_classifier_net(n_classes=3, max_epochs=3)
    nt = NeuralTransformer(net, cv=None, random_state=0).fit(X, y)
    module, before = nt.module_, nt.transform(X)
    nt.set_params(net__module=FailingMLP, net__module__fail_at=3)
    with pytest.raises(RuntimeError, match="boom in forward"):
        nt.fit(X[:, :3], np.array(["a", "b", "c"])[y])
    assert nt.module_ is module and nt.n_features_in_ == 4
    np.testing.assert_array_equal(nt.classes_, [0, 1, 2])
    np.testing.assert_array_equal(nt.transform(X), before)


def test_failing_first_fit_leaves_nothing_fitted(iris):
    X, y = iris
    net = make_classifier_net(n_classes=3, module=FailingMLP, module__fail_at=2)
    nt = NeuralTransformer(net, cv=3, random_state=0)
    with pytest.raises(RuntimeError, match="boom"):
        nt.fit_transform(X, y)
    assert not hasattr(nt, "module_") and not hasattr(nt, "n_features_in_")


# -- seeds under threads ----------------------------------------------------------------


def _fit_outputs(seed, X, y):
    nt = NeuralTransformer(_dropout_net(), output="proba", cv=None, random_state=seed)
    return nt.fit(X, y).transform(X)


def _race(seeds, X, y):
    """Seeded fits in threads, released at once beside an unseeded one."""
    results, errors = {}, []
    barrier = threading.Barrier(len(seeds) + 1)

    def work(seed):
        try:
            barrier.wait()
            results[seed] = _fit_outputs(seed, X, y)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # The unseeded fit's draws must not leak into the seeded fits either.
    def unseeded():
        barrier.wait()
        NeuralTransformer(_dropout_net(), cv=None).fit(X, y)

    threads = [threading.Thread(target=work, args=(s,)) for s in seeds]
    threads.append(threading.Thread(target=unseeded))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_seeded_fits_in_threads_equal_sequential_fits(iris):
    X, y = iris
    seeds = [1, 2]
    expected = {s: _fit_outputs(s, X, y) for s in seeds}
    assert not np.allclose(expected[1], expected[2])  # the seeds matter
    for _ in range(4):
        results = _race(seeds, X, y)
        for s in seeds:
            np.testing.assert_array_equal(results[s], expected[s])


def test_threading_backend_cross_fit_equals_sequential(iris):
    X, y = iris
    nt = NeuralTransformer(_dropout_net(), cv=3, random_state=0)
    sequential = nt.fit_transform(X, y)
    with parallel_backend("threading", n_jobs=2):
        threaded = NeuralTransformer(_dropout_net(), cv=3, n_jobs=2,
                                     random_state=0).fit_transform(X, y)
    np.testing.assert_array_equal(threaded, sequential)


def test_seeded_fit_leaves_the_global_generator_alone(iris):
    X, y = iris
    torch.manual_seed(123)
    state = torch.get_rng_state()
    NeuralTransformer(_dropout_net(), cv=None, random_state=0).fit(X, y)
    assert torch.equal(state, torch.get_rng_state())


def test_pretrained_lazy_module_is_seeded_and_never_materialised(iris):
    X, _ = iris
    module = nn.Sequential(nn.LazyLinear(5), nn.ReLU(), nn.LazyLinear(2))
    a = NeuralTransformer(module).fit(X)
    b = NeuralTransformer(module).fit(X)
    assert a.module_ is not module and b.module_ is not a.module_
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    c = NeuralTransformer(module, random_state=1).fit(X)
    assert not np.allclose(a.transform(X), c.transform(X))
    assert all(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters())
