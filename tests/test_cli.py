"""``skchain bench``: the README's main command, end to end."""

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import pandas as pd
import pytest

from skchain.cli import format_table, main

CHAINS = [
    "net proba -> logreg",
    "net embedding -> PCA -> SVC",
    "stack: net proba + features -> logreg",
    "ensemble of 3 nets",
]
BASELINES = ["logistic regression", "hist gradient boosting", "net alone"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``python -m skchain bench --quick``, as a user runs it."""
    out = tmp_path_factory.mktemp("bench")
    # One thread per library, as conftest.py sets for torch in this process:
    # CI has 2 cores and the tests may share them.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "skchain", "bench", "--quick", "--output-dir", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    return proc, out


def test_quick_bench_runs_end_to_end(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr
    csv = out / "bench_digits_quick.csv"
    png = out / "bench_digits_quick.png"
    report = out / "bench_digits_quick.json"
    for path in (csv, png, report):
        assert f"{path}" in proc.stdout, f"{path.name} path not printed"
        assert path.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = pd.read_csv(csv, index_col="model")
    quick_chains = [c.replace("3 nets", "2 nets") for c in CHAINS]
    assert list(results.index) == quick_chains + BASELINES
    assert list(results["kind"]) == ["chain"] * 4 + ["baseline"] * 3
    assert (results["n_failed"] == 0).all()
    assert results["accuracy_mean"].between(0, 1).all()
    assert results["rank"].min() == 1

    data = json.loads(report.read_text())
    assert data["dataset"] == "digits" and data["cv"] == 2 and data["quick"] is True
    assert [m["model"] for m in data["models"]] == list(results.index)
    assert all(len(m["folds"]) == 2 for m in data["models"])


def test_quick_bench_prints_the_table_and_progress(quick_run):
    proc, _ = quick_run
    table = proc.stdout.split("\n\n")[1].splitlines()
    assert table[0].split() == ["model", "kind", "accuracy", "fit", "s", "predict", "s"]
    rows = {
        line[3:].split("  ")[0]: line
        for line in table[2:]
        if "  chain  " in line or "  baseline  " in line
    }
    assert set(rows) == {c.replace("3 nets", "2 nets") for c in CHAINS} | set(BASELINES)
    assert any(line.startswith("*") for line in rows.values())  # the best is marked
    assert all(" ± " in line for line in rows.values())
    # Progress on stderr: every (model, fold) pair.
    for name in ["net alone", "stack: net proba + features -> logreg"]:
        for fold in (1, 2):
            assert f"{name} | fold {fold}/2 | accuracy " in proc.stderr


def test_regression_dataset_in_process(tmp_path, capsys):
    status = main(
        ["bench", "--quick", "--dataset", "diabetes", "--output-dir", str(tmp_path), "--seed", "1"]
    )
    assert status == 0
    results = pd.read_csv(tmp_path / "bench_diabetes_quick.csv", index_col="model")
    assert "r2_mean" in results.columns
    assert {"ridge", "net alone", "net prediction -> ridge"} <= set(results.index)
    assert (results["n_failed"] == 0).all()
    assert "regression" in capsys.readouterr().out


def test_seed_makes_runs_repeatable(tmp_path):
    for run in ("a", "b"):
        assert (
            main(
                [
                    "bench",
                    "--quick",
                    "--dataset",
                    "iris",
                    "--seed",
                    "7",
                    "--output-dir",
                    str(tmp_path / run),
                ]
            )
            == 0
        )
    a, b = (
        pd.read_csv(tmp_path / run / "bench_iris_quick.csv", index_col="model")
        for run in ("a", "b")
    )
    pd.testing.assert_series_equal(a["accuracy_mean"], b["accuracy_mean"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--dataset", "mnist"], "invalid choice: 'mnist'"),
        (["bench", "--cv", "1"], "must be at least 2"),
        (["bench", "--n-jobs", "two"], "invalid int value"),
        (["dance"], "invalid choice: 'dance'"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "bench" in capsys.readouterr().out


def test_console_script_is_installed():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("skchain") == "skchain.cli:main"


def test_table_marks_the_best_and_the_failures():
    results = pd.DataFrame(
        {
            "kind": ["chain", "baseline", "chain"],
            "accuracy_mean": [0.9, 0.95, np.nan],
            "accuracy_std": [0.01, 0.02, np.nan],
            "fit_time": [1.5, 0.01, np.nan],
            "predict_time": [0.01, 0.001, np.nan],
            "n_failed": [0, 0, 3],
            "error": ["", "", "ValueError: boom"],
            "rank": pd.array([2, 1, pd.NA], dtype="Int64"),
        },
        index=pd.Index(["a chain", "a baseline", "a broken one"], name="model"),
    )
    lines = format_table(results, "accuracy").splitlines()
    assert lines[2].startswith("   a chain ") and "0.900 ± 0.010" in lines[2]
    assert lines[3].startswith("*  a baseline ")
    assert "failed" in lines[4]
    assert lines[-1] == "! a broken one: 3 fold(s) failed: ValueError: boom"
