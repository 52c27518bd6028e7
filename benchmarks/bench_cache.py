"""One forward pass per row: the frozen-output cache, what it saves and costs.

1. ``GridSearchCV(cv=5)`` over six values of ``C`` of a
   ``TextEmbedder -> LogisticRegression`` pipeline on the bundled topic
   sentences: no cache (the reference), scikit-learn's
   ``Pipeline(memory=...)``, skchain's in-memory cache, and its on-disk cache
   cold (empty folder) and warm (a new process would find every row on disk).
   Rows encoded are counted with a hook on the model.
2. What the cache costs: fingerprinting the 90 MB model (full hash against the
   memoised check); row keys against hashlib called per row; a first pass over
   new rows (every row a miss) and a second one (every row a hit) against no
   cache in the same process, for the wide net 512-1024-1024-10 (logits and
   the 1024-wide embedding), and what ``cache="auto"`` decides for it; a tiny
   MLP whose rows are cheaper to compute than to look up.

Run: ``python benchmarks/bench_cache.py [--quick] [--only search|costs]
[--load "what else was running"]``.
"""

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from joblib import Memory
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, markdown_table, write_section  # noqa: E402

from skchain import NeuralTransformer, TextEmbedder, _cache, _disk, _fingerprint  # noqa: E402
from skchain.datasets import load_topics  # noqa: E402
from skchain._inputs import kind_of  # noqa: E402

GRID = {"clf__C": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}


class EncodedRows:
    def __init__(self, model):
        self.rows = 0
        self._handle = model[0].register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.rows += args[0]["input_ids"].shape[0]


def fresh_process():
    """Empty the in-process stores, as a new process starts."""
    _cache._MEMORY.clear()
    _disk._DISKS.clear()


def search(texts, labels, cache, memory=None):
    pipe = Pipeline(
        [("embed", TextEmbedder(cache=cache)), ("clf", LogisticRegression(max_iter=1000))],
        memory=memory,
    )
    return GridSearchCV(pipe, GRID, cv=5).fit(texts, labels)


def bench_search(texts, labels, repeat):
    model = TextEmbedder().fit(texts[:1]).model_  # shared by every embedder below
    counter = EncodedRows(model)
    rows, scores = [], {}

    def run(name, make, prepare=fresh_process):
        times, counts = [], []
        for _ in range(repeat):
            prepare()
            counter.rows = 0
            start = time.perf_counter()
            result = make()
            times.append(time.perf_counter() - start)
            counts.append(counter.rows)
        scores[name] = result.cv_results_["mean_test_score"]
        rows.append({"setup": name, "seconds": min(times), "rows encoded": counts[-1]})

    run("no cache (cache=False)", lambda: search(texts, labels, False))
    with tempfile.TemporaryDirectory() as folder:
        run(
            "Pipeline(memory=Memory(folder)), cache=False",
            lambda: search(texts, labels, False, memory=Memory(folder, verbose=0)),
            prepare=lambda: (fresh_process(), Memory(folder, verbose=0).clear(warn=False)),
        )
    run('skchain in memory (cache="auto", the default)', lambda: search(texts, labels, "auto"))
    with tempfile.TemporaryDirectory() as folder:
        run(
            "skchain on disk, cold (empty folder)",
            lambda: search(texts, labels, folder),
            prepare=lambda: (fresh_process(), Memory(folder, verbose=0).clear(warn=False)),
        )
        run(
            "skchain on disk, warm (new process, rows on disk)",
            lambda: search(texts, labels, folder),
        )
    reference = rows[0]["seconds"]
    for row in rows:
        row["ratio to no cache"] = f"{row['seconds'] / reference:.3f}"
        row["speed-up"] = f"{reference / row['seconds']:.1f}x"
        row["seconds"] = f"{row['seconds']:.2f}"
    for name, value in scores.items():
        np.testing.assert_allclose(value, scores[rows[0]["setup"]], rtol=1e-6, err_msg=name)
    return rows, model


