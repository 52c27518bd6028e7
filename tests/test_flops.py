"""The "auto" rule's FLOP count (``skchain._flops``)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from skchain._flops import _CountFlops, _CountFlopsDynamo, row_flops


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5)).eval()


def _count(module):
    with torch.inference_mode():
        return row_flops(module, torch.ones(1, 30))[1]


def test_judging_a_model_imports_neither_dynamo_nor_sympy():
    # torch's dispatch-mode wrapper would import both on the first count:
    # ~70 MB and ~1 s in every worker process that judges a model.
    code = (
        "import sys, torch\n"
        "from torch import nn\n"
        "import numpy as np\n"
        "from skchain import NeuralTransformer\n"
        "torch.manual_seed(0)\n"
        "net = nn.Sequential(nn.Linear(30, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 5))\n"
        "X = np.random.RandomState(0).rand(20, 30).astype('float32')\n"
        "NeuralTransformer(net, cache='auto').fit_transform(X)\n"
        "from skchain import _cache\n"
        "assert _cache._MEMORY.nbytes > 0, 'the model was not judged worth caching'\n"
        "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", run.stdout


def test_the_count_is_two_matrix_products():
    assert _count(_mlp()) == 2 * (30 * 20 + 20 * 5)


def test_a_process_with_dynamo_counts_through_its_wrapper(monkeypatch):
    pytest.importorskip("torch._dynamo")
    module = _mlp()
    seen = []
    enter = _CountFlops.__enter__
    monkeypatch.setattr(_CountFlops, "__enter__", lambda self: seen.append(type(self)) or enter(self))
    compiled = torch.compile(module, backend="eager")
    assert _count(module) == 2 * (30 * 20 + 20 * 5)
    assert seen[-1] is _CountFlopsDynamo
    with torch.inference_mode():
        expected = module(torch.ones(1, 30))
        out, flops = row_flops(compiled, torch.ones(1, 30))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5)
    assert flops == 2 * (30 * 20 + 20 * 5)
