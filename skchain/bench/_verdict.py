"""The verdict of ``skchain bench``: is a chain better than the best baseline?

Scores of two models on the same cross-validation folds are paired, but the
folds' training sets overlap, so the per-fold differences are not independent
and the plain paired t-test is over-confident (it finds differences that are
noise). Nadeau and Bengio's *corrected resampled t-test* inflates the variance
of the mean difference by the overlap::

    t = mean(d) / sqrt((1 / J + n_test / n_train) * var(d))

with ``J`` differences ``d`` (one per fold, all repetitions of repeated cross
validation included), ``var`` the sample variance (``ddof=1``) and ``J - 1``
degrees of freedom. C. Nadeau and Y. Bengio, "Inference for the generalization
error", Machine Learning 52 (2003), 239-281; also Bouckaert and Frank,
"Evaluating the replicability of significance tests for comparing learning
algorithms", PAKDD 2004.
"""

import math

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["corrected_ttest", "verdicts", "format_verdicts", "ALPHA"]

ALPHA = 0.05


def corrected_ttest(differences, n_train, n_test, *, confidence=0.95):
    """Nadeau and Bengio's corrected resampled t-test of paired fold scores.

    Parameters
    ----------
    differences : array-like of shape (n_folds,)
        Score of model A minus score of model B, fold by fold (same splits).
    n_train, n_test : int or float
        Rows in a training fold and in a test fold (their means, when the
        folds differ by a row).
    confidence : float, default=0.95
        Level of the returned interval of the mean difference.

    Returns
    -------
    result : dict
        ``mean`` (the mean difference), ``t``, ``p_value`` (two-sided),
        ``low`` and ``high`` (the interval), ``df``. When every difference is
        the same, the variance is zero and ``t`` undefined: ``p_value`` is
        then that of a two-sided sign test, ``2 * 0.5**n_folds`` (1 for a
        zero difference).
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"Need at least 2 paired differences; got {d.size}.")
    if not np.isfinite(d).all():
        raise ValueError("The differences must be finite (a failed fold has no score).")
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"n_train and n_test must be positive; got {n_train}, {n_test}.")
    J = d.size
    mean = float(d.mean())
    variance = float(d.var(ddof=1))
    se = math.sqrt((1.0 / J + n_test / n_train) * variance)
    df = J - 1
    if se == 0.0:
        # Identical differences on every fold (scores such as accuracy are
        # discrete): the t statistic is undefined. Rather than call that
        # certain, fall back on a sign test -- J folds agreeing on the sign
        # has probability 2 * 0.5**J under no difference -- so 2 or 5 folds
        # that agree are not enough to say "better".
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0.0 else min(1.0, 2.0 * 0.5**J)
        return {"mean": mean, "t": t, "p_value": p, "low": mean, "high": mean, "df": df}
    t = mean / se
    p = float(2.0 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return {"mean": mean, "t": t, "p_value": p, "low": mean - half, "high": mean + half, "df": df}


def verdicts(results, folds, kinds, metric, *, alpha=ALPHA):
    """One row per chain: its difference to the best baseline and the verdict.

    Parameters
    ----------
    results, folds : pandas.DataFrame
        What :func:`skchain.compare` returns with ``return_folds=True``.
    kinds : dict of {str: {"chain", "baseline"}}
        The kind of each model.
    metric : str
        The (greater-is-better) metric to compare.
    alpha : float, default=0.05
        Significance level of "better" and "worse".

    Returns
    -------
    table : pandas.DataFrame
        Indexed by chain: ``baseline`` (the best baseline by mean score),
        ``difference`` (chain minus baseline, mean over folds), ``low`` and
        ``high`` (95% interval), ``p_value``, ``verdict`` ("better", "worse",
        "within noise" or "no verdict" when a model failed) and ``sentence``.
    """
    mean = results[f"{metric}_mean"]
    baselines = [m for m in results.index if kinds[m] == "baseline" and pd.notna(mean[m])]
    chains = [m for m in results.index if kinds[m] == "chain"]
    columns = ["baseline", "difference", "low", "high", "p_value", "verdict", "sentence"]
    rows = {}
    if not baselines:
        for chain in chains:
            rows[chain] = [None, np.nan, np.nan, np.nan, np.nan, "no verdict", None]
            rows[chain][-1] = f"{chain}: no verdict, no baseline has a score."
        return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("chain")
    best = max(baselines, key=lambda m: mean[m])
    per_fold = folds.pivot(index="fold", columns="model", values=f"test_{metric}")
    sizes = folds[folds["model"] == best]
    n_train, n_test = sizes["n_train"].mean(), sizes["n_test"].mean()
    for chain in chains:
        if pd.isna(mean[chain]):
            rows[chain] = [
                best, np.nan, np.nan, np.nan, np.nan, "no verdict",
                f"{chain}: no verdict, it failed on some folds (see the table).",
            ]  # fmt: skip
            continue
        test = corrected_ttest(per_fold[chain] - per_fold[best], n_train, n_test)
        significant = test["p_value"] < alpha
        if significant and test["mean"] > 0:
            verdict = "better"
        elif significant and test["mean"] < 0:
            verdict = "worse"
        else:
            verdict = "within noise"
        rows[chain] = [
            best,
            test["mean"],
            test["low"],
            test["high"],
            test["p_value"],
            verdict,
            _sentence(chain, best, metric, verdict, test, len(per_fold)),
        ]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("chain")


def _sentence(chain, baseline, metric, verdict, test, n_folds):
    phrase = {
        "better": "better than",
        "worse": "worse than",
        "within noise": "within noise of",
    }[verdict]
    if test["low"] == test["high"] == 0.0:
        how = f"identical scores on all {n_folds} folds"
        spread = ""
    elif test["low"] == test["high"]:
        how = f"the same on all {n_folds} folds: sign test"
        spread = ""
    else:
        how = f"corrected paired t-test over {n_folds} folds"
        spread = f" (95% interval {test['low']:+.3f} to {test['high']:+.3f})"
    return (
        f"{chain} is {phrase} {baseline} (the best baseline): {metric} "
        f"{test['mean']:+.3f}{spread}, p {_p(test['p_value'])}, {how}."
    )


def _p(p):
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def format_verdicts(table):
    """The verdict lines printed by ``skchain bench``, one sentence per chain."""
    if table.empty:
        return "No chain to judge."
    return "\n".join(f"- {sentence}" for sentence in table["sentence"])
