"""Q2: what adding hidden layers does, everything else fixed.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q2 [--smoke]
The concise MLP (Flax's LeCun init, so deeper stacks start with well-scaled signals; SGD lr 0.1, batch 256, 10
epochs) with 1 to 4 hidden layers of 256 units, on the full training split (54,000 / 6,000), 5 seeds per layout.
Every deeper layout is compared with the one-hidden-layer baseline, paired by seed and Holm-corrected; depth as a
whole is tested as a trend; the training loss says whether depth helped fitting even where validation does not
follow.
"""

from __future__ import annotations

import sys

from ml_collections import ConfigDict

from mlp_research import stats
from mlp_research.exercises import compare, seeded
from mlp_research.exercises import settings as settings_lib
from mlp_research.exercises.common import Context, Section, save_figure
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.plan import Plan
from mlp_research.exercises.settings import Setting

QID = "q2"
TITLE = "More hidden layers"
QUESTION = "Add a hidden layer (and more). How does it change the results?"
COMPARED = "num_hiddens (depth)"


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp", lr=0.1, batch_size=256, max_epochs=10, val_fraction=0.1, test_at_end=True),
        hiddens=[[256], [256, 256], [256, 256, 256], [256, 256, 256, 256]],
        seeds=[0, 1, 2, 3, 4],
        smoke=dict(hiddens=[[64], [64, 64], [64, 64, 64]], seeds=[0, 1, 2], base=dict(max_epochs=2,
                                                                                        train_subset=2000)),
    ))


def variants(cfg: dict, ctx: Context) -> list[seeded.Variant]:
    base = ctx.config(**cfg["base"])
    layouts = [tuple(int(w) for w in h) for h in cfg["hiddens"]]
    return [seeded.Variant(str(list(h)), h, base.replace(num_hiddens=h)) for h in layouts]


def plan(cfg: dict, ctx: Context) -> Plan:
    return seeded.plan(variants(cfg, ctx), cfg, ctx, "layouts")


def measure(cfg: dict, ctx: Context) -> list[Setting]:
    return seeded.measure(variants(cfg, ctx), cfg, ctx, QID)


def figure(results: list[Setting], ctx: Context) -> list[str]:
    fig, axes = new_figure(2)
    for s in results:
        settings_lib.band(axes[0], s, "train_loss")
        settings_lib.band(axes[1], s, "val_acc")
    axes[0].set(xlabel="epoch", ylabel="train loss", title="Training loss (band: ±1 std over seeds)")
    axes[1].set(xlabel="epoch", ylabel="val accuracy", title="Validation accuracy (band: ±1 std)")
    axes[1].legend(fontsize=7)
    return [save_figure(fig, ctx, "q2_depth.png")]


def baseline(results: list[Setting]) -> int:
    """The one-hidden-layer layout (the first if there is none)."""
    return next((i for i, s in enumerate(results) if len(s.value) == 1), 0)


def answer(results: list[Setting]) -> tuple[str, str, str]:
    """(answer, one-line summary, evidence), every number from the results."""
    ranking = seeded.rank(results, baseline(results))
    base = ranking.top
    tr = compare.trend([len(s.value) for s in results], [s.stat for s in results])
    deepest = max(results, key=lambda s: len(s.value))
    loss = stats.paired_difference(deepest.final("train_loss"), base.final("train_loss"))
    groups = compare.grouped(ranking.versus)
    fitting = (f"The deepest layout {deepest.label} ends with a training loss {loss.mean:+.4f} [{loss.low:+.4f}, "
               f"{loss.high:+.4f}] against the baseline (paired), so "
               + ("extra layers fit the training data better" if loss.high < 0 else
                  "extra layers fit the training data worse" if loss.low > 0 else
                  "the data cannot tell whether extra layers fit the training data better") + " at this budget.")
    text = (f"The one-hidden-layer baseline {base.label} reaches {base.interval().text()}. "
            + ranking.sentence("layout") + " "
            + compare.trend_sentence(tr, "the number of hidden layers", "added layer")
            + " " + fitting)
    counts = ", ".join(f"{len(groups[k])} {k}" for k in ("above", "below", "equivalent", "cannot tell") if groups[k])
    summary = f"against 1 hidden layer, the {len(ranking.versus)} deeper layouts are: {counts}"
    best_gain = max(ranking.versus, key=lambda v: v.difference.mean)
    evidence = (f"largest gain {best_gain.text()}; trend {tr.slope.mean:+.4f} [{tr.slope.low:+.4f}, "
                f"{tr.slope.high:+.4f}] per layer; train loss "
                f"{loss.mean:+.4f} [{loss.low:+.4f}, {loss.high:+.4f}] at {len(deepest.value)} layers")
    return text, summary, evidence


def section(cfg: dict, ctx: Context) -> Section:
    results = measure(cfg, ctx)
    tr = compare.trend([len(s.value) for s in results], [s.stat for s in results])
    return seeded.compose(sys.modules[__name__], cfg, ctx, results, ("hiddens", lambda s: s.label), [
        ("params", lambda s: s.first("num_params")), seeded.TRAIN_LOSS], baseline(results), trend=tr.record())
