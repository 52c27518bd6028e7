"""merge_heads, MergedHeads and CutModel: the merged torch module alone."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from skchain import MergedHeadsClassifier, merge_heads
from skchain._capture import CutAt
from skchain._testing import RowStats
from skchain.heads import CutModel, MergedHeads


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_weights(before, module):
    after = module.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


def _complete_model(seed=0):
    """A "complete pretrained model": backbone and head in one Sequential."""
    torch.manual_seed(seed)
    return nn.Sequential(RowStats(n_out=8), nn.Linear(8, 2))


# -- merge_heads and cut models ----------------------------------------------


def test_merge_of_two_complete_models_equals_running_both():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(6, 8), nn.ReLU())
    model_a = nn.Sequential(backbone, nn.Linear(8, 2))
    model_b = nn.Sequential(backbone, nn.Linear(8, 3))
    merged = merge_heads(
        (model_a, "1"),
        [("pets", model_a[1], ["dog", "cat"]), ("cars", (model_b, "1"), ["van", "bus", "car"])],
    )
    assert isinstance(merged, MergedHeads) and isinstance(merged.backbone, CutModel)
    assert merged.heads["cars"] is model_b[1]
    x = torch.randn(5, 6)
    with torch.no_grad():
        expected = torch.cat([model_a(x), model_b(x)], dim=1)
        assert torch.equal(merged.columns(x), expected)
        logits = merged(x)
    assert list(merged.classes) == ["bus", "car", "cat", "dog", "van"]
    assert list(merged.column_labels) == ["dog", "cat", "van", "bus", "car"]
    assert list(merged.column_heads) == ["pets", "pets", "cars", "cars", "cars"]
    # column k of the output is classes[k]
    assert torch.equal(logits[:, 0], expected[:, 3])  # bus
    assert torch.equal(logits[:, 4], expected[:, 2])  # van


def test_cut_model_stops_at_the_layer_and_leaves_the_model_alone():
    calls = []
    model = _complete_model()
    model[1].register_forward_hook(lambda *args: calls.append(1))
    before = _weights(model)
    cut = CutModel(model, "1")
    x = torch.randn(4, 7)
    with torch.no_grad():
        features = cut(x)
        assert torch.equal(features, model[0](x))
    assert calls == []  # the head after the cut did not run
    assert len(model[1]._forward_pre_hooks) == 0  # the capture hook is gone
    _assert_same_weights(before, model)


def test_cut_model_is_the_runners_cut_and_keeps_feature_maps():
    # One capture mechanism: CutModel is the runner's CutAt at one layer's input.
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    cut = CutModel(conv, "2")
    assert isinstance(cut, CutAt) and cut.layers == ["2"] and cut.inputs
    x = torch.randn(3, 1, 5, 5)
    with torch.no_grad():
        features = cut(x)
        # A conv head takes feature maps: the cut does not flatten them.
        assert features.shape == (3, 4, 5, 5)
        assert torch.equal(features, conv[1](conv[0](x)))
    merged = merge_heads(cut, [("maps", nn.Sequential(conv[2], nn.Flatten()), list(range(50)))])
    assert merged(x).shape == (3, 50)


class _SkipsLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.unused = nn.Linear(3, 2)

    def forward(self, x):
        return self.body(x)


class _KeywordCall(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(input=x)


def test_cut_model_errors():
    with pytest.raises(TypeError, match=r"given as \(model, layer_name\)"):
        CutModel(nn.Linear(4, 2), 0)
    with pytest.raises(TypeError, match=r"given as \(model, layer_name\)"):
        CutModel("resnet", "fc")
    with pytest.raises(ValueError, match=r"no submodule named 'fc'; name the first layer"):
        CutModel(nn.Sequential(nn.Linear(4, 2)), "fc")
    with pytest.raises(ValueError, match=r"\['unused'\] were not called"):
        CutModel(_SkipsLayer(), "unused")(torch.randn(2, 4))
    with pytest.raises(TypeError, match="keyword arguments only"):
        CutModel(_KeywordCall(), "fc")(torch.randn(2, 4))


def test_overlapping_labels_sum_their_probabilities():
    torch.manual_seed(0)
    backbone = nn.Identity()
    heads = [("a", nn.Linear(4, 2), ["cat", "dog"]), ("b", nn.Linear(4, 2), ["dog", "fox"])]
    merged = merge_heads(backbone, heads)
    x = torch.randn(6, 4)
    with torch.no_grad():
        columns = merged.columns(x)
        proba = torch.softmax(merged(x), dim=1)
    p_all = torch.softmax(columns, dim=1)
    assert list(merged.classes) == ["cat", "dog", "fox"]
    torch.testing.assert_close(proba[:, 0], p_all[:, 0])
    torch.testing.assert_close(proba[:, 1], p_all[:, 1] + p_all[:, 2])
    torch.testing.assert_close(proba[:, 2], p_all[:, 3])
    X = np.random.RandomState(0).randn(60, 4).astype(np.float32)
    y = np.array(["cat", "dog", "fox"])[np.arange(60) % 3]
    for calibration in ["temperature_bias", "combiner"]:
        clf = MergedHeadsClassifier(backbone, heads, calibration=calibration).fit(X, y)
        assert clf.predict_proba(X).shape == (60, 3)


# -- errors ----------------------------------------------------------------------


def test_clear_errors():
    backbone = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    good = ("a", nn.Linear(8, 2), [0, 1])
    with pytest.raises(TypeError, match="list of \\(name, module, labels\\) triples"):
        merge_heads(backbone, {"a": (nn.Linear(8, 2), [0, 1])})
    with pytest.raises(ValueError, match="used twice"):
        merge_heads(backbone, [good, good])
    with pytest.raises(ValueError, match="duplicates"):
        merge_heads(backbone, [("a", nn.Linear(8, 2), [1, 1])])
    with pytest.raises(TypeError, match="one label type"):
        merge_heads(backbone, [good, ("b", nn.Linear(8, 1), ["cat"])])
    with pytest.raises(ValueError, match="without '.'"):
        merge_heads(backbone, [("a.b", nn.Linear(8, 2), [0, 1])])
    with pytest.raises(ValueError, match="taken by a torch.nn.ModuleDict attribute"):
        merge_heads(backbone, [("keys", nn.Linear(8, 2), [0, 1])])
    # A string is the path of an ONNX model (skchain.OnnxModel).
    with pytest.raises(ValueError, match="'resnet' does not exist.*path of an .onnx file"):
        merge_heads("resnet", [good])
    with pytest.raises(TypeError, match="backbone must be a torch.nn.Module"):
        merge_heads(42, [good])
    with pytest.raises(ValueError, match="no submodule named 'fc'.*one of \\['0', '1'\\]"):
        merge_heads((backbone, "fc"), [good])


def test_warns_when_complete_models_have_different_backbones():
    torch.manual_seed(0)
    model_a = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    model_b = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    model_b.load_state_dict(
        model_a.state_dict() | {"2.weight": model_b[2].weight, "2.bias": model_b[2].bias}
    )
    heads = [("a", (model_a, "2"), [0, 1]), ("b", (model_b, "2"), [2, 3, 4])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        merge_heads((model_a, "2"), heads)  # same backbone weights: silent
    model_b.train()
    model_b(torch.randn(16, 4))  # a train-mode pass moves BatchNorm's running stats
    with pytest.warns(UserWarning, match="'1.running_mean'"):
        merge_heads((model_a, "2"), heads)
