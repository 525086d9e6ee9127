"""Seed statistics: mean ± standard deviation, and one stated rule for "within noise".

A single run per setting cannot tell a real difference from the luck of one
initialisation and data order, so every comparison in the report trains each
setting with several seeds and compares them with Welch's t-test (unequal
variances, two-sided). The rule is stated once here (`NOISE_RULE`) and every
answer that ranks settings uses it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np

ALPHA = 0.05
NOISE_RULE = (f"two settings count as different only when Welch's t-test on their per-seed validation "
              f"accuracies gives p < {ALPHA:g}; otherwise their difference is within seed noise")


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
        return float(np.mean(self.values)) if self.values else float("nan")

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); 0 for a single value."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0 if self.n else float("nan")


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


def ci95(s: Spread) -> tuple[float, float]:
    """The 95% confidence interval of the mean (Student's t, n - 1 degrees of freedom); NaNs below two values."""
    if s.n < 2:
        return float("nan"), float("nan")
    from scipy import stats  # a dependency of JAX

    half = float(stats.t.ppf(0.975, s.n - 1)) * s.std / math.sqrt(s.n)
    return s.mean - half, s.mean + half


def welch_p(a: Spread, b: Spread) -> float:
    """Two-sided p-value of Welch's t-test; NaN when either side has fewer than two values."""
    if a.n < 2 or b.n < 2:
        return float("nan")
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    if va + vb == 0.0:  # identical seeds on both sides: equal means are the same, others certainly differ
        return 1.0 if a.mean == b.mean else 0.0
    from scipy import stats  # a dependency of JAX

    t = (a.mean - b.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    return float(2.0 * stats.t.sf(abs(t), df))


def within_noise(a: Spread, b: Spread) -> bool:
    """The rule of `NOISE_RULE`; with fewer than two seeds on a side nothing can be called different."""
    p = welch_p(a, b)
    return not (p < ALPHA)


def best_index(spreads: Sequence[Spread]) -> int:
    """The setting with the highest mean (settings without a finite value never win)."""
    means = [s.mean if s.n else -math.inf for s in spreads]
    return int(np.argmax(means))


def noise_groups(labels: Sequence[str], spreads: Sequence[Spread]) -> tuple[int, list[str], list[str]]:
    """(best index, labels within noise of the best, labels clearly below it) under `NOISE_RULE`."""
    b = best_index(spreads)
    tied, worse = [], []
    for i, (label, s) in enumerate(zip(labels, spreads)):
        if i == b:
            continue
        (tied if s.n and within_noise(spreads[b], s) else worse).append(label)
    return b, tied, worse


def noise_sentence(labels: Sequence[str], spreads: Sequence[Spread], what: str = "setting") -> str:
    """One sentence naming the best setting and which others are within noise of it, from the numbers."""
    b, tied, worse = noise_groups(labels, spreads)
    seeds = min(s.runs for s in spreads)
    head = f"Under the noise rule (Welch's t-test, p < {ALPHA:g}; {seeds} seeds each), "
    if not tied:
        return head + f"the best {what}, {labels[b]}, is ahead of every other {what} beyond noise."
    return (head + f"{', '.join(tied)} {'is' if len(tied) == 1 else 'are'} within noise of the best {what} "
            f"({labels[b]})" + (f", while {', '.join(worse)} {'is' if len(worse) == 1 else 'are'} below it beyond "
                                f"noise." if worse else "; no setting is below it beyond noise."))
