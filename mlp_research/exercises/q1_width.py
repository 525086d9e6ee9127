"""Q1: how the hidden width changes accuracy, and which width is best.

Each width is trained with several seeds (one vmapped group per width); the
best width is the highest mean validation accuracy, and the answer names the
widths whose difference from it is within seed noise, so a lucky seed cannot
pick the winner.
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

TITLE = "Hidden width"
QUESTION = "Change num_hiddens and plot how it affects accuracy. Which value is best?"
DIR = "q1_width"


def _trials(cfg: dict, ctx: Context) -> tuple[list[int], list[list]]:
    return settings.width_trials(ctx.config(**cfg["base"]), cfg["widths"], cfg["seeds"])


def plan(cfg: dict, ctx: Context) -> Work:
    return settings.plan_seeded(_trials(cfg, ctx)[1], ctx.path(DIR, ""))


def measure(cfg: dict, ctx: Context) -> list[Setting]:
    widths, per_width = _trials(cfg, ctx)
    return settings.measure_seeded([str(w) for w in widths], per_width, widths, ctx, ctx.path(DIR, ""), "q1")


def figure(results: list[Setting], ctx: Context) -> list[str]:
    fig, (ax,) = new_figure()
    widths = [s.value for s in results]
    settings.error_bars(ax, widths, results, "train_acc", "train")
    settings.error_bars(ax, widths, results, "val_acc", "validation", "s-")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="num_hiddens", ylabel="accuracy", title=f"Accuracy vs width (mean ± std, {results[0].seeds} seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    return [save_figure(fig, ctx, "q1_width.png")]


def answer(results: list[Setting]) -> str:
    labels = [s.label for s in results]
    b, tied, _ = noise_groups(labels, [s.val for s in results])
    best = results[b]
    candidates = [s for s in results if s is best or s.label in tied]
    narrowest = min(candidates, key=lambda s: s.value)
    params = [s.results[0]["num_params"] for s in results]
    gaps = [s.final("train_acc").mean - s.val.mean for s in results]
    speed = results[-1].results[0]["steady_epoch_seconds"] / results[0].results[0]["steady_epoch_seconds"]
    return (
        f"The best mean validation accuracy is at width **{best.value}** ({best.val.mean:.4f} ± {best.val.std:.4f}, "
        f"test {best.test.mean:.4f} ± {best.test.std:.4f}). " + noise_sentence(labels, [s.val for s in results],
                                                                                "width") +
        f" The narrowest width that is statistically as good is {narrowest.value} "
        f"({params[results.index(narrowest)] / max(params[b], 1):.2g}x the best's parameters): past it, more units "
        f"buy no accuracy we can measure. The narrowest width tried ({results[0].value}) reaches "
        f"{results[0].val.mean:.4f}. The train-validation gap goes from {gaps[0]:+.4f} at width {results[0].value} to "
        f"{gaps[-1]:+.4f} at width {results[-1].value}, and an epoch takes {speed:.1f}x as long at the widest as at "
        f"the narrowest.")


def section(cfg: dict, ctx: Context) -> Section:
    results = measure(cfg, ctx)
    rows = [[s.value, s.results[0]["num_params"], pm(s.final("train_acc")), *settings.spread_cells(s),
             fmt(s.final("train_acc").mean - s.val.mean), fmt(s.results[0]["steady_epoch_seconds"], 2)]
            for s in results]
    table = Table(["num_hiddens", "params", "train_acc", "val_acc", "test_acc", "train-val gap", "epoch s"], rows,
                  f"mean ± std over {results[0].seeds} seeds")
    base = ctx.config(**cfg["base"])
    return Section("q1", TITLE, QUESTION, [table], figure(results, ctx), answer(results),
                   run_setup(base, seeds=cfg["seeds"]), hardware.device_label(),
                   settings.headline(results, "num_hiddens"))
