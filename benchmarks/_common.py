"""Shared bits of the benchmark scripts: timing and the RESULTS.md writer.

Each script owns one section of ``benchmarks/RESULTS.md``, delimited by
``<!-- begin NAME -->`` / ``<!-- end NAME -->``; running it replaces only that
section, so scripts can run in any order.
"""

import os
import platform
import re
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Each section is written by the script named in it (`python benchmarks/NAME.py`); "
    "ratios compare against a reference measured in the same run on the same machine.\n"
)


def machine():
    """One line describing where the numbers came from."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}"
    )


def best_of(fn, repeat=5, number=1):
    """Minimum wall time of ``number`` calls of ``fn`` over ``repeat`` rounds.

    The minimum is the least noisy estimate on a shared machine.
    """
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def median_of(fn, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def markdown_table(rows, columns):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def write_section(name, body):
    """Replace (or append) the section ``name`` of RESULTS.md with ``body``."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    stamp = time.strftime("%Y-%m-%d")
    block = (
        f"<!-- begin {name} -->\n## {name}\n\n"
        f"`python benchmarks/{name}.py`, {stamp}, {machine()}\n\n{body.strip()}\n"
        f"<!-- end {name} -->"
    )
    pattern = re.compile(
        rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    print(block)
