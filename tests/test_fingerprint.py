import functools
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone
from torch import nn

from skchain import NeuralTransformer, _fingerprint
from skchain._fingerprint import (
    callable_id,
    hash_weights,
    model_fingerprint,
    weights_digest,
)


def pretrained(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 3))


# -- the weights -------------------------------------------------------------------


def _sgd_step(module):
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    module(torch.randn(4, 30)).sum().backward()
    opt.step()


def _adam_step(module):
    opt = torch.optim.Adam(module.parameters(), lr=0.1)
    module(torch.randn(4, 30)).sum().backward()
    opt.step()


def _load_other(module):
    module.load_state_dict(pretrained(seed=1).state_dict())


def _no_grad_add(module):
    with torch.no_grad():
        module[0].weight.add_(1e-3)


def _data_mul(module):
    # Writes through .data bypass autograd's version counter.
    module[2].weight.data.mul_(2.0)


def _numpy_write(module):
    module[2].bias.detach().numpy()[:] = 0.5


def _replace_parameter(module):
    module[2].weight = nn.Parameter(module[2].weight.detach() + 1.0)


def _init_normal(module):
    nn.init.normal_(module[0].weight)


def _single_element(module):
    with torch.no_grad():
        module[0].weight[3, 7] += 1.0


def _to_double(module):
    module.double()


@pytest.mark.parametrize(
    "write",
    [
        _sgd_step,
        _adam_step,
        _load_other,
        _no_grad_add,
        _data_mul,
        _numpy_write,
        _replace_parameter,
        _init_normal,
        _single_element,
        _to_double,
    ],
)
def test_weights_digest_sees_every_kind_of_write(write):
    module = pretrained()
    before = weights_digest(module)
    write(module)
    after = weights_digest(module)
    assert after != before
    assert after == hash_weights(module)  # the memo never lags the weights


def test_the_documented_gap():
    """What the memo does not see, as the user guide says: a write that bypasses
    the version counter and changes only unsampled values."""
    module = pretrained()
    before = weights_digest(module)
    module[0].weight.data[0, 1] += 1.0  # not one of the 16 sampled values
    assert weights_digest(module) == before != hash_weights(module)
    with torch.no_grad():  # the same write through torch is seen
        module[0].weight[0, 1] += 1.0
    assert weights_digest(module) == hash_weights(module) != before


def test_weights_digest_sees_buffers():
    module = nn.Sequential(nn.Linear(30, 4), nn.BatchNorm1d(4))
    before = weights_digest(module)
    module.train()(torch.randn(8, 30))  # updates running statistics only
    assert weights_digest(module) != before


def test_a_shared_module_is_hashed_once(monkeypatch):
    """Clones that share one module (and every fit and transform of them)
    fingerprint it from the memo: its weights are hashed once."""
    calls = []
    monkeypatch.setattr(_fingerprint, "hash_weights", lambda m: calls.append(1) or hash_weights(m))
    module = pretrained()
    X = np.random.RandomState(0).rand(20, 30).astype(np.float32)
    fingerprints = {model_fingerprint(module, "logits") for _ in range(10)}
    assert len(fingerprints) == 1 and len(calls) == 1
    nt = NeuralTransformer(module, output="logits", cache=True)
    for _ in range(3):
        fitted = clone(nt).fit(X)
        fitted.transform(X)
        if fitted.module_ is module:  # shared, not copied: no new hash
            assert len(calls) == 1
    _no_grad_add(module)
    weights_digest(module)
    assert len(calls) >= 2


def test_the_memo_does_not_keep_modules_alive():
    import gc
    import weakref

    module = pretrained()
    weights_digest(module)
    ref = weakref.ref(module)
    del module
    gc.collect()
    assert ref() is None


def test_fingerprint_covers_structure_and_output_description():
    a, b = pretrained(), pretrained()
    assert model_fingerprint(a, "proba") == model_fingerprint(b, "proba")
    assert model_fingerprint(a, "proba") != model_fingerprint(a, "logits")
    b[1] = nn.Tanh()  # same weights, another activation
    assert model_fingerprint(a, "proba") != model_fingerprint(b, "proba")


def test_callable_id_is_stable_and_tells_bodies_apart():
    softmax = functools.partial(torch.softmax, dim=-1)
    assert callable_id(softmax) == callable_id(functools.partial(torch.softmax, dim=-1))
    assert "0x" not in repr(callable_id(softmax))
    assert callable_id(softmax) != callable_id(functools.partial(torch.softmax, dim=0))
    assert callable_id(lambda t: t * 2) != callable_id(lambda t: t * 3)


def test_the_memo_sees_structure_changes_of_one_module_object():
    """The memo keeps the repr while each submodule keeps its identity, class,
    children and ``extra_repr()``; changing any of them gives the fingerprint
    a fresh repr, the same as a module never seen."""
    module = pretrained()
    before = model_fingerprint(module, "logits")
    module[1] = nn.LeakyReLU(0.1)  # another activation, same weights
    swapped = model_fingerprint(module, "logits")
    assert swapped != before
    module[1].negative_slope = 0.3  # an attribute that repr shows
    changed = model_fingerprint(module, "logits")
    assert changed != swapped
    _fingerprint._WEIGHTS_MEMO.clear()
    assert model_fingerprint(module, "logits") == changed


def test_the_memo_probes_through_views_of_the_weights():
    """Writes that bypass the version counter are seen at every call, also
    after many calls that found nothing changed."""
    module = pretrained()
    before = weights_digest(module)
    for _ in range(3):
        assert weights_digest(module) == before
    module[0].bias.detach().numpy()[:] += 1.0
    assert weights_digest(module) == hash_weights(module) != before
