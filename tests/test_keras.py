"""Keras 3 models (torch backend) wherever a torch module goes.

tests/conftest.py sets KERAS_BACKEND=torch before anything imports keras.
"""

import threading

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from skchain import ModuleClassifier, NeuralTransformer, OutputEnsembleClassifier

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - conftest sets it
    pytest.skip("Keras runs on another backend", allow_module_level=True)


def digits_images():
    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(np.float32).reshape(-1, 8, 8, 1), y


def keras_cnn(seed=0, channels_first=False, normalize=True):
    """Conv -> BatchNorm -> Flatten -> Dropout -> Dense "hidden" -> Dense "logits"
    (``normalize=False``: without BatchNorm and Dropout, quicker to train)."""
    keras.utils.set_random_seed(seed)
    if channels_first:
        # Takes (n, 1, 8, 8) like the torch members of an ensemble.
        inputs = keras.Input((1, 8, 8))
        x = keras.layers.Permute((2, 3, 1), name="to_channels_last")(inputs)
    else:
        inputs = x = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    if normalize:
        x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten(name="flat")(x)
    if normalize:
        x = keras.layers.Dropout(0.3, name="drop")(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn")


def trained(model, X, y, epochs=4):
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, y, epochs=epochs, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def data():
    return digits_images()


@pytest.fixture(scope="module")
def model(data):
    X, y = data
    return trained(keras_cnn(), X[:1000], y[:1000])


def keras_out(model, layer, X):
    sub = keras.Model(model.input, model.get_layer(layer).output)
    return keras.ops.convert_to_numpy(sub(X, training=False))


def weights(model):
    return [w.copy() for w in model.get_weights()]


def test_named_layers_by_their_keras_names(data, model):
    X, _ = data
    nt = NeuralTransformer(model, output="hidden").fit(X)
    np.testing.assert_allclose(nt.transform(X[:50]), keras_out(model, "hidden", X[:50]),
                               rtol=1e-5, atol=1e-6)
    assert nt.get_feature_names_out()[0] == "hidden_0"
    assert nt.module_ is model
    # embedding: the input of the last Dense layer.
    emb = NeuralTransformer(model, output="embedding").fit(X)
    np.testing.assert_array_equal(emb.transform(X[:50]), nt.transform(X[:50]))
    final = NeuralTransformer(model).fit(X)
    np.testing.assert_allclose(final.transform(X[:50]),
                               keras.ops.convert_to_numpy(model(X[:50], training=False)),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"valid layer names: \['conv', 'bn', 'flat'"):
        NeuralTransformer(model, output="dense").fit(X)


def test_nested_model_layers_are_named_with_a_slash():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, name="d1"),
                              keras.layers.Dense(3, name="d2")], name="inner")
    inputs = keras.Input((4,))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="top")(inner(inputs)))
    X = np.random.RandomState(0).rand(6, 4).astype(np.float32)
    nt = NeuralTransformer(outer, output="inner/d1").fit(X)
    expected = keras.ops.convert_to_numpy(inner.get_layer("d1")(X))
    np.testing.assert_allclose(nt.transform(X), expected, rtol=1e-5, atol=1e-6)


def test_named_layer_pca_logistic_regression_cross_validated(data, model):
    X, y = data
    before = weights(model)
    pipe = make_pipeline(NeuralTransformer(model, output="hidden"), PCA(10),
                         LogisticRegression(max_iter=1000))
    scores = cross_val_score(pipe, X[1000:1500], y[1000:1500], cv=3)
    assert scores.mean() > 0.85, scores
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_inference_mode_and_the_model_unchanged(data, model):
    X, _ = data
    # Dropout and BatchNorm in inference mode: two runs agree with Keras'
    # training=False call, and BatchNorm's moving statistics do not move.
    before = weights(model)
    flags = [m.training for m in model.modules()]
    nt = NeuralTransformer(model, output="logits", cache=False).fit(X)
    a, b = nt.transform(X[:64] * 3 + 1), nt.transform(X[:64] * 3 + 1)
    np.testing.assert_array_equal(a, b)
    expected = keras.ops.convert_to_numpy(model(X[:64] * 3 + 1, training=False))
    np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-5)
    for w0, w1 in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)
    assert [m.training for m in model.modules()] == flags
    assert clone(nt).net is model  # shared, not copied