def bench_fingerprint(model, repeat):
    full = best_of(lambda: _fingerprint.hash_weights(model), repeat=repeat)
    _fingerprint.weights_digest(model)
    memo = best_of(lambda: _fingerprint.weights_digest(model), repeat=repeat, number=20)
    n_bytes = sum(t.numel() * t.element_size() for _, t in _fingerprint.named_tensors(model))
    return [
        {
            "step": f"hash all weights ({n_bytes / 1e6:.0f} MB, SHA-256)",
            "ms": f"{full * 1e3:.1f}",
        },
        {
            "step": "memoised check (storage, version counters, sampled values)",
            "ms": f"{memo * 1e3:.2f}",
        },
    ]


def bench_row_keys(n_rows, repeat):
    """Microseconds per row of the row keys against hashlib, one call per row."""
    rng = np.random.RandomState(0)
    rows = []
    for width in (64, 512, 1024):
        X = rng.rand(n_rows, width).astype(np.float32)
        candidates = {
            "skchain keys (float64 product)": lambda X=X: kind_of(X).keys(),
            "blake2b-128 per row": lambda X=X: [
                hashlib.blake2b(r, digest_size=16).digest() for r in X
            ],
            "sha256 per row": lambda X=X: [hashlib.sha256(r).digest() for r in X],
        }
        for name, fn in candidates.items():
            seconds = best_of(fn, repeat=repeat)
            rows.append(
                {
                    "row": f"{width} float32",
                    "key": name,
                    "us per row": f"{seconds / n_rows * 1e6:.2f}",
                }
            )
    return rows


def wide_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    ).eval()


def bench_miss_and_hit(n_rows, rounds):
    """A first pass over new rows (all misses) and a repeated pass (all hits)
    against the same transform without a cache, in interleaved rounds."""
    module = wide_net()
    X = np.random.RandomState(0).rand(n_rows, 512).astype(np.float32)
    rows = []
    for output in ("logits", "embedding"):
        plain = NeuralTransformer(module, output=output, cache=False).fit(X[:2])
        cached = NeuralTransformer(module, output=output, cache=True).fit(X[:2])
        auto = NeuralTransformer(module, output=output).fit(X[:2])
        times = {"none": [], "miss": [], "hit": []}
        for _ in range(rounds):
            start = time.perf_counter()
            expected = plain.transform(X)
            times["none"].append(time.perf_counter() - start)
            fresh_process()
            start = time.perf_counter()
            out = cached.transform(X)
            times["miss"].append(time.perf_counter() - start)
            start = time.perf_counter()
            again = cached.transform(X)
            times["hit"].append(time.perf_counter() - start)
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(again, out)
        fresh_process()
        auto.transform(X[:1])
        decision = list(_cache._MEMORY._decisions.values())
        none, miss, hit = (statistics.median(times[k]) for k in ("none", "miss", "hit"))
        # Ratios within a round (the three passes run moments apart), then
        # their median: steadier than a ratio of medians on a shared machine.
        none_t, miss_t, hit_t = times["none"], times["miss"], times["hit"]
        miss_ratio = statistics.median(m / n for m, n in zip(miss_t, none_t, strict=True))
        hit_speedup = statistics.median(n / h for n, h in zip(none_t, hit_t, strict=True))
        rows.append(
            {
                "output": f"{output} ({expected.shape[1]} columns)",
                "no cache ms": f"{none * 1e3:.0f}",
                "miss ms": f"{miss * 1e3:.0f}",
                "miss overhead": f"{(miss_ratio - 1) * 100:+.1f}%",
                "hit ms": f"{hit * 1e3:.0f}",
                "hit speed-up": f"{hit_speedup:.1f}x",
                '"auto" caches it': "yes" if decision == [True] else "no",
            }
        )
    fresh_process()
    return rows


