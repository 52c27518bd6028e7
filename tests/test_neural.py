import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_digits, load_iris
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from skorch import NeuralNet, NeuralNetBinaryClassifier, NeuralNetClassifier
from torch import nn

from skchain import NeuralTransformer
from skchain._testing import MLP, RowStats, make_classifier_net, make_regressor_net


class SizedToClasses(NeuralNetClassifier):
    """An MLP classifier whose output size follows the classes of ``y``.

    NeuralTransformer requires exactly one output per class and tells skorch
    the encoded classes (``classes``); the estimator checks draw targets with 2
    to 4 classes, so this net sizes its last layer from them.
    """

    def get_params_for(self, prefix):
        params = super().get_params_for(prefix)
        if prefix == "module" and self.classes is not None:
            params["n_out"] = len(self.classes)
        return params


def sized_classifier_net(**kwargs):
    params = dict(module=MLP, module__hidden=16, criterion=nn.CrossEntropyLoss,
                  optimizer=torch.optim.Adam, max_epochs=2, lr=0.05, batch_size=64,
                  train_split=None, verbose=0)
    params.update(kwargs)
    return SizedToClasses(**params)


def lazy_module():
    """A pretrained module whose layers are all lazy: fit must not materialise it."""
    return nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.LazyLinear(3))


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_weights(before, module):
    after = module.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


_CROSS_FIT_REASON = (
    "With cross fitting (cv='auto' on a trained net with a proba/predict output), "
    "fit_transform returns out-of-fold outputs, which differ from "
    "fit(X, y).transform(X) by design (the TargetEncoder contract); the check "
    "expects them to agree. The same nets with cv=None pass it, and "
    "tests/test_crossfit.py checks the out-of-fold contract itself."
)


def _cross_fits(estimator):
    from skchain._outputs import target_aligned

    trains = not (isinstance(estimator.net, nn.Module) or estimator.frozen)
    return trains and estimator.cv is not None and target_aligned(estimator.output)


_SGD_WEIGHTS_REASON = (
    "A net trained here weighs each row's loss (mean of weight * loss per batch); "
    "with shuffled mini-batches, a row of weight 2 is not the same training as "
    "the row repeated twice (the copies land in other batches), so the fits "
    "differ. tests/test_training.py checks that weights of one equal no weights "
    "and that the weights decide what the net learns."
)


def _expected_failures(estimator):
    failures = {}
    if not (isinstance(estimator.net, nn.Module) or estimator.frozen):
        failures["check_sample_weight_equivalence_on_dense_data"] = _SGD_WEIGHTS_REASON
    if _cross_fits(estimator):
        return {
            **failures,
            "check_transformer_general": _CROSS_FIT_REASON,
            "check_transformer_general(readonly_memmap=True)": _CROSS_FIT_REASON,
            "check_transformer_data_not_an_array": _CROSS_FIT_REASON,
        }
    if failures:
        return failures
    if isinstance(estimator.net, nn.Module) and not _all_lazy(estimator.net):
        return {
            "check_estimators_overwrite_params": (
                "The check compares joblib.hash of a deep copy of the module with "
                "the module after fit, and torch pickles a tensor with its storage "
                "address, so even an untouched deep copy hashes differently. "
                "test_frozen_module_weights_unchanged checks the weights bitwise; "
                "a module of lazy layers only (no storage yet) passes the check."
            )
        }
    return {}


def _all_lazy(module):
    return all(
        isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters()
    )