def test_cache_sees_changed_keras_weights(data):
    X, _ = data
    model = keras_cnn(seed=1)
    nt = NeuralTransformer(model, output="hidden", cache=True).fit(X)
    first = nt.transform(X[:40])
    model.set_weights([w * 0.5 for w in model.get_weights()])
    second = nt.transform(X[:40])
    np.testing.assert_allclose(second, keras_out(model, "hidden", X[:40]), rtol=1e-5, atol=1e-6)
    assert np.abs(first - second).max() > 1e-3
    kernel = model.get_layer("hidden").kernel
    kernel.assign(np.zeros(tuple(kernel.shape), dtype=np.float32))
    third = nt.transform(X[:40])
    np.testing.assert_allclose(third, keras_out(model, "hidden", X[:40]), rtol=1e-5, atol=1e-6)
    assert np.abs(third - second).max() > 1e-3


def test_threads_share_one_keras_model(data, model):
    X, _ = data
    nt = NeuralTransformer(model, output="hidden", cache=False, batch_size=16).fit(X)
    expected = [nt.transform(X[i * 50:(i + 1) * 50]) for i in range(4)]
    results = [None] * 4

    def work(i):
        results[i] = nt.transform(X[i * 50:(i + 1) * 50])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_keras_member_of_an_output_ensemble(data):
    X, y = data
    Xc = np.ascontiguousarray(X.transpose(0, 3, 1, 2))  # (n, 1, 8, 8)
    a, b = (trained(keras_cnn(seed, channels_first=True, normalize=False), Xc[:1000],
                    y[:1000], epochs=3) for seed in (2, 3))
    classes = np.arange(10)
    members = [("a", ModuleClassifier(a, classes)), ("b", ModuleClassifier(b, classes))]
    mean = OutputEnsembleClassifier(members).fit(Xc[1000:1200], y[1000:1200])
    expected = sum(
        keras.ops.convert_to_numpy(keras.ops.softmax(m(Xc[1200:1300], training=False)))
        for m in (a, b)
    ) / 2
    np.testing.assert_allclose(mean.predict_proba(Xc[1200:1300]), expected, atol=1e-5)
    stacked = OutputEnsembleClassifier(members, weights="learn").fit(Xc[1000:1400],
                                                                       y[1000:1400])
    assert stacked.score(Xc[1400:], y[1400:]) > 0.85


def test_unbuilt_keras_model_is_refused(data):
    X, _ = data
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        NeuralTransformer(model).fit(X.reshape(len(X), -1))
    assert not model.built


def test_merged_heads_on_a_keras_backbone(data, model):
    import torch

    from skchain import MergedHeadsClassifier

    X, y = data
    torch.manual_seed(0)
    low, high = torch.nn.Linear(32, 5), torch.nn.Linear(32, 5)
    heads = [("low", low, [0, 1, 2, 3, 4]), ("high", high, [5, 6, 7, 8, 9])]
    clf = MergedHeadsClassifier((model, "logits"), heads, calibration=None)
    clf.fit(X[:200], y[:200])
    features = torch.from_numpy(keras_out(model, "hidden", X[200:260]))
    with torch.no_grad():
        logits = torch.cat([low(features), high(features)], dim=1).double()
    np.testing.assert_allclose(clf.predict_proba(X[200:260]),
                               torch.softmax(logits, dim=1).numpy(), atol=1e-5)


def test_to_torch_and_to_onnx_of_a_keras_chain(data, model):
    import torch

    from skchain import to_onnx, to_torch

    X, y = data
    pipe = make_pipeline(NeuralTransformer(model, output="hidden"), PCA(10),
                         LogisticRegression(max_iter=1000)).fit(X[:400], y[:400])
    expected = pipe.predict_proba(X[400:500])
    with torch.no_grad():
        out = to_torch(pipe)(torch.from_numpy(X[400:500])).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(to_onnx(pipe, X[:1]).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    _, proba = session.run(None, {"X": X[400:500]})
    np.testing.assert_allclose(proba, expected, atol=1e-5, rtol=0)
