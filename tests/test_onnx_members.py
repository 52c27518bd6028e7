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