@parametrize_with_checks(
    [
        NeuralTransformer(sized_classifier_net(), random_state=0),
        NeuralTransformer(sized_classifier_net(), output="embedding", random_state=0),
        NeuralTransformer(make_regressor_net(max_epochs=2), random_state=0),
        NeuralTransformer(sized_classifier_net(), cv=None, random_state=0),
        NeuralTransformer(make_regressor_net(max_epochs=2), cv=None, random_state=0),
        NeuralTransformer(RowStats()),
        NeuralTransformer(RowStats(), output="proba"),
        NeuralTransformer(lazy_module()),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_proba_matches_skorch_predict_proba(iris):
    X, y = iris
    nt = NeuralTransformer(make_classifier_net(n_classes=3), output="proba", random_state=0)
    Z = nt.fit(X, y).transform(X)
    np.testing.assert_allclose(Z, nt.net_.predict_proba(X.astype(np.float32)), atol=1e-6)
    np.testing.assert_allclose(Z.sum(1), 1, atol=1e-5)
    assert list(nt.get_feature_names_out()) == ["proba_0", "proba_1", "proba_2"]


def test_nll_classifier_logits_are_log_proba(iris):
    X, y = iris

    class SoftmaxMLP(MLP):
        def forward(self, x):
            return torch.softmax(super().forward(x), dim=-1)

    net = NeuralNetClassifier(SoftmaxMLP, module__n_out=3, max_epochs=3, lr=0.1,
                              train_split=None, verbose=0)
    proba = NeuralTransformer(net, output="proba", random_state=0).fit_transform(X, y)
    logits = NeuralTransformer(net, output="logits", random_state=0).fit_transform(X, y)
    np.testing.assert_allclose(np.exp(logits), proba, rtol=1e-5, atol=1e-6)


def test_string_labels_encoded_and_predict_one_hot(iris):
    X, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    nt = NeuralTransformer(make_classifier_net(n_classes=3, max_epochs=20), output="predict",
                           random_state=0).fit(X, labels)
    assert list(nt.classes_) == list(labels[np.sort(np.unique(y, return_index=True)[1])])
    Z = nt.transform(X)
    assert set(np.unique(Z)) <= {0.0, 1.0}
    np.testing.assert_array_equal(Z.sum(1), 1)
    predicted = nt.classes_[Z.argmax(1)]
    assert (predicted == labels).mean() > 0.8
    assert list(nt.get_feature_names_out()) == [f"predict_{c}" for c in nt.classes_]


def test_non_contiguous_int_labels(iris):
    X, y = iris
    y2 = np.array([3, 10, 42])[y]
    nt = NeuralTransformer(make_classifier_net(n_classes=3), random_state=0).fit(X, y2)
    np.testing.assert_array_equal(nt.classes_, [3, 10, 42])


def test_binary_classifier_net():
    X, y = load_digits(n_class=2, return_X_y=True)
    net = NeuralNetBinaryClassifier(MLP, module__n_out=1, max_epochs=10, lr=0.01,
                                    optimizer=torch.optim.Adam,
                                    train_split=None, verbose=0)
    nt = NeuralTransformer(net, output="proba", random_state=0).fit(X / 16, y * 2 + 1)
    Z = nt.transform(X / 16)
    assert Z.shape == (len(X), 2)
    np.testing.assert_array_equal(nt.classes_, [1, 3])
    assert (Z.argmax(1) == y).mean() > 0.9


def test_regressor_1d_target_trains_more_than_a_constant():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = (y - y.mean()) / y.std()
    net = make_regressor_net(max_epochs=40, lr=0.01, hidden=32)
    nt = NeuralTransformer(net, output="predict", random_state=0).fit(X, y)
    pred = nt.transform(X).ravel()
    # A net broadcasting a 1-D target against an (n, 1) output learns a constant.
    assert pred.std() > 0.3
    assert np.corrcoef(pred, y)[0, 1] > 0.6
    assert list(nt.get_feature_names_out()) == ["predict_0"]


def test_regressor_predictions_as_features_in_pipeline():
    X, y = load_diabetes(return_X_y=True)
    pipe = make_pipeline(
        StandardScaler(),
        NeuralTransformer(make_regressor_net(max_epochs=10), random_state=0),
        Ridge(),
    )
    assert cross_val_score(pipe, X, y / 100, cv=3).mean() > 0.2


def test_named_layer_equals_activation_by_hand(iris):
    X, y = iris
    nt = NeuralTransformer(make_classifier_net(n_classes=3), output="encoder.1",
                           random_state=0).fit(X, y)
    module = nt.module_
    with torch.no_grad():
        x = torch.as_tensor(X, dtype=torch.float32)
        expected = torch.relu(module.encoder[0](x)).numpy()
    np.testing.assert_allclose(nt.transform(X), expected, rtol=1e-6, atol=1e-6)
    assert nt.get_feature_names_out()[0] == "encoder.1_0"


def test_embedding_is_input_of_last_linear(iris):
    X, y = iris
    nt = NeuralTransformer(make_classifier_net(n_classes=3), output="embedding",
                           random_state=0).fit(X, y)
    with torch.no_grad():
        expected = nt.module_.encoder(torch.as_tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(nt.transform(X), expected, rtol=1e-6, atol=1e-6)


def test_list_of_layers_concatenated(iris):
    X, y = iris
    nt = NeuralTransformer(make_classifier_net(n_classes=3, hidden=8),
                           output=["encoder.1", "head"], random_state=0).fit(X, y)
    Z = nt.transform(X)
    assert Z.shape == (len(X), 8 + 3)
    names = list(nt.get_feature_names_out())
    assert names[0] == "encoder.1_0" and names[-1] == "head_2"


def test_layer_named_like_a_keyword_through_a_list():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Linear(4, 2)
            self.out = nn.Linear(2, 1)

        def forward(self, x):
            return self.out(self.embedding(x))

    net = Net()
    X = np.random.RandomState(0).rand(5, 4)
    Z = NeuralTransformer(net, output=["embedding"]).fit_transform(X)
    with torch.no_grad():
        expected = net.embedding(torch.as_tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(Z, expected, rtol=1e-6)


def test_hooks_removed_and_training_flag_restored(iris):
    X, _ = iris
    module = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    module.train()
    nt = NeuralTransformer(module, output="0").fit(X)
    Z1, Z2 = nt.transform(X), nt.transform(X)
    np.testing.assert_array_equal(Z1, Z2)
    assert module.training and all(m.training for m in module.modules())
    assert not module[0]._forward_hooks and not module[2]._forward_pre_hooks


def test_frozen_module_weights_unchanged_in_search():
    X, y = load_digits(return_X_y=True)
    backbone = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
    before = _weights(backbone)
    pipe = Pipeline([
        ("nn", NeuralTransformer(backbone)),
        ("pca", PCA()),
        ("clf", LogisticRegression(max_iter=300)),
    ])
    search = GridSearchCV(pipe, {"pca__n_components": [4, 8], "clf__C": [0.1, 1.0]},
                          cv=3).fit(X, y)
    cross_val_score(pipe, X, y, cv=3)
    clone(pipe).fit(X, y)
    pipe.fit(X, y)
    _assert_same_weights(before, backbone)
    assert search.score(X, y) > 0.5


def test_frozen_skorch_net_is_not_trained(iris):
    X, y = iris
    net = make_classifier_net(n_classes=3).fit(X.astype(np.float32), y)
    before = _weights(net.module_)
    nt = NeuralTransformer(net, frozen=True)
    Z = nt.fit(X[:10], y[:10]).transform(X)
    cross_val_score(make_pipeline(nt, LogisticRegression()), X, y, cv=3)
    GridSearchCV(make_pipeline(nt, LogisticRegression()),
                 {"logisticregression__C": [0.1, 1]}, cv=3).fit(X, y)
    _assert_same_weights(before, net.module_)
    np.testing.assert_allclose(Z, net.predict_proba(X.astype(np.float32)), atol=1e-6)
    np.testing.assert_array_equal(nt.classes_, [0, 1, 2])


def test_frozen_requires_initialized_net(iris):
    X, y = iris
    with pytest.raises(ValueError, match="not initialized"):
        NeuralTransformer(make_classifier_net(), frozen=True).fit(X, y)


def test_clone_is_independent(iris):
    X, y = iris
    nt = NeuralTransformer(make_classifier_net(n_classes=3), random_state=0).fit(X, y)
    before = _weights(nt.module_)
    c = clone(nt)
    assert not hasattr(c, "module_")
    c.fit(X[::-1], y[::-1])
    assert c.module_ is not nt.module_
    _assert_same_weights(before, nt.module_)
    # The user's own net is never fitted either.
    assert not nt.net.initialized_ if hasattr(nt.net, "initialized_") else True


def test_random_state_gives_identical_fits(iris):
    X, y = iris
    a = NeuralTransformer(make_classifier_net(n_classes=3), random_state=3).fit_transform(X, y)
    state = torch.get_rng_state()
    b = NeuralTransformer(make_classifier_net(n_classes=3), random_state=3).fit_transform(X, y)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(a, b)
    c = NeuralTransformer(make_classifier_net(n_classes=3), random_state=4).fit_transform(X, y)
    assert not np.array_equal(a, c)


def test_shuffles_training_batches_unless_told(iris):
    X, y = iris
    nt = NeuralTransformer(make_classifier_net(n_classes=3), random_state=0).fit(X, y)
    assert nt.net_.iterator_train__shuffle is True
    net = make_classifier_net(n_classes=3, iterator_train__shuffle=False)
    nt = NeuralTransformer(net, random_state=0).fit(X, y)
    assert nt.net_.iterator_train__shuffle is False


def test_pickle_round_trip(iris):
    X, y = iris
    nt = NeuralTransformer(make_classifier_net(n_classes=3), output="embedding",
                           random_state=0).fit(X, y)
    restored = pickle.loads(pickle.dumps(nt))
    np.testing.assert_array_equal(restored.transform(X), nt.transform(X))


def test_pandas_output_and_feature_names(iris):
    X, y = iris
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    nt = NeuralTransformer(make_classifier_net(n_classes=3), random_state=0)
    nt.set_output(transform="pandas")
    out = nt.fit(df, y).transform(df)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["proba_0", "proba_1", "proba_2"]
    np.testing.assert_array_equal(nt.feature_names_in_, ["a", "b", "c", "d"])


def test_batch_size_does_not_change_output(iris):
    X, y = iris
    nt = NeuralTransformer(make_classifier_net(n_classes=3), output="embedding",
                           random_state=0, batch_size=7).fit(X, y)
    small = nt.transform(X)
    nt.set_params(batch_size=1000)
    np.testing.assert_allclose(small, nt.transform(X), rtol=1e-6, atol=1e-7)


def test_unsupervised_net_fit_without_y():
    class AutoEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.LazyLinear(3), nn.Tanh())
            self.decoder = nn.LazyLinear(8)

        def forward(self, x):
            return self.decoder(self.encoder(x))

    class AutoEncoderNet(NeuralNet):
        def get_loss(self, y_pred, y_true, X=None, training=False):
            return super().get_loss(y_pred, X, X=X, training=training)

    X = np.random.RandomState(0).rand(60, 8)
    net = AutoEncoderNet(AutoEncoder, criterion=nn.MSELoss, max_epochs=3,
                         train_split=None, verbose=0)
    nt = NeuralTransformer(net, output="encoder", random_state=0).fit(X)
    assert nt.transform(X).shape == (60, 3)
    assert list(nt.get_feature_names_out()) == ["encoder_0", "encoder_1", "encoder_2"]


def test_headline_chain_searched_on_digits():
    X, y = load_digits(return_X_y=True)
    X, y = X[:600], y[:600]
    pipe = Pipeline([
        ("scale", StandardScaler()),
        ("nn", NeuralTransformer(make_classifier_net(n_classes=10, max_epochs=8),
                                 output="embedding", random_state=0)),
        ("pca", PCA()),
        ("clf", LogisticRegression(max_iter=300)),
    ])
    grid = {
        "nn__net__lr": [0.01, 0.03],
        "nn__net__module__hidden": [16, 32],
        "pca__n_components": [5, 10],
        "clf__C": [1.0],
    }
    search = GridSearchCV(pipe, grid, cv=2).fit(X, y)
    assert search.best_params_["nn__net__module__hidden"] in (16, 32)
    assert search.best_estimator_.named_steps["nn"].module_.encoder[3].out_features == \
        search.best_params_["nn__net__module__hidden"]
    assert search.best_score_ > 0.7
    assert search.predict(X[:5]).shape == (5,)


# -- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "X, match",
    [
        (np.array([[1.0, np.nan, 0, 0]]), "NaN"),
        (np.array([[1.0, np.inf, 0, 0]]), "infinity"),
        (np.array([["a", "b", "c", "d"]], dtype=object), "could not convert|must be a"),
        (np.array([1.0, 2.0, 3.0, 4.0]), "Expected a 2-dimensional|2D array"),
        (np.empty((0, 4)), "0 sample"),
    ],
)
def test_bad_input_errors(X, match):
    nt = NeuralTransformer(RowStats())
    with pytest.raises(ValueError, match=match):
        nt.fit(X)


def test_wrong_number_of_features_at_transform(iris):
    X, y = iris
    nt = NeuralTransformer(make_classifier_net(n_classes=3), random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but NeuralTransformer is "
                                         "expecting 4 features"):
        nt.transform(X[:, :3])


def test_unknown_layer_lists_valid_names(iris):
    X, _ = iris
    module = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"no submodule named \['encoder.2'\].*'0', '1'"):
        NeuralTransformer(module, output="encoder.2").fit(X)


def test_proba_on_regressor_is_an_error():
    X, y = load_diabetes(return_X_y=True)
    with pytest.raises(ValueError, match='output="proba" needs a classifier'):
        NeuralTransformer(make_regressor_net(), output="proba").fit(X, y)


def test_module_that_does_not_fit_input_width(iris):
    X, _ = iris
    with pytest.raises(ValueError, match="failed on input of shape \\(n, 4\\)"):
        NeuralTransformer(nn.Linear(10, 2)).fit(X)


def test_classifier_output_smaller_than_classes(iris):
    X, y = iris
    with pytest.raises(ValueError, match="y has 3 classes"):
        NeuralTransformer(make_classifier_net(n_classes=2)).fit(X, y)


def test_regressor_output_width_mismatch():
    X, y = load_diabetes(return_X_y=True)
    with pytest.raises(ValueError, match="1 target column"):
        NeuralTransformer(make_regressor_net(n_targets=3)).fit(X, y)


def test_net_must_be_net_or_module():
    with pytest.raises((TypeError, ValueError), match="net"):
        NeuralTransformer(LogisticRegression()).fit(np.ones((3, 2)), [0, 1, 0])
    with pytest.raises((TypeError, ValueError), match="net"):
        NeuralTransformer(nn.Linear).fit(np.ones((3, 2)))


def test_classifier_needs_y(iris):
    X, _ = iris
    with pytest.raises(ValueError, match="requires y"):
        NeuralTransformer(make_classifier_net()).fit(X)


def test_continuous_labels_for_classifier(iris):
    X, _ = iris
    with pytest.raises(ValueError, match="Unknown label type"):
        NeuralTransformer(make_classifier_net()).fit(X, np.linspace(0, 1, len(X)))


def test_inplace_module_never_writes_into_the_input():
    X = np.random.RandomState(0).normal(size=(20, 4)).astype(np.float32)
    before = X.copy()
    module = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(4, 2))
    nt = NeuralTransformer(module).fit(X)
    nt.transform(X)
    np.testing.assert_array_equal(X, before)
    X.setflags(write=False)  # read-only input (pandas copy-on-write) works too
    assert nt.transform(X).shape == (20, 2)


