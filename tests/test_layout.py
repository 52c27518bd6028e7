"""The package's shape: the path that X walks through the modules.

Following ``X`` through the code's own calls (every call of a skchain function
that receives X or rows of X, in order), the walk moves between modules as
little as it can and rarely climbs back into a module that depends on the one
it leaves (a callback, or a wrapper called again for the same rows). This is
the measure the core's layout is held to; a change that adds a round trip
fails here, and the module it names says where.
"""

import ast
import pathlib
import sys

import numpy as np
import pytest
import torch
from torch import nn

import skchain
from skchain import NeuralTransformer

ROOT = pathlib.Path(skchain.__file__).parent


def _imports():
    """skchain module -> the skchain modules it imports."""
    graph = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__")
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                deps.add(".".join(base + ([node.module] if node.module else [])))
        graph[name] = deps
    return graph


_GRAPH = _imports()


def _depends(a, b, seen=None):
    seen = set() if seen is None else seen
    for dep in _GRAPH.get(a, ()):
        if dep == b:
            return True
        if dep not in seen:
            seen.add(dep)
            if _depends(dep, b, seen):
                return True
    return False


def _rows_of(value, row_shape):
    if isinstance(value, nn.Parameter):
        return False
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.ndim >= 1 and tuple(value.shape[1:]) == row_shape and value.shape[0] > 0
    if isinstance(value, (list, tuple)) and 0 < len(value) < 50:
        return any(_rows_of(v, row_shape) for v in value[:5])
    return False


_TORCH_CALLBACKS = {"__torch_dispatch__", "__torch_function__"}


def walk(call, X):
    """The modules X passes through, in order (repeats within a module merged)."""
    row_shape = tuple(np.asarray(X).shape[1:])
    seen = []

    def profile(frame, event, arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        code = frame.f_code
        if not module.startswith("skchain") or (
            seen and not caller.startswith("skchain")
        ) or code.co_name in _TORCH_CALLBACKS:
            # Not skchain's, or called back by torch (a hook, a dispatch mode:
            # torch calls a mode from whichever frame runs the op).
            return
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        values = [frame.f_locals[n] for n in names if n in frame.f_locals]
        if any(v is X or _rows_of(v, row_shape) for v in values):
            if not seen or seen[-1] != module:
                seen.append(module)

    sys.setprofile(profile)
    try:
        call(X)
    finally:
        sys.setprofile(None)
    return seen


def moves_and_climbs(path):
    moves = len(path) - 1
    climbs = [(a, b) for a, b in zip(path, path[1:]) if _depends(b, a)]
    return moves, climbs


def _module(width):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3)
    )


@pytest.mark.parametrize("width", [16, 1024], ids=["cheap", "worth-caching"])
@pytest.mark.parametrize("cache", ["auto", True, False])
def test_fit_transform_walks_through_few_modules(width, cache, monkeypatch):
    from skchain import _cache

    monkeypatch.setattr(_cache, "_MEMORY", _cache._MemoryStore())  # a first sight
    X = np.random.RandomState(0).rand(50, 8)
    path = walk(NeuralTransformer(_module(width), cache=cache).fit_transform, X)
    moves, climbs = moves_and_climbs(path)
    # (The first module is the one of fit_transform's decorator, which sends a
    # dask array elsewhere.)
    assert "skchain._neural" in path[:3]
    assert any(m.startswith("skchain._inputs") for m in path)  # the input contract
    assert moves <= 14, path
    assert len(climbs) <= 4, climbs


def test_the_measure_sees_round_trips():
    """A walk that goes back and forth is counted as such."""
    path = ["skchain._neural", "skchain._cache", "skchain._inputs", "skchain._cache",
            "skchain._neural"]
    moves, climbs = moves_and_climbs(path)
    assert moves == 4
    assert climbs == [("skchain._inputs", "skchain._cache"), ("skchain._cache", "skchain._neural")]
