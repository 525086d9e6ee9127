"""Mean, standard deviation and a t-based 95% interval: the statistics every cell of the comparison reports.

Numpy only (scipy when present for the t quantile, else a table), so it runs in both environments.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96 plus a term).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t975(dof: int) -> float:
    """The 0.975 quantile of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        return math.nan
    try:
        from scipy import stats

        return float(stats.t.ppf(0.975, dof))
    except ImportError:
        return _T975[dof - 1] if dof <= 30 else 1.96 + 2.4 / dof


def summarize(values: Sequence[float]) -> dict:
    """{runs, n, mean, std (ddof 1), ci95: [lo, hi], half_width}: the t interval of the mean."""
    x = np.asarray(values, np.float64)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    half = t975(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"runs": [float(v) for v in x], "n": n, "mean": mean, "std": std,
            "ci95": [mean - half, mean + half], "half_width": half}


def difference(a: Sequence[float], b: Sequence[float], paired: bool = False) -> dict:
    """Effect of b against a (mean(b) - mean(a)) with its 95% interval: paired t or Welch's t."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if paired:
        d = summarize(b - a)
        return {"effect": d["mean"], "ci95": d["ci95"], "test": "paired t", "n": d["n"]}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else len(a) + len(b) - 2
    effect = float(b.mean() - a.mean())
    half = _t975_real(dof) * se
    return {"effect": effect, "ci95": [effect - half, effect + half], "test": "Welch t", "dof": float(dof),
            "n": [len(a), len(b)], "median_effect": float(np.median(b) - np.median(a)),
            "p_mann_whitney": _mann_whitney(a, b)}


def _mann_whitney(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided Mann-Whitney U p-value: a rank test, not thrown off by one seed that drops 5 points."""
    try:
        from scipy import stats
    except ImportError:
        return None
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _t975_real(dof: float) -> float:
    """t quantile for a fractional Welch dof (scipy), else the table at the floor (slightly conservative)."""
    try:
        from scipy import stats

        return float(stats.t.ppf(0.975, dof))
    except ImportError:
        return t975(max(int(dof), 1))
