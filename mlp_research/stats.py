"""Statistics for claims about seeds: intervals, paired and unpaired differences, corrections, equivalence, trends.

A number from one training run is one draw: the seed fixes the initialisation
and the data order, and a different seed gives a different result. Every claim
this project publishes is made from several seeds with the tools here:

- `interval`: a mean with its t-based confidence interval.
- `paired_difference`: settings trained with the same seeds share initialisation
  and data order, so their per-seed differences are far less noisy than either
  side; the interval is the mean difference's.
- `welch`: the difference of two independent samples (unequal variances).
- `holm`: several comparisons against one best, with the family-wise error kept.
- `equivalent`: "no difference" is claimed only when a two one-sided test puts
  the difference inside a stated margin; a non-significant test alone says the
  data cannot tell.
- `trend`: a monotone effect (accuracy against log width) tested as one
  rank correlation, not as isolated pairs; `slopes` gives its size (the
  per-seed regression slope, with an interval over seeds).
- `rounds`: a timing repeated in interleaved rounds, as its median and range;
  `consistent` says whether a ratio of two timings kept its direction in every
  round (otherwise the difference is inside the spread: noise).
- `Spread`, `spread`, `pm`: per-seed values of one setting and their
  "mean ± std" text.
- `bootstrap`, `percentile_interval`: an interval for a statistic no formula
  covers (which grid point is best), by resampling whole seeds.

scipy (a dependency of JAX) gives the distributions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterable, Sequence

import numpy as np

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean (of values, or of differences) with its confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    std: float
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci95": [self.low, self.high], "std": self.std, "n": self.n}

    def text(self, digits: int = 4) -> str:
        """'0.8512 [0.8471, 0.8553]' ('0.8512 (1 run)' when there is no interval)."""
        if self.n < 2:
            return f"{self.mean:.{digits}f} (1 run)" if self.n else "n/a"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([float(v) for v in values], np.float64)
    return array[np.isfinite(array)]


def _t(level: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, df))


def interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and t-based confidence interval of the finite values (a single value has no interval)."""
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, math.nan, level)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, 0.0, level)
    std = float(x.std(ddof=1))
    half = _t(level, n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std, level)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean of per-seed differences a - b with its interval (pairs with a non-finite side are left out)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    return interval(diffs, level)


def paired_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of the paired t-test of a - b against 0 (NaN with fewer than two pairs)."""
    d = paired_difference(a, b)
    if d.n < 2:
        return math.nan
    if d.std == 0:
        return 1.0 if d.mean == 0 else 0.0
    from scipy import stats

    return float(2 * stats.t.sf(abs(d.mean) / (d.std / math.sqrt(d.n)), d.n - 1))


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Welch's comparison of two independent samples: the difference a - b, its interval, and p."""

    difference: Interval
    p: float


