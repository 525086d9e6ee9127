"""Q1: how the hidden width changes accuracy, and which width is best.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q1 [--smoke]
The chapter's from-scratch MLP (one hidden layer, ReLU, N(0, 0.01) init, SGD lr 0.1, batch 256, 10 epochs) at
each width, on the full training split (54,000 examples, 6,000 for validation), 5 seeds per width (a width's
seeds train as one vmapped group). Width is a monotone question, so it is tested as a trend over every (width,
seed) point, and the best width is compared with every other, paired by seed and Holm-corrected.
"""

from __future__ import annotations

import math
import sys

from ml_collections import ConfigDict

from mlp_research.exercises import compare, seeded
from mlp_research.exercises import settings as settings_lib
from mlp_research.exercises.common import Context, Section, fmt, save_figure
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.plan import Plan
from mlp_research.exercises.settings import Setting
from mlp_research.stats import interval

QID = "q1"
TITLE = "Hidden width"
QUESTION = "Change num_hiddens and plot how it affects accuracy. Which value is best?"
COMPARED = "num_hiddens"


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp_scratch", lr=0.1, batch_size=256, max_epochs=10, val_fraction=0.1, test_at_end=True),
        widths=[8, 16, 32, 64, 128, 256, 512, 1024],
        seeds=[0, 1, 2, 3, 4],
        smoke=dict(widths=[8, 64, 256], seeds=[0, 1, 2], base=dict(max_epochs=2, train_subset=2000)),
    ))


def plan(cfg: dict, ctx: Context) -> Plan:
    return seeded.plan(seeded.widths(cfg, ctx), cfg, ctx, "widths")


def measure(cfg: dict, ctx: Context) -> list[Setting]:
    return seeded.measure(seeded.widths(cfg, ctx), cfg, ctx, QID)


def figure(results: list[Setting], ctx: Context) -> list[str]:
    fig, (ax,) = new_figure()
    widths = [s.value for s in results]
    settings_lib.error_bars(ax, widths, results, "validation statistic (95% CI; dots: seeds)")
    ax.plot(widths, [interval(s.final("train_acc")).mean for s in results], "s--", label="train acc (final, mean)")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="num_hiddens", ylabel="accuracy", title=f"Accuracy vs width ({len(results[0].results)} seeds)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return [save_figure(fig, ctx, "q1_width.png")]


def answer(results: list[Setting]) -> tuple[str, str, str]:
    """(answer, one-line summary, evidence), every number from the results."""
    ranking = seeded.rank(results)
    best, top = ranking.top, ranking.top.interval()
    tr = compare.trend([math.log2(s.value) for s in results], [s.stat for s in results])
    equivalent = [s for s in results if ranking.verdict(s.label) == "equivalent"]
    narrowest = min(equivalent, key=lambda s: s.value, default=None)
    gap = [interval(s.final("train_acc")).mean - s.interval().mean for s in results]
    speed = results[-1].first("steady_epoch_seconds") / results[0].first("steady_epoch_seconds")
    edge = best is results[-1]
    text = (compare.trend_sentence(tr, "log2 width", "doubling of the width") + " "
            + f"The best width is **{best.value}** (statistic {top.text()})"
            + (", the widest tried: the data do not locate an optimum inside the grid, only that more units keep "
               "helping up to it" if edge else "") + ". " + ranking.sentence("width") + " "
            + (f"The narrowest width shown equivalent to the best is {narrowest.value} "
               f"({narrowest.first('num_params') / best.first('num_params'):.2g}x its parameters). " if narrowest else
               f"No narrower width is shown equivalent to the best within ±{compare.MARGIN:g}. ")
            + f"The train-validation gap goes from {gap[0]:+.4f} at width {results[0].value} to {gap[-1]:+.4f} at "
            f"{results[-1].value}, and an epoch takes {speed:.1f}x as long at the widest as at the narrowest.")
    trend_word = ("rises" if tr.slope.mean > 0 else "falls") if tr.significant else "shows no established trend"
    summary = (f"accuracy {trend_word} with width; best {best.value}"
               + (" (the grid's edge)" if edge else "") + (f"; {narrowest.value} equivalent" if narrowest else ""))
    evidence = (f"{tr.slope.mean:+.4f} [{tr.slope.low:+.4f}, {tr.slope.high:+.4f}] per doubling (per-seed slope); "
                f"Spearman rho {tr.rank.rho:.2f} (p={tr.rank.p:.1g}); best {top.text()}")
    return text, summary, evidence


def section(cfg: dict, ctx: Context) -> Section:
    results = measure(cfg, ctx)
    tr = compare.trend([math.log2(s.value) for s in results], [s.stat for s in results])
    return seeded.compose(sys.modules[__name__], cfg, ctx, results, ("num_hiddens", lambda s: s.value), [
        ("params", lambda s: s.first("num_params")),
        ("train acc (final)", lambda s: fmt(interval(s.final("train_acc")).mean)),
        seeded.EPOCH_SECONDS], trend=tr.record())
