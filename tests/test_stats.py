"""The statistics every published claim uses (`mlp_research.stats`), checked against scipy and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mlp_research import stats


def test_interval_is_the_t_interval_of_the_mean():
    values = [0.85, 0.86, 0.84, 0.87, 0.85]
    got = stats.interval(values)
    low, high = scipy_stats.t.interval(0.95, 4, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert got.mean == pytest.approx(np.mean(values)) and (got.low, got.high) == pytest.approx((low, high))
    assert got.n == 5 and got.contains(got.mean) and not got.contains(0.9)
    assert stats.interval([0.5]).text() == "0.5000 (1 run)" and math.isnan(stats.interval([0.5]).low)
    assert stats.interval([math.nan, 0.5, 0.7]).n == 2  # a diverged seed has no accuracy to average


def test_paired_difference_sees_what_the_unpaired_comparison_cannot():
    rng = np.random.default_rng(0)
    seeds = rng.normal(0.85, 0.02, 8)  # large seed-to-seed spread, shared by both settings
    a, b = seeds + 0.004 + rng.normal(0, 0.001, 8), seeds
    paired = stats.paired_difference(a, b)
    assert paired.low > 0  # paired: the 0.004 gain is clear
    assert stats.welch(a, b).difference.low < 0  # unpaired: lost in the seed spread
    assert stats.paired_p(a, b) == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    with pytest.raises(ValueError):
        stats.paired_difference([1.0], [1.0, 2.0])


def test_welch_matches_scipy():
    a, b = [0.81, 0.83, 0.82, 0.85], [0.78, 0.80, 0.79, 0.77, 0.8]
    got = stats.welch(a, b)
    assert got.p == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert got.difference.mean == pytest.approx(np.mean(a) - np.mean(b)) and got.difference.low > 0


def test_holm_adjusts_in_order_and_keeps_nans():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = stats.holm([0.02, math.nan])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    tight = stats.interval([0.001, -0.001, 0.0005, 0.0, -0.0005], level=0.90)
    wide = stats.interval([0.02, -0.03, 0.01, 0.0, -0.01], level=0.90)
    assert stats.equivalent(tight, 0.003) and not stats.equivalent(wide, 0.003)
    assert not stats.equivalent(stats.interval([0.0]), 0.003)  # one value proves nothing


def test_trend_is_spearman_over_every_point():
    widths = [8, 8, 64, 64, 512, 512]
    accuracy = [0.80, 0.81, 0.84, 0.845, 0.86, 0.855]
    got = stats.trend(np.log2(widths), accuracy)
    want = scipy_stats.spearmanr(np.log2(widths), accuracy)
    assert got.rho == pytest.approx(want.statistic) and got.p == pytest.approx(want.pvalue) and got.n == 6
    assert math.isnan(stats.trend([1, 2], [3, 4]).p)


def test_slopes_are_fitted_per_seed_and_averaged_with_an_interval():
    x = [1.0, 2.0, 3.0]
    got = stats.slopes(x, [[0.1, 0.2, 0.3], [0.2, 0.4, 0.6], [0.0, 0.3, 0.6]])
    assert got.mean == pytest.approx(0.2) and got.n == 3 and got.low < 0.2 < got.high
    assert stats.slopes(x, [[0.1, math.nan, math.nan]]).n == 0  # one point fits no line


def test_rounds_give_median_and_range_and_consistency_needs_every_round():
    r = stats.rounds([3.0, 1.0, 2.0, math.nan])
    assert (r.median, r.low, r.high, r.n) == (2.0, 1.0, 3.0, 3) and r.spread == pytest.approx(1.0)
    assert r.text() == "2.0 (1.0-3.0)" and stats.rounds([]).text() == "n/a"
    assert stats.consistent([1.1, 1.2, 1.05]) and stats.consistent([0.9, 0.8])
    assert not stats.consistent([1.1, 0.9, 1.2]) and not stats.consistent([1.1])



def test_bootstrap_resamples_whole_seeds():
    values = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])  # two settings sharing three seeds
    diffs = stats.bootstrap(values, lambda v: float(np.mean(v[0] - v[1])), resamples=200)
    assert np.all(diffs == 0), "a seed drawn for one setting is drawn for the other"
    means = stats.bootstrap(values[0], lambda v: float(np.mean(v)), resamples=2000)
    low, high = stats.percentile_interval(means)
    assert 1.0 <= low < 2.0 < high <= 3.0
    assert all(math.isnan(v) for v in stats.percentile_interval(np.array([math.nan])))

def test_spread_and_pm_keep_their_text():
    s = stats.spread([0.9, float("nan"), 0.8])  # a diverged seed is left out, and said so
    assert s.n == 2 and s.runs == 3 and "(2/3 seeds)" in stats.pm(s)
    assert stats.pm(stats.spread([0.9094])) == "0.9094 (1 seed)"  # no spread claimed from one run
