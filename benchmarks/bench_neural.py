"""NeuralTransformer's overhead over the module itself and over skorch.

1. ``transform`` throughput against a raw torch ``inference_mode`` loop over the
   same module and batch size (goal: >= 0.95x), with skorch's ``predict_proba``
   for context.
2. Training time of ``NeuralTransformer.fit`` against the same skorch net's own
   ``fit`` (goal: <= 1.05x).
3. Peak memory of ``transform`` on 1M rows: the output plus O(batch), not
   O(rows x hidden).

Run: ``python benchmarks/bench_neural.py [--quick]``.
"""

import argparse
import resource
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, markdown_table, write_section  # noqa: E402

from skchain import NeuralTransformer  # noqa: E402
from skchain._testing import make_classifier_net  # noqa: E402


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def raw_loop(module, X, batch_size):
    out = []
    with torch.inference_mode():
        for start in range(0, len(X), batch_size):
            out.append(module(torch.from_numpy(X[start : start + batch_size])))
    return torch.cat(out).numpy()


def bench_transform(n_rows, batch_size, repeat):
    X = np.random.RandomState(0).rand(n_rows, 64).astype(np.float32)
    module = mlp().eval()
    nt = NeuralTransformer(module, output="logits", batch_size=batch_size).fit(X[:10])
    np.testing.assert_allclose(nt.transform(X[:1000]), raw_loop(module, X[:1000], batch_size),
                               rtol=1e-5, atol=1e-6)
    t_raw = best_of(lambda: raw_loop(module, X, batch_size), repeat=repeat)
    t_nt = best_of(lambda: nt.transform(X), repeat=repeat)
    from skorch import NeuralNet

    skorch_net = NeuralNet(module, criterion=nn.CrossEntropyLoss, batch_size=batch_size)
    skorch_net.initialize()
    skorch_net.module_ = module
    n_sk = min(n_rows, 50_000)
    t_sk = best_of(lambda: skorch_net.predict_proba(X[:n_sk]), repeat=max(1, repeat // 2))
    return [
        {"method": "raw torch loop", "rows/s": f"{n_rows / t_raw:,.0f}", "ratio": "1.00"},
        {"method": "NeuralTransformer.transform", "rows/s": f"{n_rows / t_nt:,.0f}",
         "ratio": f"{t_raw / t_nt:.2f}"},
        {"method": "skorch predict_proba", "rows/s": f"{n_sk / t_sk:,.0f}",
         "ratio": f"{(n_sk / t_sk) / (n_rows / t_raw):.2f}"},
    ], t_raw / t_nt


def bench_training(max_epochs, repeat):
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    net = make_classifier_net(n_classes=10, hidden=128, max_epochs=max_epochs, lr=0.01,
                              iterator_train__shuffle=True)

    def skorch_alone():
        torch.manual_seed(0)
        clone(net).fit(X, y)

    def skchain():
        NeuralTransformer(net, random_state=0).fit(X, y)

    # Interleave the two so drift on a shared machine hits both alike.
    t_sk, t_nt = [], []
    for _ in range(repeat):
        t_sk.append(best_of(skorch_alone, repeat=1))
        t_nt.append(best_of(skchain, repeat=1))
    t_sk, t_nt = min(t_sk), min(t_nt)
    return [
        {"method": "skorch net.fit", "seconds": f"{t_sk:.3f}", "ratio": "1.00"},
        {"method": "NeuralTransformer.fit", "seconds": f"{t_nt:.3f}",
         "ratio": f"{t_nt / t_sk:.3f}"},
    ], t_nt / t_sk


def bench_memory(n_rows, batch_size):
    module = mlp().eval()
    X = np.random.RandomState(0).rand(n_rows, 64).astype(np.float32)
    nt = NeuralTransformer(module, output="logits", batch_size=batch_size).fit(X[:10])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    out = nt.transform(X)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    output_bytes = out.nbytes
    hidden_all_rows = n_rows * 128 * 4
    return [{
        "rows": f"{n_rows:,}",
        "output MB": f"{output_bytes / 1e6:.1f}",
        "numpy peak MB (tracemalloc)": f"{peak / 1e6:.1f}",
        "process peak growth MB (maxrss)": f"{max(rss_growth, 0) / 1e6:.1f}",
        "one hidden layer for all rows MB": f"{hidden_all_rows / 1e6:.0f}",
    }], rss_growth / output_bytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n_rows, repeat, epochs, mem_rows = (
        (20_000, 3, 3, 100_000) if args.quick else (200_000, 7, 20, 1_000_000)
    )
    batch_size = 1024
    # Memory first: the process's peak RSS only grows, so it is read before the
    # other measurements raise it.
    rows_m, _ = bench_memory(mem_rows, batch_size)
    rows_t, speed = bench_transform(n_rows, batch_size, repeat)
    rows_f, overhead = bench_training(epochs, repeat=3 if args.quick else 5)
    body = "\n\n".join([
        f"**transform**, MLP 64-128-64-10, {n_rows:,} rows, batch {batch_size}, 1 torch "
        f"thread (goal >= 0.95x the raw loop: {'met' if speed >= 0.95 else 'NOT met'})",
        markdown_table(rows_t, ["method", "rows/s", "ratio"]),
        f"**training**, digits, MLP hidden 128, {epochs} epochs, Adam (goal <= 1.05x "
        f"skorch alone: {'met' if overhead <= 1.05 else 'NOT met'})",
        markdown_table(rows_f, ["method", "seconds", "ratio"]),
        f"**transform memory**, {mem_rows:,} rows (goal: output plus O(batch), far "
        "below one hidden layer kept for all rows)",
        markdown_table(rows_m, list(rows_m[0])),
    ])
    if not args.quick:
        write_section("bench_neural", body)
    else:
        print(body)


if __name__ == "__main__":
    main()
