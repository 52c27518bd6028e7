"""The PNG of ``skchain bench``: scores on an honest scale, and the verdict.

Left: every model's mean score with its spread over the folds, on the
metric's whole range (accuracy from 0 to 1), so that a gap of a hundredth
looks like one. Right: each chain's difference to the best baseline with its
95% interval from the corrected paired t-test; an interval that crosses zero
is noise. Models are named, chains in blue, baselines in grey.

Uses matplotlib's object-oriented API without pyplot, so it needs no display
and leaves the user's backend alone.
"""

import numpy as np

__all__ = ["plot"]

_COLORS = {"chain": "C0", "baseline": "C7"}
_VERDICT_COLORS = {"better": "C2", "worse": "C3", "within noise": "C7", "no verdict": "C7"}


def _score_limits(metric, low, high):
    if metric in ("accuracy", "balanced_accuracy", "roc_auc", "f1", "f1_macro", "f1_weighted"):
        return 0.0, 1.0
    if metric == "r2":
        # R² is at most 1; below 0 only as far as the models go.
        return min(0.0, low - 0.05), 1.0
    pad = 0.1 * (high - low) or 0.1
    return low - pad, high + pad


def plot(results, verdict_table, kinds, metric, path, title=None):
    """Write the two-panel figure to ``path`` and return ``path``.

    The panels share their rows: one row per model, named once on the left.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    ok = results[results[f"{metric}_mean"].notna()]
    names = list(ok.index)
    rows = np.arange(len(names))
    fig = Figure(figsize=(11, 0.42 * len(names) + 1.9), layout="constrained")
    scores, diffs = fig.subplots(1, 2, sharey=True, width_ratios=[1.1, 1])

    means = ok[f"{metric}_mean"].to_numpy()
    stds = ok[f"{metric}_std"].to_numpy()
    scores.errorbar(
        means, rows, xerr=stds, fmt="none", ecolor="0.35", capsize=3, linewidth=1, zorder=1
    )
    scores.scatter(means, rows, c=[_COLORS[kinds[n]] for n in names], s=40, zorder=2)
    scores.set_yticks(rows, names)
    scores.invert_yaxis()
    if len(means):
        scores.set_xlim(*_score_limits(metric, float(np.min(means - stds)), float(np.max(means))))
    scores.set_xlabel(f"{metric}: mean over folds, bar = ± 1 std")
    scores.grid(axis="x", alpha=0.3)
    scores.legend(
        handles=[
            Line2D([], [], marker="o", linestyle="", color=c, label=k) for k, c in _COLORS.items()
        ],
        loc="lower left",
        fontsize=8,
    )

    judged = verdict_table[verdict_table["difference"].notna()]
    judged = judged[judged.index.isin(names)]
    reach = 0.05
    if len(judged):
        at = np.array([names.index(c) for c in judged.index])
        d = judged["difference"].to_numpy()
        low, high = judged["low"].to_numpy(), judged["high"].to_numpy()
        diffs.errorbar(
            d, at, xerr=[d - low, high - d], fmt="none", ecolor="0.35", capsize=3, zorder=1
        )
        diffs.scatter(d, at, c=[_VERDICT_COLORS[v] for v in judged["verdict"]], s=40, zorder=2)
        best = judged["baseline"].iloc[0]
        diffs.scatter([0.0], [names.index(best)], marker="|", s=200, color="0.2")
        diffs.set_title(f"each chain minus the best baseline,\n{best}", fontsize=10)
        # Symmetric around zero and never narrower than ±0.05 of the metric:
        # a zoom on a hundredth would make noise look like a result.
        reach = max(reach, float(np.max(np.abs(np.r_[low, high]))) * 1.1)
    else:
        diffs.set_title("no chain with a score to compare", fontsize=10)
    if metric in ("accuracy", "balanced_accuracy", "roc_auc", "f1_macro", "f1_weighted"):
        reach = min(reach, 1.0)
    diffs.set_xlim(-reach, reach)
    diffs.axvline(0.0, color="0.2", linewidth=1)
    diffs.set_xlabel(f"{metric} difference, 95% interval (corrected t-test)")
    diffs.grid(axis="x", alpha=0.3)
    diffs.legend(
        handles=[
            Line2D([], [], marker="o", linestyle="", color=c, label=v)
            for v, c in _VERDICT_COLORS.items()
            if v != "no verdict"
        ],
        loc="lower right",
        fontsize=8,
    )
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path
