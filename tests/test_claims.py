"""Claims on rows being computed for a disk cache (skchain/_claims.py): a
second process or thread that misses the same rows waits for their block
instead of computing them again; dead claimers leave nothing behind."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from torch import nn

from skchain import NeuralTransformer, _cache, _cache_trust, _claims, _disk
from skchain._cache import _MemoryStore

fcntl = pytest.importorskip("fcntl")

NS = "0" * 32


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch, tmp_path):
    monkeypatch.setattr(_cache, "_MEMORY", _MemoryStore())
    monkeypatch.setattr(_disk, "_DISKS", {})
    monkeypatch.setattr(_cache_trust, "_KEYS", {})
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv(_cache_trust.KEY_FILE_ENV, raising=False)


def keys(start, stop):
    return [i.to_bytes(16, "little") for i in range(start, stop)]


def claim_files(root):
    folder = os.path.join(root, "claims", "m" + NS)
    return sorted(name for name in os.listdir(folder) if name.endswith(".claim"))


def test_a_second_claim_gets_only_the_rows_no_one_claimed(tmp_path):
    first = _claims.Claims(str(tmp_path)).claim(NS, keys(0, 10))
    assert not first.others.any()
    # Another process's view of the same folder (flock is per open file).
    second = _claims.Claims(str(tmp_path)).claim(NS, keys(5, 15))
    np.testing.assert_array_equal(second.others, [True] * 5 + [False] * 5)
    # Rows that both hold are claimed by no third one.
    third = _claims.Claims(str(tmp_path)).claim(NS, keys(0, 20))
    np.testing.assert_array_equal(third.others, [True] * 15 + [False] * 5)
    # A claim of rows no one computes waits for nothing.
    other = _claims.Claims(str(tmp_path)).claim("1" * 32, keys(0, 10))
    assert not other.others.any() and not other._held
    for claim in (first, second, third, other):
        claim.close()
    assert claim_files(tmp_path) == []


def test_the_waiter_goes_on_once_the_claim_is_released(tmp_path):
    first = _claims.Claims(str(tmp_path)).claim(NS, keys(0, 10))
    (name,) = claim_files(tmp_path)
    second = _claims.Claims(str(tmp_path)).claim(NS, keys(0, 10))
    assert second.others.all() and len(second._held) == 1
    # The claim is held: no one can take it, so waiting blocks.
    path = os.path.join(tmp_path, "claims", "m" + NS, name)
    with open(path, "rb") as probe:
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    block = tmp_path / "block"
    seen = []

    def wait():
        second.wait()
        seen.append(block.exists())

    waiter = threading.Thread(target=wait)
    waiter.start()
    block.write_text("rows")  # what the claimer writes before it releases
    first.release()
    waiter.join(30)
    assert seen == [True]
    assert second._held == [] and claim_files(tmp_path) == []


def test_a_claim_of_a_process_that_died_is_removed(tmp_path):
    code = (
        "import os, sys\n"
        "from skchain._claims import Claims\n"
        f"claim = Claims({str(tmp_path)!r}).claim({NS!r}, "
        "[i.to_bytes(16, 'little') for i in range(10)])\n"
        "assert not claim.others.any()\n"
        "os._exit(0)  # no release: killed in the middle of its rows\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert len(claim_files(tmp_path)) == 1  # left behind
    claim = _claims.Claims(str(tmp_path)).claim(NS, keys(0, 10))
    assert not claim.others.any() and not claim._held
    assert len(claim_files(tmp_path)) == 1  # only this one's
    claim.release()
    assert claim_files(tmp_path) == []


@pytest.mark.parametrize("content", [b"", b"garbage", _claims._MAGIC + b"\x08\0\0\0" + b"x" * 8])
def test_a_damaged_or_foreign_claim_is_not_waited_for(tmp_path, content):
    folder = tmp_path / "claims" / ("m" + NS)
    folder.mkdir(parents=True)
    with open(folder / "planted.claim", "wb") as handle:
        handle.write(content)
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_EX)  # held by a live process
        claim = _claims.Claims(str(tmp_path)).claim(NS, keys(0, 10))
        assert not claim.others.any() and not claim._held
        claim.close()


def test_without_fcntl_nothing_is_claimed(tmp_path, monkeypatch):
    monkeypatch.setattr(_claims, "fcntl", None)
    claim = _claims.Claims(str(tmp_path)).claim(NS, keys(0, 10))
    assert not claim.others.any()
    claim.wait()
    claim.close()
    assert not (tmp_path / "claims").exists()


def test_a_folder_that_cannot_be_made_claims_nothing(tmp_path):
    (tmp_path / "claims").write_text("a file where the folder goes")
    claim = _claims.Claims(str(tmp_path)).claim(NS, keys(0, 10))
    assert not claim.others.any()
    claim.close()


class Gate:
    """What the two copies of a module share: the rows of each forward pass,
    and the events that order the two threads."""

    def __init__(self, fail):
        self.rows = []
        self.entered = threading.Event()
        self.go = threading.Event()
        self.second_ran = threading.Event()
        self.fail = fail


class Gated(nn.Module):
    """A linear layer whose pass in the thread named "first" waits for
    ``gate.go`` while holding its claim (then fails if ``gate.fail``)."""

    def __init__(self, gate):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(8, 3)
        self.gate = gate

    def forward(self, x):
        gate = self.gate
        gate.rows.append(x.shape[0])
        name = threading.current_thread().name
        if name == "first":
            gate.entered.set()
            assert gate.go.wait(60)
            if gate.fail:
                raise RuntimeError("the first claimer failed")
        out = self.linear(x)
        if name == "second":
            gate.second_ran.set()
        return out


@pytest.mark.parametrize("failing_first", [False, True])
def test_two_transforms_missing_the_same_rows_compute_each_once(tmp_path, failing_first):
    X = np.random.RandomState(0).normal(size=(300, 8)).astype(np.float32)
    gate = Gate(failing_first)
    expected = NeuralTransformer(Gated(gate), cache=False, batch_size=1000).fit(X).transform(X)
    # Two copies of one model (the same weights: the same rows in the cache),
    # as two processes hold; one module object would serialise the threads.
    other = np.ones((2, 8), dtype=np.float32)  # fit runs (and caches) these
    nts = {name: NeuralTransformer(Gated(gate), cache=tmp_path / "cache", batch_size=1000)
           .fit(other) for name in ("first", "second")}
    gate.rows.clear()
    results, errors = {}, {}

    def run(name, rows):
        try:
            results[name] = nts[name].transform(X[rows])
        except Exception as exc:
            errors[name] = exc

    first = threading.Thread(target=run, name="first", args=("first", slice(0, 200)))
    second = threading.Thread(target=run, name="second", args=("second", slice(100, 300)))
    first.start()
    assert gate.entered.wait(60)  # the first holds its claim on rows 0-199
    second.start()
    assert gate.second_ran.wait(60)  # rows 200-299, no one else's
    gate.go.set()
    first.join(60)
    second.join(60)
    np.testing.assert_allclose(results["second"], expected[100:], rtol=1e-5, atol=1e-6)
    if failing_first:
        # Its block never came: the second computed rows 100-199 once it had waited.
        assert isinstance(errors.pop("first"), RuntimeError) and not errors
        assert gate.rows == [200, 100, 100]
    else:
        assert not errors
        np.testing.assert_allclose(results["first"], expected[:200], rtol=1e-5, atol=1e-6)
        assert gate.rows == [200, 100]  # each row once
