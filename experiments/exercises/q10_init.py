"""Q10: does the weight initialisation matter?

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q10 [--smoke]
The concise MLP 784-256-10 ReLU (SGD lr 0.1, batch 256, 10 epochs) with normal(0.01 / 0.1 / 1), Xavier, He,
Flax's default (LeCun normal: Q2's baseline, reused) and zeros, on the full training split (54,000 / 6,000), 5
seeds each. Initialisations differ only in init and sigma, which vary per member, so every one of them and every
seed trains in one vmapped program. After training, the analysis counts distinct and active hidden units:
identical units are the symmetry problem of zero init.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from ml_collections import ConfigDict

from mlp_research.config import Config
from mlp_research.exercises import seeded
from mlp_research.exercises import settings as settings_lib
from mlp_research.exercises.common import Context, Section, fmt, save_figure
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.networks import eval_images, forward_hidden
from mlp_research.exercises.plan import Plan
from mlp_research.exercises.settings import Setting

QID = "q10"
TITLE = "Weight initialisation"
QUESTION = "Compare weight initialisations. Does it matter?"
COMPARED = "init"


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp", num_hiddens=[256], lr=0.1, batch_size=256, max_epochs=10, val_fraction=0.1,
                  test_at_end=True),
        inits=["normal_0.01", "normal_0.1", "normal_1", "xavier", "he", "default", "zeros"],
        seeds=[0, 1, 2, 3, 4],
        smoke=dict(seeds=[0, 1, 2], base=dict(num_hiddens=[64], max_epochs=2, train_subset=2000)),
    ))


def symmetry_analysis(config: Config, summary: dict) -> dict:
    """How different the hidden units are: identical units (symmetry) compute the same feature."""
    w1 = summary["params"]["W1"]
    hidden, _ = forward_hidden(summary["params"], eval_images(config, 512), config.activation)
    return {"unit_spread": float(np.mean(np.std(w1, axis=1))),
            "distinct_units": int(len(np.unique(np.round(w1.T, 6), axis=0))),
            "active_units": int(np.sum(np.any(hidden > 0, axis=0)))}


def _init(base: Config, name: str) -> seeded.Variant:
    if name.startswith("normal_"):
        sigma = float(name.split("_", 1)[1])
        config = base.replace(init="normal", sigma=sigma)
        return seeded.Variant(f"normal({sigma:g})", config, config)
    config = base.replace(init=name)
    return seeded.Variant("default (LeCun normal)" if name == "default" else name, config, config)


def variants(cfg: dict, ctx: Context) -> list[seeded.Variant]:
    base = ctx.config(**cfg["base"])
    return [_init(base, name) for name in cfg["inits"]]


def plan(cfg: dict, ctx: Context) -> Plan:
    return seeded.plan(variants(cfg, ctx), cfg, ctx, "initialisations")


def measure(cfg: dict, ctx: Context) -> list[Setting]:
    return seeded.measure(variants(cfg, ctx), cfg, ctx, QID, analyse=symmetry_analysis)


def _mean(s: Setting, key: str) -> float:
    values = [r["analysis"][key] for r in s.results if r.get("analysis")]
    return float(np.mean(values)) if values else math.nan


def figure(results: list[Setting], ctx: Context) -> list[str]:
    fig, (ax,) = new_figure(1, width=6.5)
    for s in results:
        settings_lib.band(ax, s, "val_acc")
    ax.set(xlabel="epoch", ylabel="val accuracy", title="Initialisations (band: ±1 std over seeds)")
    ax.legend(fontsize=7)
    return [save_figure(fig, ctx, "q10_init.png")]


def answer(results: list[Setting]) -> tuple[str, str, str]:
    """(answer, one-line summary, evidence), every number from the results."""
    ranking = seeded.rank(results)
    order = sorted(results, key=lambda s: -s.interval().mean if s.interval().n else 1.0)
    diverged = [f"{s.label} ({s.diverged()} of {len(s.results)} seeds)" for s in results if s.diverged()]
    below = [v for v in ranking.versus if v.verdict == "below"]
    zero = next((s for s in results if s.value.init == "zeros"), None)
    zero_text = "" if zero is None else (
        f" Zeros show the symmetry problem: after training the {zero.value.num_hiddens[0]} hidden units are "
        f"{_mean(zero, 'distinct_units'):.0f} distinct unit(s) on average ({_mean(zero, 'active_units'):.0f} ever "
        f"active), because identical units get identical gradients (and with ReLU at 0, none), so the net reaches "
        f"only {zero.interval().text()}.")
    matters = "It matters" if below or diverged else "The data show no initialisation below the best"
    text = (f"{matters}. Best statistic: **{order[0].label}** ({order[0].interval().text()}); ranking "
            + " > ".join(f"{s.label} {s.interval().mean:.4f}" for s in order) + ". "
            + ranking.sentence("initialisation")
            + (f" Diverged: {', '.join(diverged)}: weights that large make the logits explode." if diverged else "")
            + zero_text)
    summary = (f"{matters.lower()}: best {order[0].label}; {len(below)} of {len(ranking.versus)} below it"
               + (f"; {len(diverged)} diverged" if diverged else ""))
    evidence = (f"best {order[0].interval().text()}; "
                + "; ".join(v.text() for v in sorted(below, key=lambda v: v.difference.mean)[:2]))
    return text, summary, evidence


def section(cfg: dict, ctx: Context) -> Section:
    return seeded.compose(sys.modules[__name__], cfg, ctx, measure(cfg, ctx), ("init", lambda s: s.label), [
        seeded.TRAIN_LOSS, ("diverged seeds", lambda s: f"{s.diverged()}/{len(s.results)}"),
        ("distinct hidden units", lambda s: fmt(_mean(s, "distinct_units"), 1)),
        ("active units", lambda s: fmt(_mean(s, "active_units"), 1))])
