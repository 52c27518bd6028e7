"""ONNX models as frozen members: NeuralTransformer, ModuleClassifier, the ensembles."""

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from skorch import NeuralNetClassifier
from torch import nn

from skchain import (
    ModuleClassifier,
    NeuralTransformer,
    OnnxModel,
    OutputEnsembleClassifier,
)
from skchain._fingerprint import model_fingerprint

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


class ConvNet(nn.Module):
    """A tiny conv net on (n, 1, 8, 8) digits images."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc1 = nn.Linear(8 * 16, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x))).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


def digits_images():
    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(np.float32).reshape(-1, 1, 8, 8), y


def trained_conv_net(X, y, seed=0, epochs=30):
    torch.manual_seed(seed)
    net = ConvNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


def export(net, path, shape=(1, 8, 8)):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(1, *shape),), str(path), dynamo=False,
            input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}},
        )
    return path


@pytest.fixture(scope="module")
def data():
    return digits_images()


@pytest.fixture(scope="module")
def net(data):
    X, y = data
    return trained_conv_net(X[:1000], y[:1000])


@pytest.fixture(scope="module")
def onnx_path(net, tmp_path_factory):
    return export(net, tmp_path_factory.mktemp("onnx") / "convnet.onnx")


def torch_out(net, X):
    with torch.no_grad():
        return net(torch.from_numpy(X)).numpy()


def test_onnx_file_matches_its_torch_original(data, net, onnx_path):
    X, _ = data
    nt = NeuralTransformer(onnx_path, output="logits").fit(X)
    np.testing.assert_allclose(nt.transform(X), torch_out(net, X), atol=1e-4, rtol=0)
    clf = ModuleClassifier(str(onnx_path), classes=np.arange(10))
    proba = torch.softmax(torch.from_numpy(torch_out(net, X)).double(), 1).numpy()
    np.testing.assert_allclose(clf.predict_proba(X), proba, atol=1e-4, rtol=0)
    # The same through a ModelProto, and batched through the runner.
    proto = onnx.load(onnx_path)
    small = NeuralTransformer(proto, output="logits", batch_size=7, cache=False).fit(X)
    np.testing.assert_allclose(small.transform(X[:50]), torch_out(net, X[:50]), atol=1e-4)


def test_intermediate_values_by_name(data, net, onnx_path):
    X, _ = data
    model = OnnxModel(onnx_path)
    assert "/Relu_1_output_0" in model.value_names or any("Relu" in n for n in model.value_names)
    # The input of fc2 (the embedding) and fc1's output, read from the graph.
    seen = {}
    hooks = [net.fc1.register_forward_hook(lambda m, a, o: seen.__setitem__("fc1", o)),
             net.fc2.register_forward_pre_hook(lambda m, a: seen.__setitem__("emb", a[0]))]
    try:
        torch_out(net, X[:20])
    finally:
        for h in hooks:
            h.remove()
    gemm = next(n for n in model.value_names if "fc1" in n and "Gemm" in n)
    nt = NeuralTransformer(onnx_path, output=gemm).fit(X)
    np.testing.assert_allclose(nt.transform(X[:20]), seen["fc1"].numpy(), atol=1e-4)
    emb = NeuralTransformer(onnx_path, output="embedding").fit(X)
    np.testing.assert_allclose(emb.transform(X[:20]), seen["emb"].numpy(), atol=1e-4)
    both = NeuralTransformer(onnx_path, output=[gemm, "logits"]).fit(X)
    out = both.transform(X[:20])
    np.testing.assert_allclose(out[:, :32], seen["fc1"].numpy(), atol=1e-4)
    np.testing.assert_allclose(out[:, 32:], torch_out(net, X[:20]), atol=1e-4)
    assert list(both.get_feature_names_out()[[0, 32]]) == [f"{gemm}_0", "logits_0"]
    with pytest.raises(ValueError, match="valid layer names"):
        NeuralTransformer(onnx_path, output="no_such_value").fit(X)


def test_the_users_model_is_never_changed(data, onnx_path):
    X, _ = data
    proto = onnx.load(onnx_path)
    before = proto.SerializeToString()
    file_before = onnx_path.read_bytes()
    name = OnnxModel(proto).value_names[2]
    NeuralTransformer(proto, output=name).fit(X).transform(X[:10])
    assert proto.SerializeToString() == before
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert onnx_path.read_bytes() == file_before


def test_shared_not_copied_by_clone_and_search(data, onnx_path):
    X, y = data
    nt = NeuralTransformer(onnx_path, output="logits")
    twin = clone(nt)
    assert twin.net is nt.net
    a, b = nt.fit(X), twin.fit(X)
    # One OnnxModel (one session) for every fit given the same file.
    assert a.module_ is b.module_
    assert isinstance(a.module_, OnnxModel)
    assert "net__lr" not in nt.get_params()
    pipe = make_pipeline(NeuralTransformer(onnx_path, output="embedding"), PCA(8),
                         LogisticRegression(max_iter=500))
    scores = cross_val_score(pipe, X[1000:1400], y[1000:1400], cv=3)
    assert scores.mean() > 0.8, scores


def test_pickle_and_deepcopy_keep_the_model(data, onnx_path):
    X, _ = data
    nt = NeuralTransformer(onnx_path, output="embedding").fit(X)
    expected = nt.transform(X[:30])
    again = pickle.loads(pickle.dumps(nt))
    np.testing.assert_array_equal(again.transform(X[:30]), expected)
    copied = copy.deepcopy(nt.module_)
    assert copied.digest == nt.module_.digest
    np.testing.assert_array_equal(
        copied(torch.from_numpy(X[:30])).numpy(), nt.module_(torch.from_numpy(X[:30])).numpy()
    )


def test_fingerprint_follows_the_model_bytes(data, net, onnx_path, tmp_path):
    X, y = data
    same = OnnxModel(onnx.load(onnx_path))
    assert model_fingerprint(OnnxModel(onnx_path)) == model_fingerprint(same)
    other_net = trained_conv_net(X[:200], y[:200], seed=1, epochs=2)
    other = OnnxModel(export(other_net, tmp_path / "other.onnx"))
    assert model_fingerprint(other) != model_fingerprint(same)
    # A rewritten file is a new model: never served the old outputs.
    path = tmp_path / "moving.onnx"
    export(net, path)
    first = NeuralTransformer(path, output="logits", cache=True).fit(X).transform(X[:40])
    export(other_net, path)
    second = NeuralTransformer(path, output="logits", cache=True).fit(X).transform(X[:40])
    np.testing.assert_allclose(second, torch_out(other_net, X[:40]), atol=1e-4)
    assert np.abs(first - second).max() > 1e-2


def test_cache_runs_each_row_once(data, onnx_path):
    X, _ = data
    model = OnnxModel(onnx_path)
    calls = []
    handle = model.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    try:
        nt = NeuralTransformer(model, output="logits", cache=True).fit(X[:100])
        first = nt.transform(X[:100])
        n = sum(calls)
        np.testing.assert_array_equal(clone(nt).fit(X[:100]).transform(X[:100]), first)
        assert sum(calls) == n  # the second fit and transform ran no row
    finally:
        handle.remove()


def test_onnx_model_is_never_trained(data, onnx_path):
    X, y = data
    model = OnnxModel(onnx_path)
    net = NeuralNetClassifier(model, max_epochs=1, train_split=None, verbose=0)
    with pytest.raises(ValueError, match="ONNX model, which is frozen"):
        NeuralTransformer(net).fit(X[:50], y[:50])
    x = torch.from_numpy(X[:4]).requires_grad_()
    with pytest.raises(ValueError, match="frozen"):
        model(x)
    # A torch head trained on top of the frozen ONNX model is fine.
    head = nn.Sequential(model, nn.Linear(10, 10))
    trained = NeuralTransformer(
        NeuralNetClassifier(head, criterion=nn.CrossEntropyLoss, max_epochs=2, lr=0.01,
                            train_split=None, verbose=0),
        random_state=0, cv=None,
    ).fit(X[:200], y[:200])
    assert trained.transform(X[:5]).shape == (5, 10)


def test_onnx_member_of_an_output_ensemble(data, net, onnx_path):
    X, y = data
    other = trained_conv_net(X[:1000], y[:1000], seed=3, epochs=20)
    classes = np.arange(10)
    members = [("onnx", ModuleClassifier(onnx_path, classes)),
               ("torch", ModuleClassifier(other, classes))]
    mean = OutputEnsembleClassifier(members).fit(X[1000:1200], y[1000:1200])
    proba = mean.predict_proba(X[1200:1300])
    expected = (members[0][1].predict_proba(X[1200:1300])
                + members[1][1].predict_proba(X[1200:1300])) / 2
    np.testing.assert_allclose(proba, expected, atol=1e-10)
    vote = OutputEnsembleClassifier(members, voting="hard").fit(X[1000:1200], y[1000:1200])
    assert (vote.predict(X[1200:]) == y[1200:]).mean() > 0.8


def test_a_layout_that_does_not_fit_names_both_shapes(data, onnx_path):
    X, _ = data
    with pytest.raises(ValueError, match=r"shape \(n, 1, 8, 8\).*\(n, 8, 8, 1\).*transpose"):
        NeuralTransformer(onnx_path).fit(X.transpose(0, 2, 3, 1))


def test_fixed_batch_size_is_named(data, net, tmp_path):
    X, _ = data
    path = tmp_path / "fixed.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False)
    one = NeuralTransformer(path, batch_size=1, cache=False).fit(X)
    np.testing.assert_allclose(one.transform(X[:3]), torch_out(net, X[:3]), atol=1e-4)
    with pytest.raises(ValueError, match="fixed batch size of 1.*batch_size=1"):
        NeuralTransformer(path).fit(X)


def _run_onnx(model, X):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


def test_to_onnx_embeds_the_members_graph(data, net, tmp_path):
    from skchain import to_onnx

    X, y = data
    # An older opset than the chain's: the member's nodes are converted.
    path = tmp_path / "opset17.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
                          opset_version=17, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "n"}})
    gemm = next(n for n in OnnxModel(path).value_names if "fc1" in n)
    for output in (gemm, "embedding", "proba", [gemm, "logits"]):
        pipe = make_pipeline(NeuralTransformer(path, output=output), PCA(8),
                             LogisticRegression(max_iter=1000)).fit(X[:400], y[:400])
        label, proba = _run_onnx(to_onnx(pipe, X[:1]), X[400:500])
        np.testing.assert_allclose(proba, pipe.predict_proba(X[400:500]), atol=1e-5)
        np.testing.assert_array_equal(label, pipe.predict(X[400:500]))
    classes = np.arange(10)
    ens = OutputEnsembleClassifier(
        [("onnx", ModuleClassifier(path, classes)), ("torch", ModuleClassifier(net, classes))],
        weights="learn",
    ).fit(X[400:700], y[400:700])
    _, proba = _run_onnx(to_onnx(ens, X[:1]), X[700:800])
    np.testing.assert_allclose(proba, ens.predict_proba(X[700:800]), atol=1e-5)


def test_to_onnx_refuses_an_onnx_model_inside_torch_layers(data, onnx_path):
    from skchain import to_onnx

    X, _ = data
    inside = nn.Sequential(OnnxModel(onnx_path), nn.Softmax(dim=1))
    nt = NeuralTransformer(inside).fit(X)
    with pytest.raises(ValueError, match="cannot export a torch module that runs an ONNX"):
        to_onnx(nt, X[:1])


def test_merged_heads_on_an_onnx_backbone(data, net, onnx_path):
    from skchain import MergedHeadsClassifier

    X, y = data
    relu = OnnxModel(onnx_path)._last_linear  # the value that enters fc2
    torch.manual_seed(0)
    heads = [("low", nn.Linear(32, 5), [0, 1, 2, 3, 4]),
             ("high", nn.Linear(32, 5), [5, 6, 7, 8, 9])]
    from_onnx = MergedHeadsClassifier((onnx_path, relu), heads, calibration=None)
    from_torch = MergedHeadsClassifier((net, "fc2"), heads, calibration=None)
    from_onnx.fit(X[:200], y[:200])
    from_torch.fit(X[:200], y[:200])
    np.testing.assert_allclose(from_onnx.predict_proba(X[200:300]),
                               from_torch.predict_proba(X[200:300]), atol=1e-4)


def test_module_classifier_clones_share_the_model(onnx_path, net):
    proto = onnx.load(onnx_path)
    for model in (net, proto, str(onnx_path)):
        clf = ModuleClassifier(model, classes=np.arange(10), batch_size=7)
        twin = clone(clf)
        assert twin.module is model
        assert twin.get_params()["batch_size"] == 7


def _uint8_model():
    """A hand-built graph taking uint8 pixels: Cast to float, times 2."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["pixels"], ["as_float"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["as_float", "as_float"], ["doubled"])],
        "uint8_input",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", 4])],
        [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["n", 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_integer_input_is_fed_exactly_or_refused():
    X = np.array([[0, 1, 128, 255], [3, 4, 5, 6]], dtype=np.float32)
    nt = NeuralTransformer(_uint8_model(), cache=False).fit(X)
    np.testing.assert_array_equal(nt.transform(X), 2 * X)
    with pytest.raises(ValueError, match=r"takes uint8 input.*not integers in \[0, 255\]"):
        nt.transform(X / 255)
    with pytest.raises(ValueError, match="not integers"):
        nt.transform(X + 300)


# -- external data files ----------------------------------------------------------


def save_external(net, folder, name="net.onnx"):
    """``net`` as ONNX with every weight in the file ``<name>.data`` beside it
    (``onnx.save_model(..., save_as_external_data=True)``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = export(net, folder / name)
    proto = onnx.load(path)
    path.unlink()
    onnx.save_model(proto, str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=f"{name}.data", size_threshold=0)
    return path


def test_external_data_member_matches_its_torch_original(data, net, tmp_path, monkeypatch):
    X, _ = data
    path = save_external(net, tmp_path / "model")
    assert (tmp_path / "model" / "net.onnx.data").stat().st_size > path.stat().st_size
    # The data file is found in the model's folder, not the working directory.
    monkeypatch.chdir(tmp_path)
    model = OnnxModel(path)
    assert model.external_files == [str(tmp_path / "model" / "net.onnx.data")]
    nt = NeuralTransformer(path, output="logits", cache=False).fit(X)
    np.testing.assert_allclose(nt.transform(X), torch_out(net, X), atol=1e-4, rtol=0)
    # Intermediate values read through a private copy of the graph.
    gemm = next(n for n in model.value_names if "fc1" in n and "Gemm" in n)
    fc1 = NeuralTransformer(path, output=gemm, cache=False).fit(X).transform(X[:20])
    with torch.no_grad():
        expected = net.fc1(net.pool(torch.relu(net.conv(torch.from_numpy(X[:20])))).flatten(1))
    np.testing.assert_allclose(fc1, expected.numpy(), atol=1e-4)
    clf = ModuleClassifier(path, classes=np.arange(10))
    proba = torch.softmax(torch.from_numpy(torch_out(net, X)).double(), 1).numpy()
    np.testing.assert_allclose(clf.predict_proba(X), proba, atol=1e-4, rtol=0)
    # The model given with its data loaded into the proto: the same outputs.
    loaded = NeuralTransformer(onnx.load(path), output="logits", cache=False).fit(X)
    np.testing.assert_allclose(loaded.transform(X[:50]), nt.transform(X[:50]), atol=1e-6)
    copied = pickle.loads(pickle.dumps(nt))
    np.testing.assert_array_equal(copied.transform(X[:30]), nt.transform(X[:30]))
    # The graph is kept without its weights: they stay in the data file.
    data_size = (tmp_path / "model" / "net.onnx.data").stat().st_size
    assert len(pickle.dumps(model)) < data_size / 2


def test_external_data_that_cannot_be_found_names_the_file(data, net, tmp_path):
    X, _ = data
    path = save_external(net, tmp_path / "model")
    lonely = tmp_path / "elsewhere" / "net.onnx"
    lonely.parent.mkdir()
    lonely.write_bytes(path.read_bytes())  # the model without its data file
    for model in (lonely, str(lonely)):
        with pytest.raises(ValueError, match=r"external data file 'net.onnx.data'.*"
                                             r"does not exist.*next to the model"):
            NeuralTransformer(model).fit(X)
    proto = onnx.load(path, load_external_data=False)
    with pytest.raises(ValueError, match=r"'net.onnx.data', which this ModelProto does not "
                                         r"hold.*Pass the path of the .onnx file"):
        ModuleClassifier(proto, classes=np.arange(10)).fit(X)


def test_changed_external_weights_give_new_outputs(data, net, tmp_path):
    X, y = data
    path = save_external(net, tmp_path / "model")
    other_net = trained_conv_net(X[:200], y[:200], seed=1, epochs=2)
    other = save_external(other_net, tmp_path / "other")
    data_file = tmp_path / "model" / "net.onnx.data"
    before = path.read_bytes()
    digest = OnnxModel(path).digest
    first = NeuralTransformer(path, output="logits", cache=True).fit(X)
    out = first.transform(X[:40])
    np.testing.assert_allclose(out, torch_out(net, X[:40]), atol=1e-4)
    # Same graph, same layout, other weights: only the data file changes.
    data_file.write_bytes((tmp_path / "other" / "net.onnx.data").read_bytes())
    assert path.read_bytes() == before and other.read_bytes() == before
    assert OnnxModel(path).digest != digest
    second = NeuralTransformer(path, output="logits", cache=True).fit(X).transform(X[:40])
    np.testing.assert_allclose(second, torch_out(other_net, X[:40]), atol=1e-4)
    assert np.abs(out - second).max() > 1e-2
    # The model read before the change never mixes old and new weights.
    with pytest.raises(ValueError, match="net.onnx.data of .* changed"):
        first.transform(X[:40] + 1)


def test_to_onnx_carries_the_external_weights(data, net, tmp_path):
    from onnx.external_data_helper import uses_external_data

    from skchain import to_onnx

    X, y = data
    path = save_external(net, tmp_path / "model")
    pipe = make_pipeline(NeuralTransformer(path, output="embedding"), PCA(8),
                         LogisticRegression(max_iter=1000)).fit(X[:400], y[:400])
    exported = to_onnx(pipe, X[:1])
    assert not any(uses_external_data(t) for t in exported.graph.initializer)
    label, proba = _run_onnx(exported, X[400:500])  # from bytes: no folder to read from
    np.testing.assert_allclose(proba, pipe.predict_proba(X[400:500]), atol=1e-5)
    np.testing.assert_array_equal(label, pipe.predict(X[400:500]))


# -- ONNX heads: (onnx_model, value) and ONNX files as heads --------------------------


LOW, HIGH = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]


def _base(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 32),
                         nn.ReLU())


@pytest.fixture(scope="module")
def two_classifiers(tmp_path_factory):
    """Two complete ONNX classifiers on one base (each with its own 5-label
    head) and a third on another base."""
    folder = tmp_path_factory.mktemp("heads")
    base = _base(0)
    torch.manual_seed(1)
    low = nn.Sequential(base, nn.Linear(32, 5)).eval()
    high = nn.Sequential(base, nn.Linear(32, 5)).eval()
    stranger = nn.Sequential(_base(2), nn.Linear(32, 5)).eval()
    paths = {name: export(m, folder / f"{name}.onnx")
             for name, m in [("low", low), ("high", high), ("stranger", stranger)]}
    return paths, {"low": low, "high": high, "base": base}


def _softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_heads_as_onnx_model_and_value_match_onnxruntime(data, two_classifiers, recwarn):
    from skchain import MergedHeadsClassifier

    X, y = data
    paths, _ = two_classifiers
    value = OnnxModel(paths["low"])._last_linear  # what enters the head's Gemm
    heads = [("low", (paths["low"], value), LOW),
             ("high", (onnx.load(paths["high"]), value), HIGH)]
    clf = MergedHeadsClassifier((paths["low"], value), heads, calibration=None)
    clf.fit(X[:100], y[:100])
    # onnxruntime's own run of each complete model, joined by one softmax.
    logits = np.hstack([_run_onnx(onnx.load(paths[n]), X[:300])[0] for n in ("low", "high")])
    np.testing.assert_allclose(clf.predict_proba(X[:300]), _softmax(logits), atol=1e-5)
    # Frozen and shared: the heads are one OnnxModel per model and value,
    # the same in every clone; the backbone is the model's shared OnnxModel.
    low_head = clf.merged_.heads["low"]
    assert isinstance(low_head, OnnxModel) and not list(low_head.parameters())
    twin = clone(clf).fit(X[100:200], y[100:200])
    assert twin.merged_.heads["low"] is low_head
    assert twin.merged_.backbone.model is clf.merged_.backbone.model
    # One base: no warning that the heads came from another backbone.
    assert not [w for w in recwarn if "differ from the backbone" in str(w.message)]
    calibrated = MergedHeadsClassifier((paths["low"], value), heads).fit(X[:600], y[:600])
    assert calibrated.score(X[600:900], y[600:900]) > 0.1  # runs end to end


def test_onnx_head_from_another_base_warns(data, two_classifiers):
    from skchain import merge_heads

    paths, _ = two_classifiers
    value = OnnxModel(paths["low"])._last_linear
    with pytest.warns(UserWarning, match="'stranger'.*differ from the backbone model's"):
        merge_heads((paths["low"], value), [("low", (paths["low"], value), LOW),
                                            ("stranger", (paths["stranger"], value), HIGH)])


def test_an_onnx_file_as_a_head_on_a_torch_backbone(data, two_classifiers, tmp_path):
    from skchain import MergedHeadsClassifier

    X, y = data
    _, nets = two_classifiers
    head = nets["low"][1]
    path = export(head, tmp_path / "head.onnx", shape=(32,))
    torch_heads = [("low", head, LOW), ("high", nets["high"][1], HIGH)]
    onnx_heads = [("low", str(path), LOW), ("high", nets["high"][1], HIGH)]
    ours = MergedHeadsClassifier(nets["base"], onnx_heads).fit(X[:400], y[:400])
    theirs = MergedHeadsClassifier(nets["base"], torch_heads).fit(X[:400], y[:400])
    np.testing.assert_allclose(ours.predict_proba(X[400:600]),
                               theirs.predict_proba(X[400:600]), atol=1e-5)


@pytest.mark.parametrize("calibration", ["combiner", "temperature", "tree", None])
def test_to_onnx_of_merged_onnx_heads(data, two_classifiers, calibration):
    from sklearn.tree import DecisionTreeClassifier

    from skchain import MergedHeadsClassifier, to_onnx

    X, y = data
    paths, nets = two_classifiers
    value = OnnxModel(paths["low"])._last_linear
    heads = [("low", (paths["low"], value), LOW), ("high", nets["high"][1], HIGH)]
    kwargs = {"calibration": calibration}
    if calibration == "tree":
        kwargs = {"combiner": DecisionTreeClassifier(max_depth=4, random_state=0)}
    clf = MergedHeadsClassifier((paths["low"], value), heads, **kwargs).fit(X[:600], y[:600])
    label, proba = _run_onnx(to_onnx(clf, X[:1]), X[600:800])
    np.testing.assert_allclose(proba, clf.predict_proba(X[600:800]), atol=1e-5)
    np.testing.assert_array_equal(label, clf.predict(X[600:800]))
    if calibration != "tree":  # to_torch keeps the ONNX parts as modules
        from skchain import to_torch

        with torch.no_grad():
            served = to_torch(clf)(torch.from_numpy(X[600:800])).numpy()
        np.testing.assert_allclose(served, clf.predict_proba(X[600:800]), atol=1e-5)


def _skip_connection_model():
    """x -> relu -> (relu + x): the graph after 'relu' also reads x."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["relu"]),
         helper.make_node("Add", ["relu", "x"], ["out"])],
        "skip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_onnx_heads_that_cannot_be_cut_are_a_clear_error(two_classifiers):
    from skchain import merge_heads

    paths, _ = two_classifiers
    value = OnnxModel(paths["low"])._last_linear
    backbone = (paths["low"], value)
    with pytest.raises(ValueError, match="computes no value named 'fc'; its values are"):
        merge_heads(backbone, [("low", (paths["low"], "fc"), LOW)])
    with pytest.raises(TypeError, match=r"\(model, value_name\).*a str; got int"):
        merge_heads(backbone, [("low", (paths["low"], 3), LOW)])
    with pytest.raises(ValueError, match=r"depends on \['x'\] besides the value 'relu'"):
        merge_heads(nn.ReLU(), [("skip", (_skip_connection_model(), "relu"), [0, 1, 2, 3])])
