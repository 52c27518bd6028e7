"""Dask in, dask out: throughput against a hand-written ``map_blocks``, and peak memory.

1. **Throughput.** Embedding ``--rows`` rows of 64 float32 features (a dask
   array of 65,536-row blocks, generated on the workers) with a frozen MLP
   64-512-512-64 (0.66 MFLOP per row), summed on the workers so that only
   the 64 sums come back: ``NeuralTransformer(module, cache=False).transform(X)``
   against the loop a user would write by hand,
   ``X.map_blocks(lambda b: module(torch.from_numpy(b)).numpy())`` under
   ``torch.inference_mode`` (one forward pass per block; skchain's default
   ``batch_size`` cuts a block into passes of 1,024 rows), on a ``LocalCluster`` of 1, 2 (and 4) worker
   processes with one thread each. Median of ``--repeat`` runs, the two
   interleaved; the ratio is skchain's rows/s over the hand loop's.
2. **Peak memory.** ``NeuralTransformer.transform`` of 1M, 4M and 16M rows
   (256 MB, 1 GB, 4 GB of float32) held as a dask array, summed, on the
   synchronous scheduler, each size in a fresh process: its peak RSS
   (``ru_maxrss``) against the process's RSS before the call. With
   ``cache=False`` and with the default ``cache="auto"`` (whose in-memory
   store is bounded at 1 GiB per process).

3. **A search on a cluster.** ``ChainSearchCV`` over 24 candidates (the
   frozen MLP above, then ``RidgeClassifier`` with 24 ``alpha``), ``cv=3``,
   ``refit=False``, on a 2-worker ``LocalCluster`` (joblib's dask backend)
   against dask-ml's ``GridSearchCV`` on the same cluster and chain (which
   shares the frozen step between candidates within a fold). Both use the
   default ``cache="auto"``; each run gets a fresh cluster (the workers'
   caches would otherwise serve the second method), started before the
   clock. Also scikit-learn's own ``GridSearchCV`` on the same cluster, its
   ``NeuralTransformer`` given a fresh disk cache: its (candidate, fold)
   tasks claim the rows they compute (``skchain._claims``), so each row runs
   once. Median of ``--repeat`` runs; all must give the same test score on
   every split (dask-ml averages them its own way: the means may differ in
   the last bits).

Run: ``python benchmarks/bench_dask.py [--quick] [--print] [--workers 1 2 4]
[--sizes 1 4 16] [--rows N] [--search-rows N] [--caches False auto]
[--only throughput|memory|search]``. ``--print`` prints the section instead of
writing it to RESULTS.md (``--quick`` never writes).
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))  # the skchain of this checkout
from _common import markdown_table, write_section  # noqa: E402

FEATURES = 64
BLOCK = 65_536


def make_module():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, FEATURES),
    ).eval()


def rows(n, seed=0):
    """``n`` x 64 float32 rows as a lazy dask array: each block is generated
    where it is computed, so no process ever holds the whole array."""
    import dask.array as da

    return da.random.RandomState(seed).standard_normal(
        (n, FEATURES), chunks=(BLOCK, FEATURES)
    ).astype(np.float32)


def _hand_block(block, module):
    with torch.inference_mode():
        return module(torch.from_numpy(np.ascontiguousarray(block))).numpy()


def hand_written(X, module):
    return X.map_blocks(_hand_block, module=module, dtype=np.float32,
                        chunks=(X.chunks[0], (FEATURES,)))


# -- 1. throughput ----------------------------------------------------------------


def bench_throughput(n_rows, workers, repeat):
    from dask.distributed import Client, LocalCluster

    from skchain import NeuralTransformer

    module = make_module()
    # The default batch_size (1,024 rows per forward pass): what a user gets.
    # At batch_size=BLOCK (one pass per block, as the hand loop) the two ran
    # at the same speed in one process; smaller batches stay in the CPU's cache.
    nt = NeuralTransformer(module, cache=False).fit(np.zeros((2, FEATURES), np.float32))
    table = []
    for n_workers in workers:
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                          host="127.0.0.1", dashboard_address=None) as cluster, \
                Client(cluster) as client:
            X = rows(n_rows)
            runs = {"skchain": [], "hand": []}
            exact = None
            for i in range(repeat + 1):  # the first round warms the workers up
                methods = [("skchain", lambda: nt.transform(X)),
                           ("hand", lambda: hand_written(X, module))]
                # The order flips every round: drift on a shared machine hits both.
                for name, build in methods if i % 2 == 0 else methods[::-1]:
                    start = time.perf_counter()
                    total = client.compute(build().sum(axis=0)).result()
                    if i:
                        runs[name].append(time.perf_counter() - start)
                    if exact is None:
                        exact = total
                    else:
                        np.testing.assert_allclose(total, exact, rtol=1e-3, atol=1e-2)
        skchain_t, hand_t = (statistics.median(runs[k]) for k in ("skchain", "hand"))
        table.append({
            "workers": n_workers,
            "rows": f"{n_rows:,}",
            "skchain rows/s": f"{n_rows / skchain_t:,.0f}",
            "hand map_blocks rows/s": f"{n_rows / hand_t:,.0f}",
            "ratio": f"{hand_t / skchain_t:.2f}x",
        })
        print(table[-1], flush=True)
    return table


# -- 2. peak memory -----------------------------------------------------------------


def _rss_child(n_rows, cache):
    """In a fresh process: peak RSS of one transform of ``n_rows`` dask rows."""
    import dask

    from skchain import NeuralTransformer

    torch.set_num_threads(1)
    module = make_module()
    nt = NeuralTransformer(module, cache=cache, batch_size=4096).fit(
        np.zeros((2, FEATURES), np.float32))
    X = rows(n_rows)
    before = _rss_mb()
    start = time.perf_counter()
    with dask.config.set(scheduler="synchronous"):
        total = nt.transform(X).sum(axis=0).compute()
    seconds = time.perf_counter() - start
    assert np.isfinite(total).all()
    return {"before_mb": before, "peak_mb": _peak_mb(), "seconds": seconds}


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def bench_memory(sizes, caches):
    table = []
    for cache in caches:
        for millions in sizes:
            n = int(millions * 1_000_000)
            out = subprocess.run(
                [sys.executable, __file__, "--rss-child", str(n), cache],
                capture_output=True, text=True, check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            table.append({
                "cache": cache,
                "rows": f"{n:,}",
                "data (float32)": f"{n * FEATURES * 4 / 2**20:,.0f} MB",
                "RSS before": f"{result['before_mb']:,.0f} MB",
                "peak RSS": f"{result['peak_mb']:,.0f} MB",
                "time": f"{result['seconds']:.1f} s",
            })
            print(table[-1], flush=True)
    return table


# -- 3. a search on a cluster ----------------------------------------------------------


ALPHAS = np.logspace(-3, 3, 24)


def _search_data(n_rows):
    rng = np.random.RandomState(0)
    X = rng.standard_normal((n_rows, FEATURES)).astype(np.float32)
    # A label the embedding keeps: the sign of a projection, 10% flipped.
    y = (X @ rng.standard_normal(FEATURES) > 0).astype(int)
    flip = rng.rand(n_rows) < 0.1
    y[flip] = 1 - y[flip]
    return X, y


def _search_pipe():
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline

    from skchain import NeuralTransformer

    return make_pipeline(NeuralTransformer(make_module()), RidgeClassifier())


def _run_search(method, X, y, n_workers):
    import joblib
    from dask.distributed import Client, LocalCluster
    from sklearn.model_selection import StratifiedKFold

    from skchain import ChainSearchCV

    grid = {"ridgeclassifier__alpha": list(ALPHAS)}
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        # The workers import torch and skchain before the clock starts.
        client.run(lambda: __import__("skchain") and None)
        start = time.perf_counter()
        if method == "ChainSearchCV":
            with joblib.parallel_backend("dask"):
                search = ChainSearchCV(_search_pipe(), grid, cv=cv, n_jobs=n_workers,
                                       refit=False).fit(X, y)
        elif method == "GridSearchCV + disk cache":
            # scikit-learn's own search; the tasks share a fresh disk cache and
            # claim the rows they compute, so each row runs once.
            from sklearn.model_selection import GridSearchCV

            folder = tempfile.mkdtemp(prefix="bench_dask_cache_")
            try:
                pipe = _search_pipe().set_params(neuraltransformer__cache=folder)
                with joblib.parallel_backend("dask"):
                    search = GridSearchCV(pipe, grid, cv=cv, n_jobs=n_workers,
                                          refit=False).fit(X, y)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        else:
            from dask_ml.model_selection import GridSearchCV as DaskGridSearchCV

            search = DaskGridSearchCV(_search_pipe(), grid, cv=cv, refit=False,
                                      scheduler=client).fit(X, y)
        seconds = time.perf_counter() - start
    results = search.cv_results_
    # Each split's score (dask-ml averages them its own way: the means may
    # differ in the last bits while every split agrees).
    return seconds, np.array([results[f"split{i}_test_score"] for i in range(3)])


def bench_search(n_rows, repeat, n_workers=2):
    X, y = _search_data(n_rows)
    methods = ["ChainSearchCV", "dask-ml GridSearchCV", "GridSearchCV + disk cache"]
    runs = {m: [] for m in methods}
    scores = {}
    for _ in range(repeat):
        for method in methods:  # interleaved
            seconds, means = _run_search(method, X, y, n_workers)
            runs[method].append(seconds)
            scores[method] = means
            print(method, f"{seconds:.2f} s", flush=True)
    chain, dask_ml, grid = (statistics.median(runs[m]) for m in methods)
    diff = max(float(np.max(np.abs(scores[methods[0]] - scores[m]))) for m in methods[1:])
    table = [{
        "rows": f"{n_rows:,}",
        "candidates x folds": f"{len(ALPHAS)} x 3",
        "workers": n_workers,
        "ChainSearchCV": f"{chain:.2f} s",
        "dask-ml GridSearchCV": f"{dask_ml:.2f} s",
        "speed-up": f"{dask_ml / chain:.2f}x",
        "GridSearchCV + disk cache": f"{grid:.2f} s",
        "same split scores": "yes" if diff == 0 else f"no (max diff {diff:.2g})",
    }]
    print(table[-1], flush=True)
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--print", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--workers", type=int, nargs="+", default=None)
    parser.add_argument("--sizes", type=float, nargs="+", default=None,
                        help="millions of rows for the memory part (default 1 4 16)")
    parser.add_argument("--rows", type=int, default=None, help="rows for the throughput part")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--search-rows", type=int, default=None,
                        help="rows for the search part (default 200,000)")
    parser.add_argument("--caches", nargs="+", default=["False", "auto"],
                        help="cache values for the memory part")
    parser.add_argument("--only", choices=["throughput", "memory", "search"], default=None)
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        n, cache = args.rss_child
        cache = {"False": False, "True": True}.get(cache, cache)
        print(json.dumps(_rss_child(int(n), cache)))
        return
    workers = args.workers or ([1, 2] if args.quick else [1, 2, 4])
    n_rows = args.rows or (200_000 if args.quick else 1_000_000)
    repeat = args.repeat or (1 if args.quick else 3)
    sizes = args.sizes or ([0.5] if args.quick else [1, 4, 16])
    parts = []
    if args.only in (None, "throughput"):
        table = bench_throughput(n_rows, workers, repeat)
        parts.append(
            "Throughput: a frozen 64-512-512-64 MLP over dask rows on a LocalCluster "
            "(one thread per worker process), skchain's lazy transform against a "
            "hand-written `map_blocks` loop (ratio > 1: skchain faster).\n\n"
            + markdown_table(table, list(table[0]))
        )
    if args.only in (None, "memory"):
        table = bench_memory(sizes, args.caches)
        parts.append(
            "Peak memory: one transform over dask rows (65,536-row blocks, summed), "
            "synchronous scheduler, a fresh process per row count.\n\n"
            + markdown_table(table, list(table[0]))
        )
    if args.only in (None, "search"):
        table = bench_search(args.search_rows or (20_000 if args.quick else 200_000), repeat)
        parts.append(
            "A search on a 2-worker LocalCluster: ChainSearchCV (frozen MLP, then "
            "RidgeClassifier over 24 alphas, cv=3, refit=False) against dask-ml's "
            "GridSearchCV on the same chain and cluster (goal >= 1.5x), and "
            "scikit-learn's GridSearchCV with a fresh shared disk cache.\n\n"
            + markdown_table(table, list(table[0]))
        )
    body = "\n\n".join(parts)
    if args.quick or args.print:
        print(body)
    else:
        write_section("bench_dask", body)


if __name__ == "__main__":
    main()