def bench_cheap_net(n_rows, repeat):
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    ).eval()
    X = np.random.RandomState(0).rand(n_rows, 64).astype(np.float32)
    fresh_process()
    setups = {}
    for cache in (False, True, "auto"):
        nt = NeuralTransformer(module, output="logits", cache=cache).fit(X[:10])
        nt.transform(X)  # the first call computes, stores, or judges
        setups[cache] = nt
    # Interleaved (the order flips every round), ratios within a round: the
    # three setups run moments apart, so drift on a shared machine cancels.
    times = {cache: [] for cache in setups}
    for round_ in range(repeat):
        order = list(setups) if round_ % 2 == 0 else list(setups)[::-1]
        for cache in order:
            times[cache].append(best_of(lambda nt=setups[cache]: nt.transform(X), repeat=1))
    fresh_process()
    reference = np.array(times[False])
    labels = {
        False: "cache=False (run the net)",
        True: "cache=True (every row a hit)",
        "auto": 'cache="auto" (judged: just run)',
    }
    return [
        {
            "setup": labels[c],
            "ms": f"{min(ts) * 1e3:.1f}",
            "us per row": f"{min(ts) / n_rows * 1e6:.2f}",
            "ratio to cache=False": f"{np.median(np.array(ts) / reference):.2f}",
        }
        for c, ts in times.items()
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["search", "costs"], default=None)
    parser.add_argument("--load", default="", help="what else was running (for the record)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    parts = []
    if args.only in (None, "search"):
        texts, labels = load_topics()
        if args.quick:
            keep = np.concatenate([np.flatnonzero(labels == t)[:10] for t in np.unique(labels)])
            texts, labels = [texts[i] for i in keep], labels[keep]
        repeat = 1 if args.quick else 2
        rows_s, model = bench_search(texts, labels, repeat)
        rows_f = bench_fingerprint(model, repeat=5)
        n = len(texts)
        parts += [
            f"**GridSearchCV(cv=5), 6 candidates**, TextEmbedder (all-MiniLM-L6-v2) -> "
            f"LogisticRegression on {n} topic sentences, 1 torch thread, best of {repeat}. "
            f"30 fits and scorings plus the refit: without a cache every text is encoded "
            f"31 times ({31 * n} rows); identical scores in every setup.",
            markdown_table(
                rows_s, ["setup", "seconds", "rows encoded", "ratio to no cache", "speed-up"]
            ),
            "**Fingerprinting the model** (done on every transform call)",
            markdown_table(rows_f, ["step", "ms"]),
        ]
    if args.only in (None, "costs"):
        n_keys = 5_000 if args.quick else 20_000
        rows_k = bench_row_keys(n_keys, repeat=3)
        n_wide, rounds = (2_000, 3) if args.quick else (10_000, 11)
        rows_m = bench_miss_and_hit(n_wide, rounds)
        n_rows = 20_000 if args.quick else 200_000
        rows_c = bench_cheap_net(n_rows, repeat=3 if args.quick else 9)
        parts += [
            f"**Row keys**, {n_keys:,} rows, best of 3",
            markdown_table(rows_k, ["row", "key", "us per row"]),
            f"**A miss and a hit against no cache**: NeuralTransformer over the wide net "
            f"512-1024-1024-10, {n_wide:,} new rows, `cache=True` with an emptied store "
            f"(every row a miss: keyed, computed, stored) and then again (every row a hit), "
            f"against `cache=False`; medians of {rounds} interleaved rounds (overhead and "
            "speed-up: medians of the ratios within a round).",
            markdown_table(
                rows_m,
                [
                    "output",
                    "no cache ms",
                    "miss ms",
                    "miss overhead",
                    "hit ms",
                    "hit speed-up",
                    '"auto" caches it',
                ],
            ),
            f"**A net cheaper than a lookup**: MLP 64-128-64-10, transform of {n_rows:,} rows "
            "(best ms; ratios are medians of the ratios within interleaved rounds)",
            markdown_table(rows_c, ["setup", "ms", "us per row", "ratio to cache=False"]),
        ]
    if args.load:
        parts.insert(0, f"Load while measuring: {args.load}")
    body = "\n\n".join(parts)
    if args.quick or args.only:
        print(body)
    else:
        write_section("bench_cache", body)


if __name__ == "__main__":
    main()
