"""Q10: does the weight initialisation matter?

Initialisations differ only in init and sigma, which vary per member, so every
initialisation and every seed trains in one vmapped program. After training
the analysis (on the parameters the driver hands back) counts distinct and
active hidden units: identical units are the symmetry problem of zero init.
"""

from __future__ import annotations

import numpy as np

from mlp_research.config import Config
from mlp_research.data import load_splits
from mlp_research.exercises import hardware, settings
from mlp_research.exercises.common import (
    Context,
    Section,
    Table,
    Work,
    fmt,
    run_setup,
    save_figure,
)
from mlp_research.exercises.common import (
    figure as new_figure,
)
from mlp_research.exercises.q3_single_neuron import forward_hidden
from mlp_research.exercises.settings import Setting
from mlp_research.exercises.stats import noise_sentence, pm

TITLE = "Weight initialisation"
QUESTION = "Compare weight initialisations. Does it matter?"
DIR = "q10_init"


def symmetry_analysis(config: Config, summary: dict) -> dict:
    """How different the hidden units are: identical units (symmetry) compute the same feature."""
    w1 = summary["params"]["W1"]
    hidden, _ = forward_hidden(summary["params"], load_splits(config).eval.images[:512], config.model.activation)
    return {"unit_spread": float(np.mean(np.std(w1, axis=1))),
            "distinct_units": int(len(np.unique(np.round(w1.T, 6), axis=0))),
            "active_units": int(np.sum(np.any(hidden > 0, axis=0)))}


def _init(base: Config, name: str) -> tuple[str, Config]:
    if name.startswith("normal_"):
        sigma = float(name.split("_", 1)[1])
        return f"normal({sigma:g})", base.replace(init="normal", sigma=sigma)
    return name, base.replace(init=name)


def _trials(cfg: dict, ctx: Context) -> tuple[list[str], list[list]]:
    base = ctx.config(**cfg["base"])
    labels, per = [], []
    for name in cfg["inits"]:
        label, config = _init(base, name)
        labels.append(label)
        per.append(settings.seeded(f"init_{name}", config, cfg["seeds"], init=label))
    return labels, per


def plan(cfg: dict, ctx: Context) -> Work:
    return settings.plan_seeded(_trials(cfg, ctx)[1], ctx.path(DIR, ""))


def measure(cfg: dict, ctx: Context) -> list[Setting]:
    labels, per = _trials(cfg, ctx)
    return settings.measure_seeded(labels, per, [t[0].config for t in per], ctx, ctx.path(DIR, ""), "q10",
                                   analyse=symmetry_analysis)


def _mean(s: Setting, key: str) -> float:
    values = [r["analysis"][key] for r in s.results if r.get("analysis")]
    return float(np.mean(values)) if values else float("nan")


def figure(results: list[Setting], ctx: Context) -> list[str]:
    fig, (ax,) = new_figure(1, width=6.5)
    for s in results:
        settings.band(ax, s, "val_acc")
    ax.set(xlabel="epoch", ylabel="val accuracy", title="Initialisations (band: ±1 std over seeds)")
    ax.legend(fontsize=7)
    return [save_figure(fig, ctx, "q10_init.png")]


def answer(results: list[Setting]) -> str:
    labels = [s.label for s in results]
    order = sorted(results, key=lambda s: -(s.val.mean if s.val.n else -1.0))
    diverged = [f"{s.label} ({s.diverged()} of {s.seeds} seeds)" for s in results if s.diverged()]
    zero = [s for s in results if s.value.model.init == "zeros"]
    zero_text = ""
    if zero:
        z = zero[0]
        zero_text = (f" Zeros show the symmetry problem: after training the {z.value.model.num_hiddens[0]} hidden "
                     f"units are {_mean(z, 'distinct_units'):.0f} distinct unit(s) on average "
                     f"({_mean(z, 'active_units'):.0f} ever active), because identical units get identical gradients "
                     f"(and with ReLU at 0, none), so the net reaches only {pm(z.val)} val_acc.")
    return (
        f"It matters. Best mean validation accuracy: **{order[0].label}** ({pm(order[0].val)}); ranking "
        + " > ".join(f"{s.label} {s.val.mean if s.val.n else float('nan'):.4f}" for s in order) + ". "
        + noise_sentence(labels, [s.val for s in results], "initialisation")
        + (f" Diverged: {', '.join(diverged)}: weights that large make the logits explode." if diverged else "")
        + zero_text + " The scaled schemes (xavier, he, lecun) keep each layer's output variance near its input's, "
        "which is why they train well without tuning sigma.")


def section(cfg: dict, ctx: Context) -> Section:
    results = measure(cfg, ctx)
    rows = [[s.label, pm(s.final("train_loss")), *settings.spread_cells(s), f"{s.diverged()}/{s.seeds}",
             fmt(_mean(s, "distinct_units"), 1), fmt(_mean(s, "active_units"), 1), fmt(_mean(s, "unit_spread"), 5)]
            for s in results]
    table = Table(["init", "train_loss", "val_acc", "test_acc", "diverged seeds", "distinct hidden units",
                   "active units", "mean std across units"], rows,
                  f"mean ± std over {results[0].seeds} seeds; unit counts are means over seeds")
    return Section("q10", TITLE, QUESTION, [table], figure(results, ctx), answer(results),
                   run_setup(ctx.config(**cfg["base"]), seeds=cfg["seeds"]) + "; all initialisations and seeds "
                   "trained together in one vmapped program", hardware.device_label(),
                   settings.headline(results, "init"))
