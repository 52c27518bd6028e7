"""What ``skchain bench`` prints and writes: the table, the CSV and the JSON."""

import json
import os
import platform

import numpy as np

__all__ = ["format_table", "results_with_verdicts", "json_report"]


def format_table(results, metric):
    """The terminal table: mean ± std of ``metric``, fit and predict seconds.

    The best mean score is marked with ``*``.
    """
    best = results["rank"].eq(1).fillna(False)
    rows = []
    for name, row in results.iterrows():
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        score = "failed" if np.isnan(mean) else f"{mean:.3f} ± {std:.3f}"
        rows.append(
            [
                "*" if best[name] else " ",
                name,
                row["kind"],
                score,
                _seconds(row["fit_time"]),
                _seconds(row["predict_time"]),
            ]
        )
    header = ["", "model", "kind", metric, "fit s", "predict s"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    right = {3, 4, 5}

    def line(cells):
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), line(["-" * w if i else " " for i, w in enumerate(widths)])]
    out += [line(r) for r in rows]
    out.append(
        f"* best mean {metric} (see the verdict below before calling it better); fit s: "
        "seconds to fit one fold, predict s: to predict and score one test fold"
    )
    failed = results[results["n_failed"] > 0]
    for name, row in failed.iterrows():
        out.append(f"! {name}: {row['n_failed']} fold(s) failed: {row['error']}")
    return "\n".join(out)


def _seconds(value):
    if np.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def results_with_verdicts(results, verdict_table):
    """The results table with each chain's verdict columns (empty for baselines)."""
    table = verdict_table.drop(columns="sentence").add_prefix("vs_best_baseline_")
    merged = results.join(table, how="left")
    merged.index.name = "model"
    return merged


def json_report(setup, options, results, folds, verdict_table, elapsed):
    """The JSON document: options, machine, models with their folds, verdicts."""
    import sklearn
    import torch

    from .. import __version__

    # pandas writes nan as null, which json.dumps would not.
    models = json.loads(results.reset_index().to_json(orient="records"))
    for record in models:
        mine = folds[folds["model"] == record["model"]].drop(columns="model")
        record["folds"] = json.loads(mine.to_json(orient="records"))
    verdicts = json.loads(verdict_table.reset_index().to_json(orient="records"))
    return {
        "scenario": setup.name,
        "data": setup.headline,
        "task": setup.task,
        "n_samples": int(len(setup.y)),
        "scoring": setup.scoring,
        **options,
        "seconds": round(elapsed, 2),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "skchain": __version__,
            "scikit-learn": sklearn.__version__,
            "torch": torch.__version__,
        },
        "models": models,
        "verdicts": verdicts,
    }
