"""ImageEmbedder over image files against a hand-written DataLoader loop.

1. Throughput: ``ImageEmbedder(...).transform(paths)`` against the loop that
   one writes by hand -- a ``Dataset`` that opens, converts, crops, resizes
   and normalises one file, a ``DataLoader`` with the same batch size and
   worker count, ``torch.no_grad()`` and the pooled features of the same
   model -- over the same JPEG files (goal: >= 0.95x). The default model
   (EfficientNet-Lite0 at 224x224), and the same model at 96x96 where
   decoding weighs more; with decoding in this process and in 2 workers.
   ``cache=False`` is the like-for-like row; the default cache's first pass
   (it hashes each file) is shown beside it.
2. Peak memory (maxrss of a fresh process) over 2,000 and 20,000 files: the
   decoded batches in flight and the output, not the number of images. A
   small conv net with a 1280-wide output (EfficientNet-Lite0's) keeps the
   20,000-image runs short; decoding and preprocessing are the same.

Times are the best of interleaved rounds; ratios are medians over rounds of
the ratio within a round (the order flips every round), so that drift on a
shared machine hits both sides alike.

Run: ``python benchmarks/bench_image.py [--quick] [--no-20k] [--print-only]``.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import markdown_table, write_section  # noqa: E402

from skchain import ImageEmbedder, _cache  # noqa: E402

BATCH = 32
MEAN = np.float32(127 / 255)
STD = np.float32(128 / 255)


# -- data ------------------------------------------------------------------------------


def make_files(folder, n, seed=0):
    """``n`` JPEG files of 320x256: random crops (some flipped) of the sample photos."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photos = load_sample_images().images
    rng = np.random.RandomState(seed)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:05d}.jpg"
        paths.append(str(path))
        if path.exists():
            continue
        photo = photos[i % 2]
        top, left = rng.randint(0, photo.shape[0] - 256), rng.randint(0, photo.shape[1] - 320)
        crop = photo[top : top + 256, left : left + 320]
        if rng.rand() < 0.5:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop)).save(path, quality=90)
    return paths


# -- the hand-written reference --------------------------------------------------------


class Files(torch.utils.data.Dataset):
    """What one writes by hand: one file in, one normalised CHW tensor out,
    EfficientNet-Lite's evaluation preprocessing (centre crop 0.875, bicubic)."""

    def __init__(self, paths, size):
        self.paths = paths
        self.size = size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as image:
            image = image.convert("RGB")
        w, h = image.size
        side = min(w, h) * 0.875
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        image = image.resize((self.size, self.size), Image.BICUBIC, box=box)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        return (x - MEAN) / STD


def by_hand(features, paths, size, workers):
    loader = torch.utils.data.DataLoader(
        Files(paths, size), batch_size=BATCH, num_workers=workers
    )
    out = []
    with torch.no_grad():
        for x in loader:
            out.append(features(x))
    return torch.cat(out).numpy()


def lite0_features(model):
    """The pooled features of EfficientNet-Lite0 (the input of its ``_fc``)."""
    return lambda x: model._avg_pooling(model.extract_features(x)).flatten(1)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 1280),
    ).eval()


# -- timing ----------------------------------------------------------------------------


def interleaved(fns, repeat):
    """Best time of each function and its median speed ratio to the first."""
    names = list(fns)
    times = {name: [] for name in names}
    for round_ in range(repeat):
        for name in names if round_ % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    ref = np.array(times[names[0]])
    best = {name: min(ts) for name, ts in times.items()}
    ratio = {name: float(np.median(ref / np.array(ts))) for name, ts in times.items()}
    return best, ratio


def cold_cache(embedder, paths):
    _cache._MEMORY = _cache._MemoryStore()  # a first pass every round
    return embedder.transform(paths)


def bench_throughput(folder, n, repeat, cases, cached_side=True):
    paths = make_files(folder, 2 * n)

    def n_for(size):  # the same work per round at either size
        return n if size >= 224 else 2 * n

    rows, worst = [], np.inf
    for size, workers in cases:
        embedder = ImageEmbedder(
            image_size=size, batch_size=BATCH, n_jobs=workers or None, cache=False
        ).fit(paths[:1])
        cached = ImageEmbedder(
            image_size=size, batch_size=BATCH, n_jobs=workers or None
        ).fit(paths[:1])
        features = lite0_features(embedder.model_)
        np.testing.assert_allclose(
            embedder.transform(paths[:BATCH]), by_hand(features, paths[:BATCH], size, 0),
            rtol=1e-4, atol=1e-4,
        )
        fns = {
            "hand": lambda: by_hand(features, paths[:n_for(size)], size, workers),
            "ours": lambda: embedder.transform(paths[:n_for(size)]),
            "cached": lambda: cold_cache(cached, paths[:n_for(size)]),
        }
        if not cached_side:
            del fns["cached"]
        t, r = interleaved(fns, repeat)
        worst = min(worst, r["ours"])
        case = f"{size}x{size}, {workers} workers"
        for key, method in [
            ("hand", "hand-written Dataset + DataLoader + no_grad loop"),
            ("ours", "ImageEmbedder(cache=False).transform(paths)"),
            ("cached", 'ImageEmbedder() (cache="auto", first pass: hashes each file)'),
        ]:
            if key not in t:
                continue
            rows.append({"case": case, "method": method,
                         "images/s": f"{n_for(size) / t[key]:,.1f}", "ratio": f"{r[key]:.2f}"})
    return rows, worst


