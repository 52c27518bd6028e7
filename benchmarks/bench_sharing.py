"""A large pretrained module in a grid search: shared, never copied.

``GridSearchCV(cv=5)`` over six values of ``C`` of a
``NeuralTransformer(pretrained module) -> LogisticRegression`` chain, where the
module holds about 260 MB of float32 weights, against

- the reference: the same search on outputs precomputed once (the module run
  by hand, then ``GridSearchCV`` over ``LogisticRegression`` alone), and
- the behaviour before sharing: the same chain through a ``NeuralTransformer``
  whose ``clone`` deep-copies the module (scikit-learn's default ``clone``).

For each: wall time, copies of the module (counted by the module's
``__deepcopy__``), and the peak resident memory of the process during the
search above its resident memory at the start (``VmHWM`` in
``/proc/self/status``, reset through ``/proc/self/clear_refs`` before each
search; on systems without them, ``ru_maxrss`` growth, which never resets).
RSS rather than tracemalloc: torch allocates tensor storage outside Python's
allocator, so tracemalloc would not see a copied module.

Goal (issue 15): zero copies, and peak memory at most 1.2x the module's size
above the precomputed baseline.

Run: ``python benchmarks/bench_sharing.py [--quick]``.
"""

import argparse
import copy
import gc
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, write_section  # noqa: E402

from skchain import NeuralTransformer  # noqa: E402

GRID = {"clf__C": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}
MB = 1024**2


class BigModule(nn.Module):
    """64 -> wide -> wide -> 32 MLP; its copies are counted."""

    copies = 0

    def __init__(self, wide):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(64, wide), nn.ReLU(), nn.Linear(wide, wide), nn.ReLU()
        )
        self.head = nn.Linear(wide, 32)

    def forward(self, x):
        return self.head(self.body(x))

    def __deepcopy__(self, memo):
        type(self).copies += 1
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new


class CopyingNeuralTransformer(NeuralTransformer):
    """The behaviour before sharing: ``clone`` deep-copies the module."""

    def __sklearn_clone__(self):
        return BaseEstimator.__sklearn_clone__(self)


def module_mb(module):
    return sum(t.numel() * t.element_size() for t in module.state_dict().values()) / MB


class PeakRSS:
    """Peak resident memory of this process inside a block, above its start."""

    def __enter__(self):
        gc.collect()
        self.hwm = _reset_hwm()
        self.start = _status_kb("VmRSS") if self.hwm else _maxrss_kb()
        return self

    def __exit__(self, *exc):
        peak = _status_kb("VmHWM") if self.hwm else _maxrss_kb()
        self.mb = max(0, peak - self.start) / 1024
        return False


def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _maxrss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def clear_output_cache():
    """Empty the in-memory output cache, so every search starts cold."""
    from skchain import _cache

    store = getattr(_cache, "_MEMORY", None)
    if store is not None:
        store.clear()


def run(name, make_search, X, y, module):
    clear_output_cache()
    BigModule.copies = 0
    with PeakRSS() as peak:
        start = time.perf_counter()
        search = make_search().fit(X, y)
        seconds = time.perf_counter() - start
    step = search.best_estimator_[0] if isinstance(search.best_estimator_, Pipeline) else None
    shared = "-" if step is None else ("yes" if step.module_ is module else "no")
    row = {
        "setup": name,
        "seconds": f"{seconds:.2f}",
        "module copies": BigModule.copies,
        "best estimator runs the user's module": shared,
        "peak RSS above start MB": f"{peak.mb:.0f}",
    }
    return row, seconds, peak.mb, search.cv_results_["mean_test_score"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    wide, n_rows = (1024, 300) if args.quick else (8192, 600)
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X[:n_rows]).astype(np.float32)
    y = y[:n_rows]
    torch.manual_seed(0)
    module = BigModule(wide).eval()
    size = module_mb(module)
    gc.collect()

    def precomputed():
        # The reference: the module run by hand once, the search on its outputs.
        class Search:
            def fit(self, X, y):
                with torch.no_grad():
                    Z = module(torch.from_numpy(X)).numpy()
                self.inner = GridSearchCV(
                    LogisticRegression(max_iter=500), {"C": GRID["clf__C"]}, cv=5
                ).fit(Z, y)
                self.best_estimator_ = self.inner.best_estimator_
                self.cv_results_ = self.inner.cv_results_
                return self

        return Search()

    def chain(cls):
        pipe = Pipeline([
            ("nn", cls(module, cache=True)),
            ("clf", LogisticRegression(max_iter=500)),
        ])
        return lambda: GridSearchCV(pipe, GRID, cv=5)

    rows = []
    base_row, base_s, base_mb, base_scores = run("precomputed outputs (reference)",
                                                 precomputed, X, y, module)
    rows.append(base_row)
    row, shared_s, shared_mb, scores = run("NeuralTransformer (shares the module)",
                                           chain(NeuralTransformer), X, y, module)
    rows.append(row)
    shared_copies = BigModule.copies
    np.testing.assert_allclose(scores, base_scores, rtol=1e-4)
    row, copy_s, copy_mb, _ = run("deep copy per clone (before)",
                                  chain(CopyingNeuralTransformer), X, y, module)
    rows.append(row)
    for r, s in zip(rows, (base_s, shared_s, copy_s), strict=True):
        r["time ratio"] = f"{s / base_s:.2f}"
    extra = shared_mb - base_mb
    met = shared_copies == 0 and extra <= 1.2 * size
    body = "\n\n".join([
        f"Module: {size:.0f} MB of float32 weights (64-{wide}-{wide}-32 MLP); "
        f"{n_rows} digits rows, `GridSearchCV(cv=5)` over {len(GRID['clf__C'])} values "
        "of C, in-memory output cache (`cache=True`), sequential (`n_jobs=None`). "
        "Peak memory: resident set size (VmHWM, reset before each search) above the "
        "RSS at its start; the module itself is allocated before every search. "
        "Machine shared with other agents' jobs while this ran: times are indicative, "
        "the ratios and copy counts are the claims.",
        markdown_table(rows, ["setup", "seconds", "time ratio", "module copies",
                              "best estimator runs the user's module",
                              "peak RSS above start MB"]),
        f"Goal: zero copies and peak memory at most 1.2x the module "
        f"({1.2 * size:.0f} MB) above the precomputed baseline: "
        f"{shared_copies} copies, {extra:+.0f} MB -- {'met' if met else 'NOT met'}.",
    ])
    if args.quick:
        print(body)
    else:
        write_section("bench_sharing", body)


if __name__ == "__main__":
    main()