def welch(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Comparison:
    """Welch's t interval and two-sided p for mean(a) - mean(b); NaN where a side has fewer than two values."""
    x, y = _finite(a), _finite(b)
    if len(x) < 2 or len(y) < 2:
        diff = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
        return Comparison(Interval(diff, math.nan, math.nan, min(len(x), len(y)), math.nan, level), math.nan)
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff = float(x.mean() - y.mean())
    if va + vb == 0:
        return Comparison(Interval(diff, diff, diff, min(len(x), len(y)), 0.0, level), 1.0 if diff == 0 else 0.0)
    from scipy import stats

    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    half = _t(level, df) * se
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return Comparison(Interval(diff, diff - half, diff + half, min(len(x), len(y)), se, level), p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (same order as given): compare each with alpha to keep the family-wise error."""
    order = sorted(range(len(pvalues)), key=lambda i: (math.isnan(pvalues[i]), pvalues[i]))
    m = sum(not math.isnan(p) for p in pvalues)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        if math.isnan(pvalues[i]):
            continue
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def equivalent(difference: Interval, margin: float) -> bool:
    """Two one-sided tests at the interval's level (a 1 - 2*alpha interval inside +-margin): "no difference
    larger than margin". The caller passes a 90% interval for a 5% test (`interval(..., level=0.90)`)."""
    return difference.n >= 2 and -margin < difference.low and difference.high < margin


@dataclasses.dataclass(frozen=True)
class Trend:
    """A monotone trend of y in x: Spearman's rank correlation over every (x, y) pair and its p."""

    rho: float
    p: float
    n: int


def trend(x: Sequence[float], y: Sequence[float]) -> Trend:
    """Spearman's rho of y against x (per-seed values, each seed a point) and its two-sided p."""
    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return Trend(math.nan, math.nan, len(pairs))
    from scipy import stats

    result = stats.spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return Trend(float(result.statistic), float(result.pvalue), len(pairs))


def slopes(x: Sequence[float], per_seed: Sequence[Sequence[float]], level: float = LEVEL) -> Interval:
    """The least-squares slope of y on x fitted per seed (each row of `per_seed` is one seed's y over x), and the
    interval of their mean: seeds are independent, the settings within a seed are not."""
    fitted = []
    for ys in per_seed:
        pairs = [(a, b) for a, b in zip(x, ys) if math.isfinite(a) and math.isfinite(b)]
        if len(pairs) >= 2 and len({a for a, _ in pairs}) >= 2:
            xs, yv = np.array(pairs).T
            fitted.append(float(np.polyfit(xs, yv, 1)[0]))
    return interval(fitted, level)


@dataclasses.dataclass(frozen=True)
class Rounds:
    """A timing repeated in rounds: the median and the range (min, max) of its finite values."""

    median: float
    low: float
    high: float
    n: int

    @property
    def spread(self) -> float:
        """The range relative to the median (0.12: the rounds span 12% of the median)."""
        return (self.high - self.low) / self.median if self.n and self.median else math.nan

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.low, "max": self.high, "rounds": self.n}

    def text(self, digits: int = 1) -> str:
        """'251.3 (237.0-258.1)': the median and the range over the rounds."""
        if not self.n:
            return "n/a"
        return f"{self.median:,.{digits}f} ({self.low:,.{digits}f}-{self.high:,.{digits}f})"


def rounds(values: Sequence[float]) -> Rounds:
    x = _finite(values)
    if not len(x):
        return Rounds(math.nan, math.nan, math.nan, 0)
    return Rounds(float(np.median(x)), float(x.min()), float(x.max()), len(x))


def consistent(ratios: Sequence[float]) -> bool:
    """True when every per-round ratio lies on the same side of 1 (at least two rounds): a difference no round
    contradicts. Otherwise the difference is inside the round-to-round spread."""
    x = _finite(ratios)
    return len(x) >= 2 and (bool(np.all(x > 1)) or bool(np.all(x < 1)))


@dataclasses.dataclass(frozen=True)
class Spread:
    """Per-seed values of one metric for one setting (non-finite values, e.g. diverged seeds, left out)."""

    values: tuple[float, ...]
    runs: int  # seeds run, including those whose value was not finite

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); 0 for a single value."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0 if self.n else math.nan


def spread(values: Iterable[float]) -> Spread:
    raw = [float(v) for v in values]
    return Spread(tuple(v for v in raw if math.isfinite(v)), len(raw))


def pm(s: Spread, digits: int = 4) -> str:
    """`0.8512 ± 0.0021` (`n/a` when no seed gave a finite value; `(k/n)` when some did not).

    A single value has no spread to show: `0.9094 (1 seed)`, never a misleading `± 0`.
    """
    if not s.n:
        return "n/a"
    text = f"{s.mean:.{digits}f} ± {s.std:.{digits}f}" if s.n > 1 else f"{s.mean:.{digits}f}"
    return text + (f" ({s.n}/{s.runs} seeds)" if s.n < s.runs else " (1 seed)" if s.n == 1 else "")


def bootstrap(values: np.ndarray, statistic: Callable[[np.ndarray], float], resamples: int = 2000,
              seed: int = 0) -> np.ndarray:
    """`statistic` of `values` with its last axis (the seeds) resampled with replacement, `resamples` times.
    Whole seeds are drawn, so whatever the seeds share (pairing across settings and budgets) is kept."""
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    rng = np.random.default_rng(seed)
    return np.array([statistic(values[..., rng.integers(0, n, n)]) for _ in range(resamples)])


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` interval of bootstrap samples (NaN samples left out)."""
    finite = np.asarray(samples, dtype=float)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    return float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))
