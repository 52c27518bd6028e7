"""``skchain bench``: the README's main command, end to end, and its errors."""

import configparser
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skchain.bench._cli import main
from skchain.bench._report import format_table
from skchain.datasets import load_topics

ROOT = Path(__file__).parents[1]
EXAMPLE_MODELS = ROOT / "examples" / "bench_models.py"
STORIES = ["transfer", "transfer_new_classes", "merged_heads", "text", "images"]  # the default


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``python -m skchain bench --quick``, as a user runs it."""
    out = tmp_path_factory.mktemp("bench")
    # One thread per library, as conftest.py sets for torch in this process:
    # CI has 2 cores and the tests may share them.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "skchain", "bench", "--quick", "--output-dir", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    return proc, out


def test_quick_bench_runs_every_default_scenario(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in STORIES:
        csv, png, report = (out / f"bench_{name}_quick.{ext}" for ext in ("csv", "png", "json"))
        for path in (csv, png, report):
            assert f"{path}" in proc.stdout, f"{path.name} path not printed"
            assert path.stat().st_size > 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        results = pd.read_csv(csv, index_col="model")
        assert set(results["kind"]) == {"chain", "baseline"}
        assert (results["n_failed"] == 0).all()
        assert results["accuracy_mean"].between(0, 1).all()
        chains = results[results["kind"] == "chain"]
        assert chains["vs_best_baseline_verdict"].isin(
            ["better", "worse", "within noise"]
        ).all()
        assert results.loc[results["kind"] == "baseline", "vs_best_baseline_verdict"].isna().all()

        data = json.loads(report.read_text())
        assert data["scenario"] == name and data["cv"] == 2 and data["quick"] is True
        assert data["threads"] == 1
        assert [m["model"] for m in data["models"]] == list(results.index)
        assert all(len(m["folds"]) == 2 for m in data["models"])
        assert [v["chain"] for v in data["verdicts"]] == list(chains.index)
        assert all(0 <= v["p_value"] <= 1 for v in data["verdicts"])


def test_quick_bench_prints_tables_verdicts_and_progress(quick_run):
    proc, _ = quick_run
    out = proc.stdout
    for name in STORIES:
        assert f"=== scenario {STORIES.index(name) + 1}/5: {name} ===" in out
    assert out.count("Verdict (each chain against the best baseline, same folds):") == 5
    # One sentence per chain, with the difference and the p-value.
    sentences = [line for line in out.splitlines() if line.startswith("- ")]
    assert len(sentences) == 3 + 2 + 3 + 1 + 2
    for line in sentences:
        assert any(v in line for v in (" better than ", " worse than ", " within noise of "))
        how = r"(corrected paired t-test|the same|identical)"
        assert re.search(r"p (= [01]\.\d{3}|< 0\.001), " + how, line)
        assert "(the best baseline)" in line
    assert "=== verdicts, 5 scenarios in " in out
    # Progress on stderr, with the time left.
    assert "[ 1/10] frozen net proba -> logreg | fold 1/2 | accuracy " in proc.stderr
    assert " left\n" in proc.stderr and "| done\n" in proc.stderr


def test_list_names_every_scenario(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ["transfer", "merged_heads", "text", "images", "digits", "iris", "diabetes"]:
        assert f"  {name} " in out
    assert "story 1" in out and "story 3" in out and "story 4" in out
    assert "story 4 with images" in out


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
        argv = ["bench", "--quick", "--dataset", "iris", "--seed", "7"]
        assert main([*argv, "--output-dir", str(tmp_path / run)]) == 0
    a, b = (
        pd.read_csv(tmp_path / run / "bench_iris_quick.csv", index_col="model")
        for run in ("a", "b")
    )
    pd.testing.assert_series_equal(a["accuracy_mean"], b["accuracy_mean"])


# -- your data, your models -------------------------------------------------------


def _topics_table():
    """160 rows: a text column, a number with gaps, a category, the topic."""
    texts, labels = load_topics()
    rng = np.random.RandomState(0)
    words = np.array([len(t.split()) for t in texts], dtype=float)
    words[rng.rand(len(words)) < 0.1] = np.nan
    source = rng.choice(["news", "blog", "forum"], size=len(texts)).astype(object)
    source[rng.rand(len(texts)) < 0.1] = None
    return pd.DataFrame({"note": texts, "words": words, "source": source, "topic": labels})


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "topics.csv"
    _topics_table().to_csv(path, index=False)
    return path


def test_your_csv_with_your_models(table_csv, tmp_path, capsys):
    argv = ["bench", "--quick", "--data", str(table_csv), "--target", "topic"]
    argv += ["--models", str(EXAMPLE_MODELS), "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "topics.csv (160 rows; columns: 1 numeric; 1 categorical; 1 text" in out
    assert "target 'topic': classification, non-numeric target with 4 values" in out
    results = pd.read_csv(tmp_path / "bench_topics_quick.csv", index_col="model")
    # The bundled models and the file's, on the same folds.
    assert {"net proba -> logreg", "logistic regression", "my net -> logreg"} <= set(
        results.index
    )
    assert results.loc["my net -> logreg", "kind"] == "chain"
    assert results.loc["my random forest", "kind"] == "baseline"
    assert (results["n_failed"] == 0).all()
    assert "- my net -> logreg is " in out


def test_only_your_models_on_parquet(tmp_path, capsys):
    path = tmp_path / "topics.parquet"
    _topics_table().to_parquet(path)
    argv = ["bench", "--quick", "--data", str(path), "--target", "topic", "--only"]
    argv += ["--models", str(EXAMPLE_MODELS), "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    results = pd.read_csv(tmp_path / "bench_topics_quick.csv", index_col="model")
    assert list(results.index) == ["my net -> logreg", "my random forest"]
    assert "my net -> logreg is " in capsys.readouterr().out


def test_a_numeric_target_is_regression(tmp_path, capsys):
    rng = np.random.RandomState(0)
    frame = pd.DataFrame({"a": rng.randn(80), "b": rng.choice(["x", "y"], 80)})
    frame["price"] = 3 * frame["a"] + (frame["b"] == "x") + 0.1 * rng.randn(80)
    frame.to_csv(tmp_path / "prices.csv", index=False)
    argv = ["bench", "--quick", "--data", str(tmp_path / "prices.csv"), "--target", "price"]
    assert main([*argv, "--output-dir", str(tmp_path)]) == 0
    assert "regression, numeric target with 80 values" in capsys.readouterr().out
    results = pd.read_csv(tmp_path / "bench_prices_quick.csv", index_col="model")
    assert "r2_mean" in results and results.loc["ridge", "r2_mean"] > 0.9


def test_default_preprocessing_of_each_column_kind():
    from skchain.bench._data import default_preprocessor

    frame = _topics_table().drop(columns="topic")
    preprocessor, plan = default_preprocessor(frame)
    assert plan == {"numeric": ["words"], "categorical": ["source"], "text": ["note"]}
    Xt = preprocessor.fit_transform(frame)
    assert isinstance(Xt, np.ndarray) and np.isfinite(Xt).all()
    n_text = len(preprocessor.named_transformers_["text_note"][-1].vocabulary_)
    assert Xt.shape == (160, 1 + 3 + n_text)  # scaled number, one-hot of 3, TF-IDF


def test_is_chain_looks_inside_pipelines():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from skchain import TextEmbedder
    from skchain.bench._data import is_chain

    assert is_chain(make_pipeline(TextEmbedder(), LogisticRegression()))
    assert not is_chain(make_pipeline(LogisticRegression()))


# -- errors: one line, exit status 2, no traceback ---------------------------------


def _run(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--seed", "-1"], "argument --seed: must be at least 0, got -1"),
        (["bench", "--n-jobs", "0"], "argument --n-jobs: must be a number of processes"),
        (["bench", "--n-jobs", "two"], "invalid int value: 'two'"),
        (["bench", "--cv", "1"], "must be at least 2"),
        (["bench", "--cv", "1000", "--dataset", "iris"], "--cv 1000: more folds than the 150"),
        (["bench", "--cv", "60", "--dataset", "iris"], "the class '0' of iris has 50 rows"),
        (["bench", "--dataset", "mnist"], "--dataset 'mnist': no such scenario"),
        (["bench", "--scenario", "nope"], "--scenario 'nope': no such scenario"),
        (["bench", "--threads", "0"], "argument --threads: must be at least 1"),
        (["bench", "--only"], "--only needs --models"),
        (["bench", "--target", "y"], "--target, --task and --drop go with --data"),
        (["bench", "--data", "missing.csv"], "--data needs --target COLUMN"),
        (["bench", "--data", "missing.csv", "--target", "y"], "missing.csv: no such file"),
        (["dance"], "invalid choice: 'dance'"),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(argv, message, capsys, tmp_path):
    status, out, err = _run([*argv, "--output-dir", str(tmp_path)], capsys)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and out == ""


def _bad_tables(tmp):
    return [
        (_write(tmp / "empty.csv", ""), "y", "the file is empty"),
        (_write(tmp / "header.csv", "a,y\n"), "y", "the file has no rows"),
        (_write(tmp / "t.csv", "a,b\n1,2\n3,4\n"), "y", "--target 'y': no such column"),
        (_write(tmp / "one.csv", "a,y\n1,k\n2,k\n"), "y", "one class only"),
        (_write(tmp / "gap.csv", "a,g,y\n1,,k\n2,,j\n"), "y", "column 'g' has no values"),
        (_write(tmp / "bad.xlsx", "a,y\n1,k\n"), "y", "unknown file type '.xlsx'"),
        (_write(tmp / "bin.parquet", "not parquet"), "y", "cannot read it as PARQUET"),
    ]


def test_bad_tables_are_one_line_and_status_2(tmp_path, capsys):
    for path, target, message in _bad_tables(tmp_path):
        argv = ["bench", "--data", path, "--target", target, "--output-dir", str(tmp_path)]
        status, _, err = _run(argv, capsys)
        assert status == 2, path
        assert message in err, (path, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unusable_columns_are_named(tmp_path):
    from skchain.bench._data import UsageError, default_preprocessor

    frame = pd.DataFrame(
        {
            "when": pd.date_range("2024-01-01", periods=30),
            "id": [f"u{i}" for i in range(30)],
            "nested": [[1, 2]] * 30,
        }
    )
    for column, message in [
        ("when", "holds dates or times"),
        ("id", "different short value on every row"),
        ("nested", "holds lists or mappings"),
    ]:
        with pytest.raises(UsageError, match=message) as exc:
            default_preprocessor(frame[[column]])
        assert f"--drop {column}" in str(exc.value)


@pytest.mark.parametrize(
    "source, message",
    [
        ("x = 1\n", "defines no models() function"),
        ("def models():\n    return [1]\n", "models() returned list"),
        ("def models():\n    return {}\n", "models() returned dict (empty)"),
        ("def models():\n    return {'a': 3}\n", "models()['a'] is a int, not"),
        ("def models():\n    raise KeyError('k')\n", "models() raised KeyError"),
        ("import not_a_module_at_all\n", "importing it failed: ModuleNotFoundError"),
        ("def models(:\n", "importing it failed: SyntaxError"),
    ],
)
def test_bad_models_files(source, message, tmp_path, capsys):
    path = _write(tmp_path / "mine.py", source)
    status, _, err = _run(["bench", "--models", path, "--output-dir", str(tmp_path)], capsys)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_name_clash_with_the_bundled_models(tmp_path, capsys):
    source = (
        "from sklearn.linear_model import LogisticRegression\n"
        "def models():\n    return {'logistic regression': LogisticRegression()}\n"
    )
    path = _write(tmp_path / "mine.py", source)
    argv = ["bench", "--dataset", "iris", "--models", path, "--output-dir", str(tmp_path)]
    status, _, err = _run(argv, capsys)
    assert status == 2 and "rename yours or add --only" in err


def test_output_dir_is_checked_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    # A models file that would leave a mark if it were loaded.
    marker = tmp_path / "loaded"
    source = f"open({str(marker)!r}, 'w').close()\ndef models():\n    return {{}}\n"
    path = _write(tmp_path / "mine.py", source)
    argv = ["bench", "--models", path, "--output-dir", str(blocker / "out")]
    status, out, err = _run(argv, capsys)
    assert status == 2
    assert f"--output-dir {blocker / 'out'}: cannot write there" in err
    assert out == "" and not marker.exists()


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "bench" in capsys.readouterr().out


def test_console_script_points_at_the_cli():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    line = config["options.entry_points"]["console_scripts"].strip()
    assert line == "skchain = skchain.bench._cli:main"
    module, attr = line.split("=")[1].strip().split(":")
    assert getattr(importlib.import_module(module), attr) is main


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


def test_the_default_run_skips_a_story_whose_extra_is_missing(tmp_path, capsys, monkeypatch):
    from skchain.bench import _scenarios

    text = _scenarios.SCENARIOS["text"]
    monkeypatch.setitem(
        _scenarios.SCENARIOS, "text", text._replace(needs=("no_such_module_xyz",))
    )
    monkeypatch.setattr(_scenarios, "DEFAULT", ("text", "transfer"))
    # Asked for by name: an error; in the default run: a note, and the rest runs.
    status, _, err = _run(["bench", "--scenario", "text", "--output-dir", str(tmp_path)], capsys)
    assert status == 2 and "needs no_such_module_xyz" in err
    assert main(["bench", "--quick", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipping the text scenario, which needs no_such_module_xyz" in out
    assert (tmp_path / "bench_transfer_quick.csv").exists()
    assert not (tmp_path / "bench_text_quick.csv").exists()


def test_the_images_scenario_scores_are_cross_val_scores(tmp_path, capsys):
    """A real --quick run: the table, one verdict per chain, and scores that a
    direct cross_val_score of the same models on the same folds gives."""
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    from skchain.bench._scenarios import build, splitter

    argv = ["bench", "--quick", "--scenario", "images", "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "digit images (n, 1, 8, 8), 100 labelled; conv net pretrained on 400" in out
    setup = build("images", quick=True, seed=0)
    chains = [name for name, e in setup.models.items() if e.kind == "chain"]
    baselines = [name for name, e in setup.models.items() if e.kind == "baseline"]
    assert len(chains) == 2 and len(baselines) == 3
    for name in setup.models:
        assert re.search(rf"^[* ]  {re.escape(name)} +(chain|baseline) ", out, re.M), name
    sentences = [line for line in out.splitlines() if line.startswith("- ")]
    assert [s.split(" is ")[0][2:] for s in sentences] == chains
    assert all("(the best baseline)" in s for s in sentences)

    results = pd.read_csv(tmp_path / "bench_images_quick.csv", index_col="model")
    assert list(results.index) == list(setup.models)
    assert (results["n_failed"] == 0).all()
    assert results.loc[chains, "vs_best_baseline_verdict"].isin(
        ["better", "worse", "within noise"]
    ).all()
    folds = splitter("classification", 2, 0)
    for name, entry in setup.models.items():
        expected = cross_val_score(clone(entry.estimator), setup.X, setup.y, cv=folds,
                                   scoring="accuracy")  # fmt: skip
        assert results.loc[name, "accuracy_mean"] == pytest.approx(expected.mean(), abs=1e-12)
        assert results.loc[name, "accuracy_std"] == pytest.approx(expected.std(), abs=1e-12)
    # Not a constant: the chains and baselines learned something from 50 images.
    assert (results["accuracy_mean"] > 0.3).all()


def test_a_missing_image_extra_names_the_image_extra(tmp_path, capsys, monkeypatch):
    from skchain.bench import _scenarios

    images = _scenarios.SCENARIOS["images"]
    monkeypatch.setitem(
        _scenarios.SCENARIOS, "images", images._replace(needs=("no_such_module_xyz",))
    )
    status, _, err = _run(
        ["bench", "--scenario", "images", "--output-dir", str(tmp_path)], capsys
    )
    assert status == 2
    assert "scenario 'images' needs no_such_module_xyz; pip install 'skchain[image]'" in err
    assert main(["bench", "--list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  images "))
    assert line.endswith("(default) [needs no_such_module_xyz: pip install 'skchain[image]']")
