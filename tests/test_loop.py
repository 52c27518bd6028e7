"""The lean training loop: the same training as skorch's own loop, minus the no-op calls."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, EarlyStopping, EpochScoring, GradientNormClipping
from torch import nn

from skchain import NeuralTransformer
from skchain._batches import TensorBatches
from skchain._loop import lean_loop


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X).astype(np.float32), y.astype(np.int64)


class Net(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(4, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.3)
        )
        self.out = nn.Linear(hidden, 3)

    def forward(self, X):
        return self.out(self.body(X))


class Log(Callback):
    """Records every hook call with the mode of the module at that moment."""

    def initialize(self):
        self.calls_ = []
        return self

    def on_epoch_begin(self, net, **kwargs):
        self.calls_.append(("epoch_begin", len(net.history)))

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        self.calls_.append(("batch_begin", training, len(batch[0])))

    def on_grad_computed(self, net, named_parameters, **kwargs):
        norm = sum(float(p.grad.norm()) for _, p in named_parameters)
        self.calls_.append(("grad", round(norm, 4)))

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        self.calls_.append(("batch_end", training, net.module_.training,
                            round(kwargs["loss"].item(), 5)))

    def on_epoch_end(self, net, **kwargs):
        self.calls_.append(("epoch_end", len(net.history)))


def make_net(extra=(), **params):
    defaults = dict(
        module=Net, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=0.01,
        max_epochs=4, batch_size=32, iterator_train=TensorBatches,
        iterator_train__shuffle=True, iterator_valid=TensorBatches, verbose=0,
        callbacks=[("log", Log()), ("clip", GradientNormClipping(1.0)),
                   ("acc", EpochScoring("accuracy", lower_is_better=False)), *extra],
    )
    defaults.update(params)
    return NeuralNetClassifier(**defaults)


def fit_both(X, y, **params):
    """The same net trained by skorch's loop and by the lean loop, same seed."""
    plain, lean = make_net(**params), make_net(**params)
    torch.manual_seed(0)
    plain.fit(X, y)
    torch.manual_seed(0)
    with lean_loop(lean):
        lean.fit(X, y)
    return plain, lean


def history_without_times(net):
    return [{key: value for key, value in epoch.items() if key != "dur"} for epoch in net.history]


def assert_same_training(plain, lean):
    for (name, a), (_, b) in zip(plain.module_.state_dict().items(),
                                 lean.module_.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert history_without_times(plain) == history_without_times(lean)
    assert dict(plain.callbacks_)["log"].calls_ == dict(lean.callbacks_)["log"].calls_


def test_same_weights_history_and_callback_calls(iris):
    X, y = iris
    plain, lean = fit_both(X, y)
    assert_same_training(plain, lean)
    log = dict(lean.callbacks_)["log"].calls_
    # Training batches ran in training mode, validation batches in eval mode.
    assert {c[1:3] for c in log if c[0] == "batch_end"} == {(True, True), (False, False)}
    assert sum(c[0] == "grad" for c in log) == sum(c[:2] == ("batch_begin", True) for c in log)


def test_early_stopping_and_lbfgs_like_skorch(iris):
    X, y = iris
    plain, lean = fit_both(X, y, max_epochs=40, lr=0.05,
                           extra=[("early", EarlyStopping(patience=2, threshold=0.5))])
    assert len(plain.history) < 40
    assert_same_training(plain, lean)
    # LBFGS calls the step closure several times per batch; skorch keeps the
    # first step's loss.
    plain, lean = fit_both(X, y, optimizer=torch.optim.LBFGS, lr=0.1, max_epochs=2)
    assert_same_training(plain, lean)


def test_prints_the_same_log(iris, capsys):
    X, y = iris
    capsys.readouterr()
    plain, lean = fit_both(X, y, verbose=1)
    out = capsys.readouterr().out
    first, second = out[: len(out) // 2], out[len(out) // 2 :]
    strip = [line.rsplit("  ", 1)[0] for line in first.splitlines()]
    assert "valid_loss" in first and len(first.splitlines()) == 4 + 2
    assert strip == [line.rsplit("  ", 1)[0] for line in second.splitlines()]


def test_module_kept_in_eval_by_its_train_is_switched_every_batch(iris):
    """A module whose train() keeps batch norm frozen, and a callback that puts
    the module in eval mode before a batch: as in skorch, every training
    batch starts from module.train()."""

    class FrozenNorm(Net):
        def train(self, mode=True):
            super().train(mode)
            self.body[1].eval()
            return self

    class EvalBeforeBatch(Callback):
        def on_batch_begin(self, net, training=False, **kwargs):
            net.module_.eval()

    X, y = iris
    for params in ({"module": FrozenNorm}, {"extra": [("eval", EvalBeforeBatch())]}):
        plain, lean = fit_both(X, y, **params)
        assert_same_training(plain, lean)
        log = dict(lean.callbacks_)["log"].calls_
        assert {c[2] for c in log if c[0] == "batch_end" and c[1]} == {True}


def test_overridden_methods_are_left_alone(iris):
    X, y = iris
    seen = []

    class Own(NeuralNetClassifier):
        def train_step(self, batch, **fit_params):
            seen.append("train_step")
            return super().train_step(batch, **fit_params)

        def notify(self, method_name, **kwargs):
            seen.append(method_name)
            super().notify(method_name, **kwargs)

    net = Own(Net, max_epochs=1, batch_size=50, train_split=None, verbose=0)
    with lean_loop(net):
        assert "train_step" not in vars(net) and "run_single_epoch" not in vars(net)
        assert "_set_training" in vars(net)
        net.fit(X, y)
    assert seen.count("train_step") == 3 and seen.count("on_batch_begin") == 3


def test_leaves_nothing_on_the_net(iris):
    X, y = iris
    net = make_net(max_epochs=1)
    with lean_loop(net):
        assert {"notify", "run_single_epoch", "train_step", "_set_training"} <= set(vars(net))
        net.fit(X, y)
    for name in ("notify", "run_single_epoch", "train_step", "_set_training", "_skchain_epoch"):
        assert name not in vars(net)
    pickle.loads(pickle.dumps(net)).predict(X)


def test_neural_transformer_trains_through_it(iris):
    """NeuralTransformer's training is the lean loop's: same weights as
    skorch's loop given the same seed and batches."""
    X, y = iris
    calls = []

    class Count(Callback):
        def on_batch_end(self, net, **kwargs):
            calls.append(type(net).run_single_epoch is not net.run_single_epoch.__func__)

    net = make_net(callbacks=[("count", Count())], train_split=None, max_epochs=2)
    NeuralTransformer(net, random_state=0, cv=None).fit(X, y)
    assert calls and all(calls)


def test_net_pickled_during_training_loads(iris, tmp_path):
    """skorch's Checkpoint(f_pickle=...) pickles the net mid-training, with
    the lean loop's methods on it: the pickle loads, and the loaded net runs
    skorch's own methods."""
    from skorch.callbacks import Checkpoint

    X, y = iris
    net = make_net(max_epochs=2, extra=[("ckpt", Checkpoint(
        monitor=None, f_params=None, f_optimizer=None, f_criterion=None, f_history=None,
        f_pickle="net.pkl", dirname=str(tmp_path), load_best=False))])
    with lean_loop(net):
        net.fit(X, y)
    with open(tmp_path / "net.pkl", "rb") as handle:
        loaded = pickle.load(handle)
    assert loaded.notify.__func__ is NeuralNetClassifier.notify
    loaded.partial_fit(X, y)  # two more epochs, through skorch's own loop
    assert len(loaded.history) == 4
