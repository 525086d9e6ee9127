"""Q9: which activation function works best.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q9 [--smoke]
The concise MLP 784-256-10 (LeCun init, SGD lr 0.1, batch 256, 10 epochs) with each activation, on the full
training split (54,000 / 6,000), 5 seeds each (an activation changes the computation, so each is its own vmapped
group; relu is Q2's baseline, reused from the shared pool). The best activation is compared with every other,
paired by seed and Holm-corrected.
"""

from __future__ import annotations

import sys

from ml_collections import ConfigDict

from mlp_research.exercises import seeded
from mlp_research.exercises import settings as settings_lib
from mlp_research.exercises.common import Context, Section, save_figure
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.plan import Plan
from mlp_research.exercises.settings import Setting

QID = "q9"
TITLE = "Activation functions"
QUESTION = "Try activation functions. Which works best?"
COMPARED = "activation"


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp", num_hiddens=[256], lr=0.1, batch_size=256, max_epochs=10, val_fraction=0.1,
                  test_at_end=True),
        activations=["relu", "sigmoid", "tanh", "gelu", "silu", "leaky_relu", "elu"],
        seeds=[0, 1, 2, 3, 4],
        smoke=dict(activations=["relu", "sigmoid", "tanh"], seeds=[0, 1, 2],
                   base=dict(num_hiddens=[64], max_epochs=2, train_subset=2000)),
    ))


def variants(cfg: dict, ctx: Context) -> list[seeded.Variant]:
    base = ctx.config(**cfg["base"])
    return [seeded.Variant(a, a, base.replace(activation=a)) for a in cfg["activations"]]


def plan(cfg: dict, ctx: Context) -> Plan:
    return seeded.plan(variants(cfg, ctx), cfg, ctx, "activations")


def measure(cfg: dict, ctx: Context) -> list[Setting]:
    return seeded.measure(variants(cfg, ctx), cfg, ctx, QID)


def figure(results: list[Setting], ctx: Context) -> list[str]:
    fig, axes = new_figure(2)
    for s in results:
        settings_lib.band(axes[0], s, "val_acc")
    axes[0].set(xlabel="epoch", ylabel="val accuracy", title="Activation functions (band: ±1 std over seeds)")
    axes[0].legend(fontsize=7)
    order = sorted(results, key=lambda s: -s.interval().mean if s.interval().n else 1.0)
    settings_lib.error_bars(axes[1], list(range(len(order))), order, "statistic (95% CI)", fmt="o")
    axes[1].set_xticks(range(len(order)), [s.label for s in order], rotation=30, fontsize=8)
    axes[1].set(ylabel="val accuracy, last epochs", title="Mean with 95% CI, best first (dots: seeds)")
    return [save_figure(fig, ctx, "q9_activation.png")]


def answer(results: list[Setting]) -> tuple[str, str, str]:
    """(answer, one-line summary, evidence), every number from the results."""
    ranking = seeded.rank(results)
    best = ranking.top
    order = sorted(results, key=lambda s: -s.interval().mean if s.interval().n else 1.0)
    last = order[-1]
    worst = next(v for v in ranking.versus if v.label == last.label) if last is not best else None
    below = [v.label for v in ranking.versus if v.verdict == "below"]
    text = (f"Best statistic: **{best.label}** ({best.interval().text()}); ranking "
            + " > ".join(f"{s.label} {s.interval().mean:.4f}" for s in order) + ". " + ranking.sentence("activation")
            + (" Sigmoid comes last and below the best: its gradient is at most 0.25 and vanishes when it saturates, "
               "so with the same learning rate and epochs it learns more slowly." if last.label == "sigmoid"
               and "sigmoid" in below else ""))
    tied = [v.label for v in ranking.versus if v.verdict != "below"]
    summary = (f"best {best.label}; " + (f"not separated from it: {', '.join(tied)}" if tied else
                                         "every other activation below it"))
    evidence = (f"best {best.interval().text()}; " + (f"worst {worst.text()}" if worst else "")
                + f"; {len(below)} of {len(ranking.versus)} below after Holm")
    return text, summary, evidence


def section(cfg: dict, ctx: Context) -> Section:
    return seeded.compose(sys.modules[__name__], cfg, ctx, measure(cfg, ctx), ("activation", lambda s: s.label),
                          [seeded.TRAIN_LOSS, seeded.EPOCH_SECONDS])
