"""Timings that can be read: every case measured in several interleaved rounds, reported as median and range.

This CPU is shared and noisy (single rounds of one case vary by up to 15%), so
one measurement per case cannot tell a real difference from a busy moment. A
round measures every case once, in the same order; a slow spell then touches
every case of that round alike. A case is its median over rounds with the
range (min-max); a ratio between two cases is computed per round, and called a
difference only when every round agrees on its direction
(`stats.consistent`), otherwise it is inside the spread: noise.
"""

from __future__ import annotations

import math
from typing import Callable, Hashable, Sequence

import numpy as np

from mlp_research import stats

MIN_ROUNDS = 5
NOISE_RULE = ("each case is measured once per round, cases interleaved, in at least 5 rounds; a case is its median "
              "with the range over rounds; a ratio of two cases counts as a difference only when it lies on the same "
              "side of 1 in every round, otherwise it is called noise")


def interleaved(cases: Sequence[Hashable], rounds: int, measure: Callable[[Hashable, int], float],
                log: Callable[[str], None] = print, tag: str = "") -> dict[Hashable, list[float]]:
    """Measure every case once per round (`measure(case, round)`), in the same order each round; returns each
    case's values by round (NaN where a case could not be measured)."""
    values: dict[Hashable, list[float]] = {case: [] for case in cases}
    for r in range(rounds):
        for case in cases:
            values[case].append(float(measure(case, r)))
        log(f"[{tag}] round {r + 1}/{rounds} done")
    return values


def summary(values: dict[Hashable, list[float]]) -> dict[Hashable, stats.Rounds]:
    return {case: stats.rounds(v) for case, v in values.items()}


def geometric_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v == v and v > 0]
    return float(np.exp(np.mean(np.log(finite)))) if finite else math.nan


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Per-round ratios a/b (rounds where either is missing or zero are left out)."""
    return [x / y for x, y in zip(a, b) if x == x and y == y and y]


def compare(a: Sequence[float], b: Sequence[float]) -> tuple[stats.Rounds, bool]:
    """(median and range of the per-round ratio a/b, whether every round agrees on its direction)."""
    r = ratios(a, b)
    return stats.rounds(r), stats.consistent(r)


def ratio_text(ratio: stats.Rounds, real: bool) -> str:
    """'0.85x (0.81-0.88), consistent in every round' or '1.02x (0.95-1.07): noise'."""
    body = f"{ratio.median:.2f}x ({ratio.low:.2f}-{ratio.high:.2f})"
    return body + (f", same direction in all {ratio.n} rounds" if real else ": noise (inside the spread)")
