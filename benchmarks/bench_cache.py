"""One forward pass per row: the frozen-output cache in a grid search.

1. ``GridSearchCV(cv=5)`` over six values of ``C`` of a
   ``TextEmbedder -> LogisticRegression`` pipeline on the bundled topic
   sentences: no cache (the reference), scikit-learn's
   ``Pipeline(memory=...)``, skchain's in-memory cache, and its on-disk cache
   cold (empty folder) and warm (a new process would find every row on disk).
   Rows encoded are counted with a hook on the model.
2. What the cache costs: fingerprinting the 90 MB model (full hash against the
   memoised check), and a tiny MLP whose rows are cheaper to compute than to
   look up -- the case ``cache="auto"`` detects and leaves alone.

Run: ``python benchmarks/bench_cache.py [--quick]``.
"""

import argparse
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

from skchain import NeuralTransformer, TextEmbedder, _cache  # noqa: E402
from skchain._datasets import load_topics  # noqa: E402

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
    _cache._DISKS.clear()


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
    full = best_of(lambda: _cache._hash_weights(model), repeat=repeat)
    _cache.weights_digest(model)
    memo = best_of(lambda: _cache.weights_digest(model), repeat=repeat, number=20)
    n_bytes = sum(t.numel() * t.element_size() for _, t in _cache._named_tensors(model))
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


def bench_cheap_net(n_rows, repeat):
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    ).eval()
    X = np.random.RandomState(0).rand(n_rows, 64).astype(np.float32)
    timings = {}
    for cache in (False, True, "auto"):
        fresh_process()
        nt = NeuralTransformer(module, output="logits", cache=cache).fit(X[:10])
        nt.transform(X)  # the first call computes, stores, or judges
        timings[cache] = best_of(lambda nt=nt: nt.transform(X), repeat=repeat)
    fresh_process()
    reference = timings[False]
    labels = {
        False: "cache=False (run the net)",
        True: "cache=True (every row a hit)",
        "auto": 'cache="auto" (judged cheaper to run)',
    }
    return [
        {
            "setup": labels[c],
            "ms": f"{t * 1e3:.1f}",
            "us per row": f"{t / n_rows * 1e6:.2f}",
            "ratio to cache=False": f"{t / reference:.2f}",
        }
        for c, t in timings.items()
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    texts, labels = load_topics()
    if args.quick:
        keep = np.concatenate([np.flatnonzero(labels == t)[:10] for t in np.unique(labels)])
        texts, labels = [texts[i] for i in keep], labels[keep]
    repeat = 1 if args.quick else 3
    rows_s, model = bench_search(texts, labels, repeat)
    rows_f = bench_fingerprint(model, repeat=5)
    n_rows = 20_000 if args.quick else 200_000
    rows_c = bench_cheap_net(n_rows, repeat=3 if args.quick else 7)
    n = len(texts)
    body = "\n\n".join(
        [
            f"**GridSearchCV(cv=5), 6 candidates**, TextEmbedder (all-MiniLM-L6-v2) -> "
            f"LogisticRegression on {n} topic sentences, 1 torch thread, best of {repeat}. "
            f"30 fits and scorings plus the refit: without a cache every text is encoded "
            f"31 times ({31 * n} rows); identical scores in every setup.",
            markdown_table(
                rows_s, ["setup", "seconds", "rows encoded", "ratio to no cache", "speed-up"]
            ),
            "**Fingerprinting the model** (done on every transform call)",
            markdown_table(rows_f, ["step", "ms"]),
            f"**A net cheaper than a lookup**: MLP 64-128-64-10, transform of {n_rows:,} rows",
            markdown_table(rows_c, ["setup", "ms", "us per row", "ratio to cache=False"]),
        ]
    )
    if args.quick:
        print(body)
    else:
        write_section("bench_cache", body)


if __name__ == "__main__":
    main()
