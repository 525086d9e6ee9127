"""Q9: which activation function works best.

An activation changes the computation, so each one is its own vmapped group
(its seeds train together). The ranking is by mean validation accuracy, and
the answer says which activations are within seed noise of the best.
"""

from __future__ import annotations

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
from mlp_research.exercises.settings import Setting
from mlp_research.exercises.stats import noise_groups, noise_sentence, pm

TITLE = "Activation functions"
QUESTION = "Try activation functions. Which works best?"
DIR = "q9_activation"


def _trials(cfg: dict, ctx: Context) -> tuple[list[str], list[list]]:
    base = ctx.config(**cfg["base"])
    acts = list(cfg["activations"])
    return acts, [settings.seeded(f"act_{a}", base.replace(activation=a), cfg["seeds"], activation=a) for a in acts]


def plan(cfg: dict, ctx: Context) -> Work:
    return settings.plan_seeded(_trials(cfg, ctx)[1], ctx.path(DIR, ""))


def measure(cfg: dict, ctx: Context) -> list[Setting]:
    acts, per_act = _trials(cfg, ctx)
    return settings.measure_seeded(acts, per_act, acts, ctx, ctx.path(DIR, ""), "q9")


def figure(results: list[Setting], ctx: Context) -> list[str]:
    fig, axes = new_figure(2)
    for s in results:
        settings.band(axes[0], s, "val_acc")
    axes[0].set(xlabel="epoch", ylabel="val accuracy", title="Activation functions (band: ±1 std over seeds)")
    axes[0].legend(fontsize=7)
    order = sorted(results, key=lambda s: -(s.val.mean if s.val.n else -1.0))
    axes[1].errorbar(range(len(order)), [s.val.mean for s in order], yerr=[s.val.std for s in order], fmt="o",
                     capsize=3)
    axes[1].set_xticks(range(len(order)), [s.label for s in order], rotation=30, fontsize=8)
    axes[1].set(ylabel="final val accuracy", title="Mean ± std, best first")
    return [save_figure(fig, ctx, "q9_activation.png")]


def answer(results: list[Setting]) -> str:
    labels = [s.label for s in results]
    b, tied, worse = noise_groups(labels, [s.val for s in results])
    order = sorted(results, key=lambda s: -(s.val.mean if s.val.n else -1.0))
    best, last = results[b], order[-1]
    return (
        f"Best mean validation accuracy: **{best.label}** ({pm(best.val)}, test {pm(best.test)}); ranking "
        + " > ".join(f"{s.label} {s.val.mean:.4f}" for s in order)
        + f". The spread from best to worst ({last.label}) is {best.val.mean - last.val.mean:.4f}. "
        + noise_sentence(labels, [s.val for s in results], "activation")
        + (" Sigmoid comes last: its gradient is at most 0.25 and vanishes when it saturates, so with the same "
           "learning rate and epochs it learns more slowly." if last.label == "sigmoid" and "sigmoid" in worse
           else ""))


def section(cfg: dict, ctx: Context) -> Section:
    results = measure(cfg, ctx)
    rows = [[s.label, pm(s.final("train_loss")), *settings.spread_cells(s),
             fmt(s.results[0]["steady_epoch_seconds"], 2)]
            for s in results]
    table = Table(["activation", "train_loss", "val_acc", "test_acc", "epoch s"], rows,
                  f"mean ± std over {results[0].seeds} seeds")
    return Section("q9", TITLE, QUESTION, [table], figure(results, ctx), answer(results),
                   run_setup(ctx.config(**cfg["base"]), seeds=cfg["seeds"]), hardware.device_label(),
                   settings.headline(results, "activation"))
