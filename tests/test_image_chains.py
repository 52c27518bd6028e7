"""Conv nets on image tensors, end to end: a named layer into classic ML,
a conv net trained in the pipeline (out-of-fold probabilities), to_torch."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from skorch import NeuralNetClassifier
from torch import nn

from skchain import NeuralTransformer, to_torch


class SmallConv(nn.Module):
    """(n, C, H, W) -> conv -> pool "features" -> Linear "fc"."""

    def __init__(self, channels=1, n_out=10):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.features = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.fc = nn.Linear(8 * 16, n_out)

    def forward(self, x):
        return self.fc(self.features(self.act(self.conv(x))))


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(np.float32).reshape(-1, 1, 8, 8), y


def test_conv_net_named_layer_pca_logistic_regression_cross_validated(digits):
    X, y = digits
    torch.manual_seed(0)
    net = SmallConv().eval()  # random conv features: nothing learned from y
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pipe = make_pipeline(NeuralTransformer(net, output="features"), PCA(20),
                         LogisticRegression(max_iter=2000))
    scores = cross_val_score(pipe, X[:900], y[:900], cv=3)
    assert scores.mean() > 0.85, scores
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_rgb_images_32x32(digits):
    X, _ = digits
    rng = np.random.RandomState(0)
    images = rng.rand(40, 3, 32, 32).astype(np.float32)
    torch.manual_seed(0)
    net = SmallConv(channels=3).eval()
    nt = NeuralTransformer(net, output="features").fit(images)
    with torch.no_grad():
        expected = net.features(net.act(net.conv(torch.from_numpy(images)))).numpy()
    np.testing.assert_allclose(nt.transform(images), expected, rtol=1e-5, atol=1e-6)
    assert nt.n_features_in_ == 3  # the channels, as scikit-learn counts X.shape[1]
    with pytest.raises(ValueError, match=r"rows of shape \(3, 16, 16\).*\(3, 32, 32\)"):
        nt.transform(images[:, :, :16, :16])


def _skorch_conv(seed=0):
    return NeuralNetClassifier(
        SmallConv, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=0.01,
        max_epochs=8, batch_size=64, train_split=None, verbose=0,
    )


def test_conv_net_trained_in_the_pipeline_gives_out_of_fold_probabilities(digits):
    X, y = digits
    X, y = X[:600], y[:600]
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    nt = NeuralTransformer(_skorch_conv(), output="proba", cv=cv, random_state=0)
    oof = nt.fit_transform(X, y)
    assert oof.shape == (600, 10)
    np.testing.assert_allclose(oof.sum(axis=1), 1, atol=1e-5)
    in_sample = nt.transform(X)
    oof_acc = (oof.argmax(1) == y).mean()
    in_acc = (in_sample.argmax(1) == y).mean()
    assert 0.7 < oof_acc < in_acc, (oof_acc, in_acc)
    # The out-of-fold rows are not the in-sample ones of the net kept for
    # transform (which saw every row).
    for _, test in cv.split(X, y):
        assert np.abs(oof[test] - in_sample[test]).max() > 1e-2


def test_to_torch_of_an_image_chain_matches_predict_proba(digits):
    X, y = digits
    torch.manual_seed(0)
    net = SmallConv().eval()
    pipe = make_pipeline(NeuralTransformer(net, output="features"), PCA(16),
                         LogisticRegression(max_iter=2000)).fit(X[:500], y[:500])
    module = to_torch(pipe)
    with torch.no_grad():
        out = module(torch.from_numpy(X[500:700])).numpy()
    np.testing.assert_allclose(out, pipe.predict_proba(X[500:700]), atol=1e-5, rtol=0)


def test_to_onnx_of_an_image_chain_matches_predict_proba(digits):
    ort = pytest.importorskip("onnxruntime")
    from skchain import to_onnx

    X, y = digits
    torch.manual_seed(0)
    pipe = make_pipeline(NeuralTransformer(SmallConv().eval(), output="features"), PCA(16),
                         LogisticRegression(max_iter=2000)).fit(X[:500], y[:500])
    model = to_onnx(pipe, X[:1])
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    label, proba = session.run(None, {"X": X[500:700]})
    np.testing.assert_allclose(proba, pipe.predict_proba(X[500:700]), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(label, pipe.predict(X[500:700]))
