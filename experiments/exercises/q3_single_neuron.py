"""Q3: why a hidden layer with a single neuron is a bad idea, shown on the trained networks.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q3 [--smoke]
The chapter's scratch MLP with 1, 2, 4 and 256 hidden units (256 is Q1's run, reused from the shared pool), on the
full training split (54,000 / 6,000), 5 seeds per width. For each trained network the analysis (on the parameters
the driver hands back) measures how many classes it ever predicts, the rank of its centred logits, dead units and
the share of images whose hidden layer is all zero.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from ml_collections import ConfigDict

from mlp_research import stats
from mlp_research.config import Config
from mlp_research.exercises import compare, seeded
from mlp_research.exercises import settings as settings_lib
from mlp_research.exercises.common import Context, Section, Table, fmt, save_figure
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.networks import eval_images, forward_hidden
from mlp_research.exercises.plan import Plan
from mlp_research.exercises.settings import Setting

QID = "q3"
TITLE = "A hidden layer with a single neuron"
QUESTION = "Why is a hidden layer with a single neuron a bad idea? Show what goes wrong."
COMPARED = "num_hiddens"


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp_scratch", lr=0.1, batch_size=256, max_epochs=10, val_fraction=0.1, test_at_end=True),
        widths=[1, 2, 4, 256],
        seeds=[0, 1, 2, 3, 4],
        smoke=dict(widths=[1, 64], seeds=[0, 1, 2], base=dict(max_epochs=2, train_subset=2000)),
    ))


def bottleneck_analysis(config: Config, summary: dict) -> dict:
    """What a narrow hidden layer does to the network's outputs on the evaluation split."""
    hidden, logits = forward_hidden(summary["params"], eval_images(config), config.activation)
    sv = np.linalg.svd(logits - logits.mean(0), compute_uv=False)
    rank = int(np.sum(sv > sv[0] * 1e-2)) if sv[0] > 1e-6 else 0
    return {"distinct_predictions": int(len(np.unique(logits.argmax(-1)))), "logit_rank": rank,
            "dead_units": int(np.sum(np.all(hidden <= 0, axis=0))),
            "zero_hidden_fraction": float(np.mean(np.all(hidden <= 0, axis=1)))}


def plan(cfg: dict, ctx: Context) -> Plan:
    return seeded.plan(seeded.widths(cfg, ctx), cfg, ctx, "widths")


def measure(cfg: dict, ctx: Context) -> list[Setting]:
    return seeded.measure(seeded.widths(cfg, ctx), cfg, ctx, QID, analyse=bottleneck_analysis)


def analysed(s: Setting, key: str) -> list[float]:
    return [float(r["analysis"][key]) if r.get("analysis") else math.nan for r in s.results]


def figure(results: list[Setting], ctx: Context) -> list[str]:
    fig, axes = new_figure(2)
    widths = [s.value for s in results]
    settings_lib.error_bars(axes[0], widths, results, "statistic (95% CI)")
    axes[0].set_xscale("log", base=2)
    axes[0].set(xlabel="num_hiddens", ylabel="val accuracy", title="Narrow hidden layers (dots: seeds)")
    axes[1].bar([str(w) for w in widths], [np.nanmean(analysed(s, "distinct_predictions")) for s in results])
    axes[1].set(xlabel="num_hiddens", ylabel="classes ever predicted (of 10)", title="Predicted classes (mean)")
    return [save_figure(fig, ctx, "q3_single_neuron.png")]


def answer(results: list[Setting]) -> tuple[str, str, str]:
    """(answer, one-line summary, evidence), every number from the results."""
    one, wide = results[0], results[-1]
    gap = stats.paired_difference(one.stat, wide.stat)
    ranks = [v for v in analysed(one, "logit_rank") if v == v]
    dead = sum(1 for v in analysed(one, "dead_units") if v == one.value)
    classes = np.nanmean(analysed(one, "distinct_predictions"))
    tr = compare.trend([math.log2(s.value) for s in results], [s.stat for s in results])
    text = (f"With {one.value} hidden unit(s) the statistic is {one.interval().text()} over {len(one.results)} seeds, "
            f"against {wide.interval().text()} with {wide.value}: {gap.mean:+.4f} [{gap.low:+.4f}, {gap.high:+.4f}] "
            f"paired by seed. {compare.trend_sentence(tr, 'log2 width', 'doubling')} The reason is a bottleneck: "
            f"every logit is an affine function of {one.value} number(s), so the centred logits have rank at most "
            f"{max(ranks, default=0):.0f} (10 classes need up to 9 directions) and the net predicts only "
            f"{classes:.1f} of the 10 classes on average: as the single feature grows, the argmax can only walk "
            f"along one line through the classes. ReLU makes it worse: on "
            f"{np.nanmean(analysed(one, 'zero_hidden_fraction')):.0%} of the validation images the hidden layer "
            f"outputs 0, so those images all get the same prediction and no gradient, and {dead} of "
            f"{len(one.results)} seeds ended with every unit dead on every image.")
    summary = (f"{one.value} unit: {one.interval().mean:.3f} vs {wide.interval().mean:.3f} at {wide.value}; logits of "
               f"rank {max(ranks, default=0):.0f}, {classes:.1f} of 10 classes predicted")
    evidence = f"paired difference {gap.mean:+.4f} [{gap.low:+.4f}, {gap.high:+.4f}], {gap.n} seeds"
    return text, summary, evidence


def section(cfg: dict, ctx: Context) -> Section:
    results = measure(cfg, ctx)
    rows = [[s.value, s.interval().text()] + [fmt(float(np.nanmean(analysed(s, k))), 2) for k in
                                              ("distinct_predictions", "logit_rank", "dead_units")]
            + [fmt(float(np.nanmean(analysed(s, "zero_hidden_fraction"))), 3)] for s in results]
    table = Table(["width", f"val acc, last {settings_lib.STAT_EPOCHS} epochs [95% CI]", "classes predicted",
                   "logit rank", "dead units", "images with all-zero hidden"], rows,
                  f"means over {len(results[0].results)} seeds (every seed's values are in report.json)")
    ranking = seeded.rank(results)
    per_seed = {s.label: [r.get("analysis") for r in s.results] for s in results}
    return seeded.section(sys.modules[__name__], cfg, ctx, ranking, [table], figure(results, ctx), answer(results),
                          analysis_per_seed=per_seed)
