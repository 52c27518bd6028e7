"""to_onnx / to_torch: exactness against the estimators' own predictions.

Every chain is checked on held-out rows: the same labels as ``predict`` and
probabilities within 1e-5 of ``predict_proba``, for the onnxruntime session
and for the torch module.
"""

import numpy as np
import pytest
import torch
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_digits, load_iris
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from skorch import NeuralNetClassifier
from torch import nn

from skchain import (
    MergedHeadsClassifier,
    ModuleClassifier,
    NeuralTransformer,
    OutputEnsembleClassifier,
    OutputEnsembleRegressor,
    TextEmbedder,
    to_onnx,
    to_torch,
)

TOL = 1e-5


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    rng = np.random.RandomState(0)
    idx = rng.permutation(len(y))
    return X[idx[:100]], y[idx[:100]], X[idx[100:]], y[idx[100:]]


def _torch_out(estimator, X):
    module = to_torch(estimator)
    with torch.no_grad():
        return module, module(torch.from_numpy(np.ascontiguousarray(X, np.float32))).numpy()


def _onnx_run(estimator, X):
    ort = pytest.importorskip("onnxruntime")
    model = to_onnx(estimator, X[:1])
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session, session.run(None, {"X": X.astype(np.float32)})


def check_classifier(estimator, X, onnx=True):
    """Both exports against predict / predict_proba on the rows X."""
    expected_label = estimator.predict(X)
    expected_proba = estimator.predict_proba(X)
    module, proba = _torch_out(estimator, X)
    assert proba.shape == expected_proba.shape
    np.testing.assert_allclose(proba, expected_proba, atol=TOL, rtol=0)
    np.testing.assert_array_equal(module.classes_[proba.argmax(1)], expected_label)
    if onnx:
        pytest.importorskip("skl2onnx")
        session, (label, oproba) = _onnx_run(estimator, X)
        assert [o.name for o in session.get_outputs()] == ["label", "probabilities"]
        np.testing.assert_allclose(oproba, expected_proba, atol=TOL, rtol=0)
        np.testing.assert_array_equal(label, expected_label)


def _mlp(n_in, n_out, hidden=16):
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def _skorch_net(n_in, n_out):
    return NeuralNetClassifier(_mlp(n_in, n_out), criterion=nn.CrossEntropyLoss,
                               max_epochs=15, lr=0.1, train_split=None, verbose=0)


# -- story 1: a net's outputs feed another model ----------------------------------------


@pytest.mark.parametrize("output", ["proba", "embedding"])
def test_story1_scaler_net_pca_logistic(iris, output):
    X, y, Xt, _ = iris
    pipe = make_pipeline(
        StandardScaler(),
        NeuralTransformer(_skorch_net(4, 3), output=output, cv=None, random_state=0),
        PCA(2),
        LogisticRegression(),
    ).fit(X, y)
    check_classifier(pipe, Xt)


@pytest.mark.parametrize("output", ["logits", "predict", "0", ["0", "2"]])
def test_every_output_of_a_pretrained_net(iris, output):
    X, y, Xt, _ = iris
    torch.manual_seed(0)
    pipe = make_pipeline(MinMaxScaler(clip=True), NeuralTransformer(_mlp(4, 3), output=output),
                         LogisticRegression()).fit(X, y)
    check_classifier(pipe, Xt, onnx=output in ("predict", ["0", "2"]))


def test_transformer_alone_gives_its_features(iris):
    X, y, Xt, _ = iris
    torch.manual_seed(0)
    nt = NeuralTransformer(_mlp(4, 3), output="embedding").fit(X)
    _, out = _torch_out(nt, Xt)
    np.testing.assert_allclose(out, nt.transform(Xt), atol=TOL, rtol=0)
    _, (onnx_out,) = _onnx_run(nt, Xt)
    np.testing.assert_allclose(onnx_out, nt.transform(Xt), atol=TOL, rtol=0)


# -- story 2: nets on column subsets, stacked with passthrough --------------------------


