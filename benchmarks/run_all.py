"""The performance suite in one command: every ``benchmarks/bench_*.py``, one after the other.

Each script measures its claims against a reference timed in the same run and,
in a full run, rewrites its own section of ``benchmarks/RESULTS.md``; ``--quick``
is passed on to every script (small sizes, RESULTS.md untouched), to check that
the suite runs. The scripts run one at a time, in separate processes, so one
does not warm or load the machine for the next, and a failing script does not
stop the others.

Run: ``python benchmarks/run_all.py [--quick] [NAME ...]``, e.g.
``python benchmarks/run_all.py --quick neural cache``.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def scripts(names=()):
    """The ``bench_*.py`` scripts, all or those whose name contains one of ``names``."""
    found = sorted(HERE.glob("bench_*.py"))
    if names:
        found = [p for p in found if any(n in p.stem for n in names)]
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="passed on to every script")
    parser.add_argument("names", nargs="*", help="run only the scripts whose name contains one")
    args = parser.parse_args(argv)
    selected = scripts(args.names)
    if not selected:
        parser.error(f"no benchmarks/bench_*.py matches {args.names}")

    summary = []
    for path in selected:
        command = [sys.executable, str(path), *(["--quick"] if args.quick else [])]
        print(f"\n===== {path.name} {' '.join(command[2:])}".rstrip(), flush=True)
        start = time.perf_counter()
        status = subprocess.run(command, cwd=HERE.parent).returncode
        summary.append((path.name, status, time.perf_counter() - start))

    print("\n===== summary")
    width = max(len(name) for name, _, _ in summary)
    for name, status, seconds in summary:
        print(
            f"{name:<{width}}  {'ok' if status == 0 else f'FAILED ({status})':<12}{seconds:8.1f} s"
        )
    if not args.quick:
        print(f"numbers written to {HERE / 'RESULTS.md'}")
    return int(any(status for _, status, _ in summary))


if __name__ == "__main__":
    sys.exit(main())
