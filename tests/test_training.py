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


# -- routing: sample_weight into the loss, groups into the splitter ---------------------


def test_unit_weights_equal_unweighted_training(iris):
    X, y = iris
    plain = NeuralTransformer(_dropout_net(), cv=None, random_state=0).fit(X, y)
    ones = NeuralTransformer(_dropout_net(), cv=None, random_state=0).fit(
        X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_allclose(ones.transform(X), plain.transform(X), rtol=1e-4, atol=1e-6)
    # The fitted net keeps its class's own methods: nothing of the weighting stays.
    assert "infer" not in vars(ones.net_) and "get_loss" not in vars(ones.net_)
    oof_plain = NeuralTransformer(_dropout_net(), cv=3, random_state=0).fit_transform(X, y)
    oof_ones = NeuralTransformer(_dropout_net(), cv=3, random_state=0).fit_transform(
        X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_allclose(oof_ones, oof_plain, rtol=1e-4, atol=1e-6)


def _contradicting(iris):
    """Every row twice, once with its label and once with another; the weights
    say which copy counts."""
    X, y = iris
    X2, y2 = np.vstack([X, X]), np.r_[y, (y + 1) % 3]
    w = np.r_[np.ones(len(y)), np.zeros(len(y))]
    return X, y, X2, y2, w


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_weights_decide_what_the_net_learns(iris, kind):
    X, y, X2, y2, w = _contradicting(iris)
    if kind == "classifier":
        net = make_classifier_net(n_classes=3, max_epochs=40, batch_size=32)
        output = "predict"
    else:
        from skchain._testing import make_regressor_net

        net = make_regressor_net(max_epochs=60, lr=0.02, batch_size=32)
        y2 = y2.astype(np.float32)
        output = "predict"
    weighted = NeuralTransformer(net, output=output, cv=None, random_state=0)
    weighted.fit(X2, y2, sample_weight=w)
    flipped = NeuralTransformer(net, output=output, cv=None, random_state=0)
    flipped.fit(X2, y2, sample_weight=1 - w)
    if kind == "classifier":
        assert (weighted.transform(X).argmax(1) == y).mean() > 0.9
        assert (flipped.transform(X).argmax(1) == (y + 1) % 3).mean() > 0.9
    else:
        err_w = np.abs(weighted.transform(X)[:, 0] - y).mean()
        err_f = np.abs(flipped.transform(X)[:, 0] - y).mean()
        assert err_w < 0.5 * err_f


def test_sample_weight_routed_through_a_pipeline(iris):
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X, y, X2, y2, w = _contradicting(iris)
    direct = NeuralTransformer(_dropout_net(), cv=None, random_state=0).fit(
        X2, y2, sample_weight=w).transform(X)
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(
            NeuralTransformer(_dropout_net(), cv=None, random_state=0)
            .set_fit_request(sample_weight=True),
            LogisticRegression().set_fit_request(sample_weight=True),
        ).fit(X2, y2, sample_weight=w)
    np.testing.assert_allclose(pipe[0].transform(X), direct, rtol=1e-5, atol=1e-6)
    # Without routing, the step's own spelling reaches the loss too (skorch
    # alone would hand it to forward and fail).
    unrouted = make_pipeline(
        NeuralTransformer(_dropout_net(), cv=None, random_state=0), LogisticRegression()
    ).fit(X2, y2, neuraltransformer__sample_weight=w)
    np.testing.assert_allclose(unrouted[0].transform(X), direct, rtol=1e-5, atol=1e-6)


class UnreducedCE(nn.Module):
    """A criterion without a ``reduction`` argument."""

    def forward(self, y_pred, y_true):
        return nn.functional.cross_entropy(y_pred, y_true)


def test_sample_weight_with_a_criterion_that_cannot_weigh(iris):
    X, y = iris
    net = make_classifier_net(n_classes=3, criterion=UnreducedCE)
    NeuralTransformer(net, cv=None).fit(X, y)  # fine without weights
    with pytest.raises(ValueError, match="sample_weight needs a criterion.*reduction"):
        NeuralTransformer(net, cv=None).fit(X, y, sample_weight=np.ones(len(y)))


def test_bad_sample_weight_is_a_clear_error(iris):
    X, y = iris
    nt = NeuralTransformer(_dropout_net(), cv=None)
    with pytest.raises(ValueError, match="sample_weight.shape|shape"):
        nt.fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="[Nn]egative"):
        nt.fit(X, y, sample_weight=-np.ones(len(y)))


def test_groups_reach_the_cross_fitting_splitter(iris):
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline

    X, y = iris
    groups = np.arange(len(y)) % 10
    splits = list(GroupKFold(3).split(X, y, groups))
    for _, test in splits:  # whole groups held out
        assert set(groups[test]).isdisjoint(groups[np.setdiff1d(np.arange(len(y)), test)])
    expected = NeuralTransformer(_dropout_net(), cv=splits, random_state=0).fit_transform(X, y)
    nt = NeuralTransformer(_dropout_net(), cv=GroupKFold(3), random_state=0)
    np.testing.assert_array_equal(nt.fit_transform(X, y, groups=groups), expected)
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(
            NeuralTransformer(_dropout_net(), cv=GroupKFold(3), random_state=0)
            .set_fit_request(groups=True),
            LogisticRegression(),
        )
        seen = pipe[:-1].fit_transform(X, y, groups=groups)
    np.testing.assert_array_equal(seen, expected)
    with pytest.raises(ValueError, match="groups"):
        NeuralTransformer(_dropout_net(), cv=GroupKFold(3)).fit_transform(X, y)


def test_groups_reach_the_cross_fitting_splitter_from_searches(iris):
    """Routed from GridSearchCV and ChainSearchCV, groups split the outer folds
    and, inside each, the net's cross fitting: the two searches agree."""
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline

    from skchain import ChainSearchCV

    X, y = iris
    groups = np.arange(len(y)) % 12
    seen = []

    class RecordingGroupKFold(GroupKFold):
        def split(self, X, y=None, groups=None):
            seen.append(None if groups is None else np.unique(groups).size)
            return super().split(X, y, groups)

    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(
            NeuralTransformer(_dropout_net(), cv=RecordingGroupKFold(3), random_state=0)
            .set_fit_request(groups=True),
            LogisticRegression(),
        )
        grid = {"logisticregression__C": [0.1, 1.0]}
        ref = GridSearchCV(pipe, grid, cv=GroupKFold(3)).fit(X, y, groups=groups)
        ours = ChainSearchCV(pipe, grid, cv=GroupKFold(3)).fit(X, y, groups=groups)
    # Every cross fitting got the groups of its training rows: 8 of the 12 in
    # the outer folds, all 12 in the two refits.
    assert None not in seen
    assert seen.count(12) == 2
    assert set(seen) == {8, 12} and len(seen) > 2
    np.testing.assert_array_equal(
        ref.cv_results_["mean_test_score"], ours.cv_results_["mean_test_score"]
    )


# -- diverged trainings -------------------------------------------------------------------

from _diverging import DivergingMLP  # noqa: E402
from skorch import NeuralNetRegressor  # noqa: E402

from skchain._testing import make_regressor_net  # noqa: E402
from skchain._training import DivergedError  # noqa: E402

# The fixes the message names.
FIX = "(?s)Lower the learning rate.*GradientNormClipping"


@pytest.mark.parametrize(
    "how", ["fit", "fit_transform default cv", "fit_transform cv=None", "proba cv=None"]
)
def test_lr_1e20_is_an_error_at_fit_naming_epoch_loss_and_fix(iris, how):
    X, y = iris
    net = make_classifier_net(n_classes=3, max_epochs=4, lr=1e20)
    nt = NeuralTransformer(net, random_state=0,
                           **({"cv": None} if "None" in how else {}),
                           **({"output": "proba"} if "proba" in how else {}))
    method = "fit" if how == "fit" else "fit_transform"
    with pytest.raises(ValueError, match=r"diverged at epoch \d: the (training loss is nan|"
                                         r"weights .* hold NaN)") as excinfo:
        getattr(nt, method)(X, y)
    assert "now lr=1e+20" in str(excinfo.value)
    assert excinfo.match(FIX)
    # A failed fit leaves nothing fitted.
    assert not hasattr(nt, "module_") and not hasattr(nt, "n_features_in_")


@pytest.mark.parametrize("nan_from, epoch", [(1, 1), (5, 2), (6, 2), (7, 3)])
def test_the_first_diverged_epoch_is_named_and_training_stops_there(iris, nan_from, epoch):
    X, y = iris
    # 150 rows in batches of 64: 3 batches per epoch.
    net = make_classifier_net(n_classes=3, max_epochs=6, module=DivergingMLP,
                              module__nan_from=nan_from)
    nt = NeuralTransformer(net, cv=None, random_state=0)
    batch = (nan_from - 1) % 3 + 1
    with pytest.raises(DivergedError, match=rf"diverged at epoch {epoch}: the training loss "
                                            rf"is nan \(first at batch {batch} of the epoch\)"
                       ) as excinfo:
        nt.fit(X, y)
    assert excinfo.value.epoch == epoch


def test_non_finite_weights_with_a_finite_loss_are_caught(iris):
    X, y = iris

    class PoisonWeights(Callback):
        def on_epoch_end(self, net, **kwargs):
            if len(net.history) == 2:
                with torch.no_grad():
                    net.module_.head.bias[0] = float("inf")

    net = make_classifier_net(n_classes=3, max_epochs=4, callbacks=[PoisonWeights()])
    with pytest.raises(DivergedError, match=r"epoch 2: the weights 'head\.bias' hold"):
        NeuralTransformer(net, cv=None, random_state=0).fit(X, y)


def test_divergence_is_caught_without_the_default_callbacks(iris):
    # callbacks="disable": no epoch-level train_loss, the batches' losses tell.
    X, y = iris
    net = make_classifier_net(n_classes=3, max_epochs=4, module=DivergingMLP,
                              module__nan_from=4, callbacks="disable")
    with pytest.raises(DivergedError, match=r"epoch 2: the training loss is nan \(first at "
                                            r"batch 1"):
        NeuralTransformer(net, cv=None, random_state=0).fit(X, y)


def test_diverged_regressor_is_an_error(iris):
    X, y = iris
    net = make_regressor_net(lr=1e20, max_epochs=5, optimizer=torch.optim.SGD)
    with pytest.raises(DivergedError, match="NeuralNetRegressor diverged at epoch"):
        NeuralTransformer(net, random_state=0).fit(X, y.astype(np.float32))
    assert isinstance(net, NeuralNetRegressor)


def test_a_finite_training_keeps_only_its_own_callbacks(iris):
    X, y = iris
    nt = NeuralTransformer(make_classifier_net(n_classes=3), cv=None, random_state=0).fit(X, y)
    names = [name for name, _ in nt.net_.callbacks_]
    assert names and not any(name.startswith("skchain") for name in names)
    assert np.isfinite(nt.transform(X)).all()