def test_story2_columns_with_passthrough(iris):
    X, y, Xt, _ = iris
    torch.manual_seed(0)
    ct = ColumnTransformer([
        ("a", NeuralTransformer(_mlp(2, 3), output="proba"), [0, 1]),
        ("b", make_pipeline(StandardScaler(), NeuralTransformer(_mlp(2, 4), output="0")),
         [2, 3]),
        ("raw", "passthrough", [0, 3]),
    ], remainder="drop")
    pipe = make_pipeline(ct, StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    check_classifier(pipe, Xt)


def test_columns_by_name_from_a_dataframe(iris):
    pd = pytest.importorskip("pandas")
    X, y, Xt, _ = iris
    names = ["a", "b", "c", "d"]
    df, dft = pd.DataFrame(X, columns=names), pd.DataFrame(Xt, columns=names)
    torch.manual_seed(0)
    ct = ColumnTransformer([("net", NeuralTransformer(_mlp(2, 3)), ["c", "a"])],
                           remainder="passthrough")
    pipe = make_pipeline(ct, LogisticRegression(max_iter=500)).fit(df, y)
    # The module takes the columns in the order of feature_names_in_.
    module, proba = _torch_out(pipe, dft[names].to_numpy())
    np.testing.assert_allclose(proba, pipe.predict_proba(dft), atol=TOL, rtol=0)
    # skl2onnx gives a DataFrame one input per column.
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("skl2onnx")
    session = ort.InferenceSession(to_onnx(pipe, df[:1]).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    feeds = {i.name: dft[[i.name]].to_numpy(np.float32) for i in session.get_inputs()}
    label, oproba = session.run(None, feeds)
    np.testing.assert_allclose(oproba, pipe.predict_proba(dft), atol=TOL, rtol=0)
    np.testing.assert_array_equal(label, pipe.predict(dft))


def test_feature_union_and_svd(iris):
    X, y, Xt, _ = iris
    torch.manual_seed(0)
    union = FeatureUnion([("net", NeuralTransformer(_mlp(4, 3))), ("svd", TruncatedSVD(2))],
                         transformer_weights={"svd": 0.5})
    pipe = make_pipeline(union, PCA(3, whiten=True), LogisticRegression()).fit(X, y)
    check_classifier(pipe, Xt, onnx=False)


def test_binary_labels_as_strings(iris):
    X, y, Xt, _ = iris
    labels = np.array(["no", "yes"])[(y == 2).astype(int)]
    torch.manual_seed(0)
    pipe = make_pipeline(NeuralTransformer(_mlp(4, 2), output="proba"),
                         LogisticRegression()).fit(X, labels)
    check_classifier(pipe, Xt)


# -- story 3: merged heads ----------------------------------------------------------------


@pytest.fixture(scope="module")
def heads():
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(64, 16), nn.Tanh())
    feats = backbone(torch.from_numpy(X[:600])).detach()
    out = []
    for name, labels in [("low", [0, 1, 2, 3, 4]), ("high", [5, 6, 7, 8, 9])]:
        rows = np.isin(y[:600], labels)
        net = NeuralNetClassifier(nn.Linear(16, 5), criterion=nn.CrossEntropyLoss, lr=0.5,
                                  max_epochs=10, train_split=None, verbose=0)
        net.fit(feats[rows], np.searchsorted(labels, y[:600][rows]))
        out.append((name, net.module_, labels))
    return backbone, out, X, y


@pytest.mark.parametrize("calibration", ["combiner", "temperature_bias"])
def test_story3_merged_heads(heads, calibration):
    backbone, head_list, X, y = heads
    clf = MergedHeadsClassifier(backbone, head_list, calibration=calibration)
    clf.fit(X[600:900], y[600:900])
    check_classifier(clf, X[900:1100])


def test_merged_heads_with_a_nonlinear_combiner_only_in_onnx(heads):
    backbone, head_list, X, y = heads
    clf = MergedHeadsClassifier(backbone, head_list,
                                combiner=RandomForestClassifier(n_estimators=3))
    clf.fit(X[600:900], y[600:900])
    with pytest.raises(TypeError, match="combiner RandomForestClassifier.*to_onnx"):
        to_torch(clf)
    # to_onnx runs the heads' columns from torch and the forest from skl2onnx.
    _, (label, proba) = _onnx_run(clf, X[900:1000])
    np.testing.assert_allclose(proba, clf.predict_proba(X[900:1000]), atol=TOL, rtol=0)
    np.testing.assert_array_equal(label, clf.predict(X[900:1000]))


# -- story 5: output ensembles --------------------------------------------------------------


def _members(X, y):
    torch.manual_seed(0)
    out = []
    for seed in range(2):
        torch.manual_seed(seed)
        net = NeuralNetClassifier(_mlp(4, 3), criterion=nn.CrossEntropyLoss, max_epochs=10,
                                  lr=0.1, train_split=None, verbose=0).fit(X, y)
        out.append((f"net{seed}", ModuleClassifier(net.module_, classes=[0, 1, 2])))
    # Labels in another column order: the ensemble aligns them.
    out.append(("lr", make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)))
    return out


@pytest.mark.parametrize("params", [
    dict(weights=None),
    dict(weights="learn"),
    dict(voting="hard", weights=[0.5, 0.3, 0.2]),
    dict(final_estimator=LogisticRegression()),
])
def test_story5_output_ensemble_classifier(iris, params):
    X, y, Xt, _ = iris
    ens = OutputEnsembleClassifier(_members(X[:50], y[:50]), **params).fit(X[50:], y[50:])
    if ens.voting == "hard":
        # No predict_proba: the exports give the weighted vote shares.
        module, shares = _torch_out(ens, Xt)
        np.testing.assert_array_equal(module.classes_[shares.argmax(1)], ens.predict(Xt))
        _, (label, _) = _onnx_run(ens, Xt)
        np.testing.assert_array_equal(label, ens.predict(Xt))
    else:
        # Learned weights are fixed weights once fitted: the ONNX path of
        # fixed weights is tested with weights=None.
        check_classifier(ens, Xt, onnx=params.get("weights") != "learn")