def test_inplace_module_never_writes_into_the_input_in_chunked_runs(monkeypatch):
    """Rows are copied a chunk of batches at a time; every batch of every chunk
    runs on the copy, and outputs gathered over several batches land in order."""
    from skchain import _runner

    monkeypatch.setattr(_runner, "_COPY_BYTES", 3 * 16)  # 3 rows of 4 float32
    monkeypatch.setattr(_runner, "_FLUSH_BYTES", 5 * 8)  # 5 rows of 2 float32
    X = np.random.RandomState(0).normal(size=(23, 4)).astype(np.float32)
    before = X.copy()
    torch.manual_seed(0)
    module = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(4, 2))
    expected = module(torch.from_numpy(np.maximum(X, 0))).detach().numpy()
    for batch_size in (1, 2, 7, 100):
        out = NeuralTransformer(module, output="logits", batch_size=batch_size,
                                cache=False).fit(X).transform(X)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(X, before)
    layer = NeuralTransformer(module, output=["1"], batch_size=2, cache=False).fit(X)
    np.testing.assert_allclose(layer.transform(X), expected, rtol=1e-5, atol=1e-6)


class _BatchMean(nn.Module):
    def forward(self, x):
        return x.mean(dim=0, keepdim=True)


def test_module_returning_other_rows_than_it_got_is_an_error():
    X = np.ones((6, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="returned 1 rows for a batch of 6"):
        NeuralTransformer(_BatchMean(), cache=False).fit(X[:1]).transform(X)


# -- trust: every input kind, every bad input, at the public call --------------------


def _input_kinds(X):
    Xf = X.astype(np.float32)
    readonly = Xf.copy()
    readonly.setflags(write=False)
    return {
        "float64": X.astype(np.float64),
        "float16": X.astype(np.float16),
        "int64": np.round(X).astype(np.int64),
        "int8": np.round(X).astype(np.int8),
        "bool": X > 0,
        "fortran": np.asfortranarray(Xf),
        "strided": np.repeat(Xf, 2, axis=1)[:, ::2],
        "readonly": readonly,
        "list": Xf.tolist(),
        "dataframe": pd.DataFrame(Xf, columns=list("abcd")),
        "mixed_dataframe": pd.DataFrame({
            "a": Xf[:, 0].astype(np.float64), "b": np.round(Xf[:, 1]).astype(np.int32),
            "c": Xf[:, 2] > 0, "d": Xf[:, 3].astype(np.float32)}),
    }


@pytest.fixture(scope="module")
def fitted_trained(iris):
    X, y = iris
    return NeuralTransformer(make_classifier_net(n_classes=3, max_epochs=3),
                             output="embedding", random_state=0).fit(X, y)


@pytest.mark.parametrize("kind", list(_input_kinds(np.zeros((2, 4)))))
@pytest.mark.parametrize("pretrained", [True, False])
def test_any_valid_input_gives_the_c_float32_result(iris, fitted_trained, kind, pretrained):
    X, _ = iris
    X = X[:30]
    given = _input_kinds(X)[kind]
    # What the estimator would see: the same values as a C-ordered float32 array.
    as_f32 = np.ascontiguousarray(np.asarray(pd.DataFrame(given).to_numpy(), np.float32))
    nt = NeuralTransformer(RowStats(), cache=False).fit(as_f32) if pretrained \
        else fitted_trained
    expected = nt.transform(as_f32)
    np.testing.assert_array_equal(nt.transform(given), expected)
    if pretrained:
        np.testing.assert_array_equal(
            NeuralTransformer(RowStats(), cache=False).fit_transform(given), expected)


_BAD = {
    "sparse": (lambda X: __import__("scipy.sparse").sparse.csr_matrix(X), TypeError,
               "[Ss]parse"),
    "strings": (lambda X: np.array([["a", "b", "c", "d"]] * 3, dtype=object), ValueError,
                "could not convert|must be a"),
    "nan": (lambda X: np.where(np.eye(len(X), 4, dtype=bool), np.nan, X), ValueError,
            "NaN"),
    "inf": (lambda X: np.where(np.eye(len(X), 4, dtype=bool), np.inf, X), ValueError,
            "infinity"),
    "too_large_for_float32": (lambda X: X * 1e300, ValueError, "infinity|too large"),
    # N-D rows are images or sequences: a module that cannot take them says so.
    "3d": (lambda X: X[:, :, None], ValueError, r"failed on input of shape \(n, 4, 1\)|"
           r"rows of shape \(4, 1\), but NeuralTransformer was fitted on rows of shape \(4,\)|"
           r"module returns shape \(2, 4, 3\) per batch but y has 3 classes"),
    "1d": (lambda X: X[:, 0], ValueError, "2D array|2-dimensional"),
    "0_rows": (lambda X: X[:0], ValueError, "0 sample"),
}


@pytest.mark.parametrize("bad", list(_BAD))
@pytest.mark.parametrize("method", ["fit", "fit_transform", "transform"])
def test_invalid_input_is_a_clear_error(iris, fitted_trained, bad, method):
    X, y = iris
    make, error, match = _BAD[bad]
    Xbad = make(X[:6])
    if method == "transform":
        with pytest.raises(error, match=match):
            fitted_trained.transform(Xbad)
        return
    nt = NeuralTransformer(make_classifier_net(n_classes=3, max_epochs=1), random_state=0, cv=2)
    with pytest.raises(error, match=match):
        getattr(nt, method)(Xbad, [0, 1, 2, 0, 1, 2])
    with pytest.raises(error, match=match):
        getattr(NeuralTransformer(RowStats()), method)(Xbad)


def test_wrong_width_at_transform_for_pretrained(iris):
    X, _ = iris
    nt = NeuralTransformer(RowStats()).fit(X)
    with pytest.raises(ValueError, match="X has 5 features.*expecting 4"):
        nt.transform(np.hstack([X, X[:, :1]]))


def test_classifier_with_more_outputs_than_classes(iris):
    X, y = iris
    with pytest.raises(ValueError, match=r"y has 3 classes.*exactly 3 outputs"):
        NeuralTransformer(make_classifier_net(n_classes=10)).fit(X, y)
    with pytest.raises(ValueError, match="y has 3 classes"):
        NeuralTransformer(make_classifier_net(n_classes=10), cv=3).fit_transform(X, y)


def test_frozen_classifier_with_more_outputs_than_classes(iris):
    X, y = iris
    net = make_classifier_net(n_classes=10, max_epochs=1).fit(X.astype(np.float32), y)
    with pytest.raises(ValueError, match="10 columns, but the net has 3 classes"):
        NeuralTransformer(net, frozen=True).fit(X, y)


def test_single_class_target_is_an_error(iris):
    X, y = iris
    for net in (make_classifier_net(n_classes=2), make_classifier_net(n_classes=1)):
        with pytest.raises(ValueError, match="only one class"):
            NeuralTransformer(net).fit(X[:20], np.zeros(20, dtype=int))
    with pytest.raises(ValueError, match="only one class"):
        NeuralTransformer(make_classifier_net(), cv=2).fit_transform(X[:20], ["a"] * 20)


@pytest.mark.parametrize("device", ["tpu", "gpu0", "cuda:99"])
def test_bad_device_is_a_clear_error_at_fit(iris, device):
    X, y = iris
    for nt in (NeuralTransformer(RowStats(), device=device),
               NeuralTransformer(make_classifier_net(n_classes=3), device=device)):
        with pytest.raises(ValueError, match="device="):
            nt.fit(X, y)
        assert not hasattr(nt, "n_features_in_")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_clear_error(iris):
    X, _ = iris
    with pytest.raises(ValueError, match="no CUDA device"):
        NeuralTransformer(RowStats(), device="cuda").fit(X)


class EmitsNaN(nn.Module):
    def forward(self, x):
        out = x[:, :2].clone()
        out[x[:, 0] > 1] = float("nan")
        return out


def test_nan_from_the_net_warns_naming_the_estimator(iris):
    X, _ = iris
    n_bad = int((X[:, 0] > 1).sum())
    nt = NeuralTransformer(EmitsNaN(), cache=False)
    with pytest.warns(RuntimeWarning, match=f"NeuralTransformer produced NaN or infinity "
                                            f"in {n_bad} of {len(X)} rows"):
        nt.fit_transform(X)
    with pytest.warns(RuntimeWarning, match="NeuralTransformer produced NaN"):
        nt.transform(X)


def test_pickling_a_net_from_main_warns(iris):
    X, _ = iris

    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(x)

    Local.__module__ = "__main__"
    nt = NeuralTransformer(Local()).fit(X)
    with pytest.warns(UserWarning, match=r"Local.*__main__.*importable"):
        nt.__getstate__()
    # Importable classes pickle quietly.
    quiet = NeuralTransformer(RowStats()).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pickle.loads(pickle.dumps(quiet))


# -- sharing: pretrained nets are never copied nor changed --------------------------


class NoCopy(nn.Module):
    """A pretrained module that fails the test when anything copies it."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x))

    def __deepcopy__(self, memo):
        raise AssertionError("the pretrained module was copied")


def test_clone_shares_a_pretrained_module():
    module = NoCopy()
    nt = NeuralTransformer(module, output="embedding", batch_size=7)
    nt.set_output(transform="pandas")
    other = clone(nt)
    assert other.net is module and other is not nt
    assert other.get_params()["batch_size"] == 7
    assert other._sklearn_output_config == nt._sklearn_output_config


def test_search_and_cross_validation_never_copy_the_module():
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16, y[:300]
    module = NoCopy().train()
    flags = [m.training for m in module.modules()]
    before = _weights(module)
    pipe = Pipeline([("nn", NeuralTransformer(module, output="embedding")),
                     ("clf", LogisticRegression(max_iter=200))])
    search = GridSearchCV(pipe, {"clf__C": [0.1, 1.0, 10.0]}, cv=3).fit(X, y)
    assert search.best_estimator_.named_steps["nn"].module_ is module
    cross_val_score(pipe, X, y, cv=3)
    _assert_same_weights(before, module)  # BatchNorm running stats included
    assert [m.training for m in module.modules()] == flags


def test_clone_shares_a_frozen_skorch_net(iris):
    X, y = iris
    net = make_classifier_net(n_classes=3).fit(X.astype(np.float32), y)
    nt = NeuralTransformer(net, frozen=True)
    assert clone(nt).net is net
    assert clone(nt).fit(X, y).module_ is net.module_
    assert not any(k.startswith("net__") for k in nt.get_params())
    with pytest.raises(ValueError, match="Cannot set \\['net__lr'\\].*shared"):
        nt.set_params(net__lr=0.5)
    # A net trained here is still cloned from its parameters, as scikit-learn does.
    trained = NeuralTransformer(make_classifier_net(n_classes=3))
    assert clone(trained).net is not trained.net
    assert "net__lr" in trained.get_params()


def test_fit_on_the_modules_own_device_makes_no_copy(iris):
    X, _ = iris
    module = NoCopy()
    X64 = np.hstack([X] * 16)
    for device in (None, "cpu", "auto" if not torch.cuda.is_available() else "cpu"):
        nt = NeuralTransformer(module, device=device).fit(X64)
        assert nt.module_ is module


def test_lazy_pretrained_module_is_copied_once_and_left_lazy(iris):
    X, _ = iris
    module = lazy_module()
    nt = NeuralTransformer(module).fit(X)
    assert nt.module_ is not module
    assert not any(isinstance(p, nn.parameter.UninitializedParameter)
                   for p in nt.module_.parameters())
    assert all(isinstance(p, nn.parameter.UninitializedParameter)
               for p in module.parameters())
    # Another width works: the user's module still takes any input.
    assert NeuralTransformer(module).fit_transform(X[:, :2]).shape == (len(X), 3)