# -- memory ----------------------------------------------------------------------------


def child_memory(args):
    """In a fresh process: run one side over the files, report the peak RSS."""
    paths = make_files(args["folder"], args["n"])
    module = small_net()
    base = _rss("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # Linux: the peak (VmHWM) counts from here
    start = time.perf_counter()
    if args["side"] == "hand":
        out = by_hand(module, paths, 224, args["workers"])
    else:
        out = ImageEmbedder(
            module, output="auto", image_size=224, crop_fraction=0.875,
            mean=127 / 255, std=128 / 255, batch_size=BATCH,
            n_jobs=args["workers"] or None, cache=args["cache"],
        ).fit(paths[:1]).transform(paths)
    seconds = time.perf_counter() - start
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"base_mb": base, "peak_mb": _rss("VmHWM"), "seconds": seconds,
                      "output_mb": out.nbytes / 2**20, "worker_mb": worker}))


def _rss(field):
    """A memory field of /proc/self/status, in MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def bench_memory(folder, sizes, workers):
    rows = []
    for n in sizes:
        make_files(folder, n)
        for side, cache, label in [
            ("hand", False, "hand-written DataLoader loop (torch.cat of the batches)"),
            ("ours", False, "ImageEmbedder(cache=False)"),
            ("ours", True, "ImageEmbedder() (default cache keeps a copy)"),
        ]:
            spec = {"folder": str(folder), "n": n, "side": side, "cache": cache,
                    "workers": workers}
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", json.dumps(spec)],
                capture_output=True, text=True, check=True,
            ).stdout
            m = json.loads(out.strip().splitlines()[-1])
            rows.append({
                "images": f"{n:,}", "method": label,
                "output MB": f"{m['output_mb']:.1f}",
                "peak growth MB": f"{m['peak_mb'] - m['base_mb']:.0f}",
                "peak RSS MB": f"{m['peak_mb']:.0f}",
                "largest worker MB": f"{m['worker_mb']:.0f}",
                "images/s": f"{n / m['seconds']:,.0f}",
            })
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds")
    parser.add_argument("--no-20k", action="store_true", help="memory at 2,000 images only")
    parser.add_argument("--print-only", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--cases", default="224:0,224:2,96:0,96:2",
                        help="throughput cases, SIZE:WORKERS,...")
    parser.add_argument("--repeat", type=int, help="interleaved rounds")
    parser.add_argument("--no-cached", action="store_true",
                        help="leave the default-cache side out of the throughput rounds")
    parser.add_argument("--no-memory", action="store_true", help="throughput only")
    parser.add_argument("--memory-child")
    parser.add_argument("--folder", help="where the JPEG files go (default: a temp folder)")
    args = parser.parse_args()
    if args.memory_child:
        return child_memory(json.loads(args.memory_child))
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench_image_"))
    n, repeat = (32, 3) if args.quick else (128, 5)
    repeat = args.repeat or repeat
    cases = [tuple(int(v) for v in case.split(":")) for case in args.cases.split(",")]
    rows, worst = bench_throughput(folder, n, repeat, cases, cached_side=not args.no_cached)
    sizes = [2_000] if args.no_20k or args.quick else [2_000, 20_000]
    memory = [] if args.no_memory else bench_memory(folder, sizes, workers=2)
    verdict = "met" if worst >= 0.95 else "NOT met"
    body = (
        f"**throughput**, EfficientNet-Lite0 (packaged weights), pooled 1280-d features, "
        f"{n} (224x224) or {2 * n} (96x96) JPEG files of 320x256, batch {BATCH}, "
        f"{torch.get_num_threads()} torch threads; ratios are medians of interleaved rounds "
        f"(goal >= 0.95x the hand-written loop: {verdict}, worst {worst:.2f})\n\n"
        + markdown_table(rows, ["case", "method", "images/s", "ratio"])
        + "\n\n**peak memory**, fresh process per run, a small conv net with a 1280-wide "
        "output, 224x224, batch 32, 2 decoding workers (the growth is the output, "
        "the batches in flight and the libraries; it must not grow with the images "
        "beyond the output)\n\n"
        + markdown_table(memory, ["images", "method", "output MB", "peak growth MB",
                                  "peak RSS MB", "largest worker MB", "images/s"])
    )
    if args.print_only:
        print(body)
    else:
        write_section("bench_image", body)


if __name__ == "__main__":
    main()