def test_ensemble_with_an_sklearn_only_member_needs_onnx(iris):
    X, y, Xt, _ = iris
    members = _members(X[:50], y[:50])[:1] + [("nb", GaussianNB().fit(X[:50], y[:50]))]
    ens = OutputEnsembleClassifier(members).fit(X[50:], y[50:])
    with pytest.raises(TypeError, match=r"member 1 \(GaussianNB\).*to_onnx"):
        to_torch(ens)
    _, (label, proba) = _onnx_run(ens, Xt)
    np.testing.assert_allclose(proba, ens.predict_proba(Xt), atol=TOL, rtol=0)
    np.testing.assert_array_equal(label, ens.predict(Xt))


def test_output_ensemble_regressor():
    X, y = load_diabetes_f32()
    members = [("lr", LinearRegression().fit(X[:200], y[:200])),
               ("ridge", make_pipeline(StandardScaler(), Ridge(alpha=10)).fit(X[:200], y[:200]))]
    ens = OutputEnsembleRegressor(members, weights="learn").fit(X[200:300], y[200:300])
    _, pred = _torch_out(ens, X[300:])
    np.testing.assert_allclose(pred, ens.predict(X[300:]), rtol=1e-5, atol=1e-3)
    _, (onnx_pred,) = _onnx_run(ens, X[300:])
    np.testing.assert_allclose(onnx_pred.ravel(), ens.predict(X[300:]), rtol=1e-5, atol=1e-3)


def load_diabetes_f32():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return X.astype(np.float32), y


# -- the torch module itself ----------------------------------------------------------------


def test_module_is_a_copy_and_leaves_the_net_alone(iris):
    X, y, Xt, _ = iris
    torch.manual_seed(0)
    net = _mlp(4, 3).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pipe = make_pipeline(NeuralTransformer(net), LogisticRegression()).fit(X, y)
    module = to_torch(pipe)
    assert net.training and not module.training
    assert all(not p.requires_grad for p in module.parameters())
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_module_moves_whole_to_another_device(iris, heads):
    """Every tensor the module uses moves with ``.to()``: on the "meta" device
    (shapes only) any tensor left on the CPU would fail, as it would on a GPU."""
    X, y, Xt, _ = iris
    torch.manual_seed(0)
    ct = ColumnTransformer([("net", NeuralTransformer(_mlp(2, 3), output="embedding"), [0, 1]),
                            ("raw", "passthrough", [2, 3])])
    pipe = make_pipeline(ct, MinMaxScaler(clip=True), PCA(2), LogisticRegression()).fit(X, y)
    ens = OutputEnsembleClassifier(_members(X[:50], y[:50]), voting="hard").fit(X[50:], y[50:])
    backbone, head_list, Xd, yd = heads
    merged = MergedHeadsClassifier(backbone, head_list).fit(Xd[600:900], yd[600:900])
    for est, width in [(pipe, 4), (ens, 4), (merged, 64)]:
        module = to_torch(est).to("meta")
        out = module(torch.empty(3, width, device="meta"))
        assert out.device.type == "meta" and out.shape[0] == 3


def test_compile_and_export(iris):
    X, y, Xt, _ = iris
    torch.manual_seed(0)
    pipe = make_pipeline(StandardScaler(), NeuralTransformer(_mlp(4, 3), output="embedding"),
                         PCA(2), LogisticRegression()).fit(X, y)
    module = to_torch(pipe)
    x = torch.from_numpy(Xt)
    expected = pipe.predict_proba(Xt)
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, (x,), dynamic_shapes=({0: batch},))
    np.testing.assert_allclose(program.module()(x[:7]).numpy(), expected[:7], atol=TOL, rtol=0)
    # aot_eager traces like the default backend without compiling C++ code.
    compiled = torch.compile(module, backend="aot_eager")
    with torch.no_grad():
        np.testing.assert_allclose(compiled(x).numpy(), expected, atol=TOL, rtol=0)


def test_regressor_and_unsupported_steps(iris):
    X, y, Xt, _ = iris
    reg = make_pipeline(MinMaxScaler(), Ridge()).fit(X, y)
    module, pred = _torch_out(reg, Xt)
    assert module.kind == "regressor" and module.classes_ is None
    np.testing.assert_allclose(pred, reg.predict(Xt), atol=1e-4, rtol=1e-5)
    forest = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=2)).fit(X, y)
    with pytest.raises(TypeError, match="step 'randomforestclassifier'.*to_onnx"):
        to_torch(forest)


def test_text_embedder_says_what_to_do(iris):
    X, y, _, _ = iris
    pipe = make_pipeline(TextEmbedder("any-model"), LogisticRegression().fit(X, y))
    with pytest.raises(TypeError, match=r"TextEmbedder.*pipe\[1:\]"):
        to_torch(pipe)
    pytest.importorskip("skl2onnx")
    with pytest.raises(TypeError, match=r"TextEmbedder.*pipe\[1:\]"):
        to_onnx(pipe[:1], np.array([["a text"]]))
