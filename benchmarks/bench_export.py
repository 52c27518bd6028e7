"""Serving a fitted chain: the Pipeline itself vs its ONNX graph vs its torch module.

Two chains on digits (64 features, 10 classes), fitted once:

- story 1: StandardScaler -> NeuralTransformer (a trained skorch MLP,
  ``output="embedding"``) -> PCA(16) -> LogisticRegression;
- story 2: a ColumnTransformer with a net on each half of the pixels and
  32 pixels passed through -> StandardScaler -> LogisticRegression.

For each: per-call latency of one row and throughput at 10,000 rows, of the
Pipeline's own ``predict_proba``, of the :func:`skchain.to_onnx` graph in
onnxruntime and of the :func:`skchain.to_torch` module (``inference_mode``),
all on one thread. The exports are checked against ``predict_proba`` first.
Goal: single-row latency at least 10x lower than the Pipeline's.

Run: ``python benchmarks/bench_export.py [--quick]``.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier
from threadpoolctl import threadpool_limits
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, markdown_table, write_section  # noqa: E402

from skchain import NeuralTransformer, to_onnx, to_torch  # noqa: E402


def _net(n_in, seed):
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Linear(n_in, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                           nn.Linear(64, 10))
    return NeuralNetClassifier(module, criterion=nn.CrossEntropyLoss, max_epochs=10, lr=0.1,
                               train_split=None, verbose=0)


def chains(X, y):
    story1 = make_pipeline(
        StandardScaler(),
        NeuralTransformer(_net(64, 0), output="embedding", cv=None, random_state=0),
        PCA(16, random_state=0),
        LogisticRegression(max_iter=1000),
    )
    left, right = list(range(32)), list(range(32, 64))
    story2 = make_pipeline(
        ColumnTransformer([
            ("a", NeuralTransformer(_net(32, 1), output="proba", cv=None, random_state=0), left),
            ("b", NeuralTransformer(_net(32, 2), output="proba", cv=None, random_state=0), right),
            ("raw", "passthrough", list(range(16, 48))),
        ]),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    )
    return {"story 1 (scaler, net, PCA, LR)": story1.fit(X, y),
            "story 2 (nets on columns + passthrough, LR)": story2.fit(X, y)}


def measure(name, pipe, X_test, repeat, number):
    one = X_test[:1]
    big = np.ascontiguousarray(np.resize(X_test, (10_000, X_test.shape[1])))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(to_onnx(pipe, one).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    module = to_torch(pipe)

    def run_torch(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    def run_onnx(x):
        return session.run(["probabilities"], {"X": x})[0]

    expected = pipe.predict_proba(X_test)
    err_onnx = float(np.abs(run_onnx(X_test) - expected).max())
    err_torch = float(np.abs(run_torch(X_test) - expected).max())
    assert err_onnx < 1e-5 and err_torch < 1e-5, (err_onnx, err_torch)
    rows = []
    methods = [("Pipeline.predict_proba", pipe.predict_proba), ("onnxruntime", run_onnx),
               ("to_torch module", run_torch)]
    base_lat = base_tp = None
    for label, fn in methods:
        lat = best_of(lambda fn=fn: fn(one), repeat=repeat, number=number)
        tp = big.shape[0] / best_of(lambda fn=fn: fn(big), repeat=max(3, repeat // 4))
        base_lat = base_lat or lat
        base_tp = base_tp or tp
        rows.append({
            "chain": name, "method": label,
            "1-row latency (us)": f"{lat * 1e6:,.0f}",
            "1-row speed-up": f"{base_lat / lat:.1f}x",
            "rows/s at 10,000": f"{tp:,.0f}",
            "throughput vs Pipeline": f"{tp / base_tp:.2f}x",
        })
    return rows, err_onnx, err_torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, no RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeat, number = (3, 5) if args.quick else (7, 50)
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    X_train, y_train, X_test = X[:1200], y[:1200], X[1200:]
    rows, errors = [], []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with threadpool_limits(limits=1):
        for name, pipe in chains(X_train, y_train).items():
            r, e_onnx, e_torch = measure(name, pipe, X_test, repeat, number)
            rows += r
            errors.append(f"{name}: max |proba - predict_proba| {e_onnx:.1e} (onnxruntime), "
                          f"{e_torch:.1e} (torch), on {len(X_test)} held-out rows")
    columns = ["chain", "method", "1-row latency (us)", "1-row speed-up",
               "rows/s at 10,000", "throughput vs Pipeline"]
    worst = min(float(r["1-row speed-up"].split("x")[0]) for r in rows
                if r["method"] != "Pipeline.predict_proba")
    body = (
        "**Serving a fitted chain**, digits, one thread everywhere (torch, BLAS, "
        "onnxruntime intra/inter op); best of "
        f"{repeat} rounds of {number} calls (goal: 1-row latency >= 10x lower than the "
        f"Pipeline's: {'met' if worst >= 10 else 'NOT met'}, worst {worst:.1f}x). "
        f"Load average at the start: {load:.1f} (other processes share the machine; "
        "absolute times vary with it, the ratios are the claim)\n\n"
        + markdown_table(rows, columns) + "\n\n"
        + "\n".join(f"- {e}" for e in errors)
    )
    if args.quick:
        print(body)
    else:
        write_section("bench_export", body)


if __name__ == "__main__":
    main()
