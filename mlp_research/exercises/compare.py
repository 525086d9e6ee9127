"""Comparisons of settings trained with the same seeds, and the sentences that report them.

The rules every answer follows (stated once, in `RULES`):

- settings are compared seed by seed (a seed fixes the initialisation and the
  data order), each difference with its 95% interval and a paired t-test;
- several comparisons against one best (or one baseline) are corrected with
  Holm's method, so "below the best" holds for the family at 5%;
- "no difference" is said only when a two one-sided test puts the difference
  inside +-`MARGIN`; when neither test decides, the answer says the data cannot
  tell;
- a monotone effect (accuracy against log width, depth) is tested as one
  trend: the regression slope fitted per seed (paired, like the comparisons)
  with its interval over seeds, Spearman's rho over every (setting, seed)
  point beside it.

The numbers come from `mlp_research.stats`; nothing here is hard-coded.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from mlp_research import stats

ALPHA = 0.05
MARGIN = 0.005  # half a point of accuracy: a smaller difference counts as none
RULES = (f"settings are compared seed by seed (paired t-tests, 95% intervals); several comparisons against one best "
         f"are Holm-corrected at {ALPHA:g}; \"equivalent\" means a two one-sided test (TOST, 5%) puts the difference "
         f"inside ±{MARGIN:g}; otherwise the data cannot tell; monotone effects are tested as a trend: the regression "
         "slope fitted per seed, with its 95% interval over seeds (Spearman's rho over every (setting, seed) point "
         "beside it)")


@dataclasses.dataclass(frozen=True)
class Versus:
    """One setting against a reference (the best, or a baseline), paired by seed."""

    label: str
    difference: stats.Interval  # mean of (setting - reference) over seeds, 95% interval
    p: float
    p_holm: float
    equivalent: bool

    @property
    def verdict(self) -> str:
        """'above' / 'below' (Holm at ALPHA), 'equivalent' (TOST within MARGIN), or 'cannot tell'."""
        if self.p_holm < ALPHA:
            return "above" if self.difference.mean > 0 else "below"
        return "equivalent" if self.equivalent else "cannot tell"

    def text(self) -> str:
        d = self.difference
        return f"{self.label} ({d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}], Holm p={self.p_holm:.2g})"

    def record(self) -> dict:
        return {"label": self.label, "difference": self.difference.as_dict(), "p": self.p, "p_holm": self.p_holm,
                "equivalent_within": MARGIN if self.equivalent else None, "verdict": self.verdict}


def versus(reference: Sequence[float], labels: Sequence[str], others: Sequence[Sequence[float]],
           margin: float = MARGIN) -> list[Versus]:
    """Each of `others` against `reference` (per-seed values in the same seed order), Holm-corrected together."""
    ps = [stats.paired_p(o, reference) for o in others]
    adjusted = stats.holm(ps)
    out = []
    for label, o, p, ph in zip(labels, others, ps, adjusted):
        tost = stats.paired_difference(o, reference, level=1 - 2 * ALPHA)
        out.append(Versus(label, stats.paired_difference(o, reference), p, ph, stats.equivalent(tost, margin)))
    return out


def best_index(per_setting: Sequence[Sequence[float]]) -> int:
    """The setting with the highest mean statistic (one without a finite value never wins)."""
    means = [stats.interval(v).mean for v in per_setting]
    return int(np.argmax([m if math.isfinite(m) else -math.inf for m in means]))


def against_best(labels: Sequence[str], per_setting: Sequence[Sequence[float]],
                 margin: float = MARGIN) -> tuple[int, list[Versus]]:
    """(index of the best, every other setting against it)."""
    b = best_index(per_setting)
    rest = [i for i in range(len(labels)) if i != b]
    return b, versus(per_setting[b], [labels[i] for i in rest], [per_setting[i] for i in rest], margin)


def grouped(results: Sequence[Versus]) -> dict[str, list[Versus]]:
    out: dict[str, list[Versus]] = {"above": [], "below": [], "equivalent": [], "cannot tell": []}
    for r in results:
        out[r.verdict].append(r)
    return out


def verdict_sentence(reference: str, results: Sequence[Versus], what: str, role: str = "best") -> str:
    """'Against the best width (2048), paired by seed and Holm-corrected: below it ...; equivalent ...; the data
    cannot tell for ...'. Computed from the verdicts, nothing else."""
    g = grouped(results)
    parts = [f"{name} it: {', '.join(r.text() for r in g[key])}" for key, name in (("above", "above"),
                                                                                   ("below", "below")) if g[key]]
    if g["equivalent"]:
        parts.append(f"equivalent to it within ±{MARGIN:g} (TOST): {', '.join(r.label for r in g['equivalent'])}")
    if g["cannot tell"]:
        parts.append("the data cannot tell (neither a difference nor equivalence within "
                     f"±{MARGIN:g}): {', '.join(r.text() for r in g['cannot tell'])}")
    n = len(results)
    return (f"Against the {role} {what} ({reference}), paired by seed and Holm-corrected over {n} "
            f"comparison{'s' if n != 1 else ''}: " + "; ".join(parts) + ".")


@dataclasses.dataclass(frozen=True)
class TrendResult:
    rank: stats.Trend
    slope: stats.Interval  # per-seed least-squares slope of the statistic on x, mean over seeds with 95% interval

    @property
    def significant(self) -> bool:
        """The per-seed slope's interval excludes 0 (the seeds agree on the direction beyond their spread)."""
        return self.slope.n > 1 and (self.slope.low > 0 or self.slope.high < 0)

    def record(self) -> dict:
        return {"spearman_rho": self.rank.rho, "p": self.rank.p, "points": self.rank.n,
                "slope": self.slope.as_dict()}


def trend(x: Sequence[float], per_setting: Sequence[Sequence[float]]) -> TrendResult:
    """Spearman over every (x, seed) point, and the per-seed slope (seeds are the rows of the transposed table)."""
    xs = [xi for xi, values in zip(x, per_setting) for _ in values]
    ys = [v for values in per_setting for v in values]
    per_seed = np.array(per_setting, dtype=float).T  # [seed][setting]
    return TrendResult(stats.trend(xs, ys), stats.slopes(list(x), per_seed.tolist()))


def trend_sentence(result: TrendResult, x_name: str, unit: str) -> str:
    """'Validation accuracy rises with log2 width: +0.006 [0.004, 0.008] per doubling (...); Spearman's rho ...'."""
    r, s = result.rank, result.slope
    if s.n < 2:
        return f"Too few seeds to test a trend in {x_name}."
    slope = (f"{s.mean:+.4f} [{s.low:+.4f}, {s.high:+.4f}] per {unit} (regression slope per seed, 95% interval over "
             f"{s.n} seeds; Spearman's rho {r.rho:.2f} over {r.n} (setting, seed) points, p={r.p:.2g})")
    if result.significant:
        return f"Validation accuracy {'rises' if s.mean > 0 else 'falls'} with {x_name}: {slope}."
    return f"No trend in {x_name} is established: {slope}."
