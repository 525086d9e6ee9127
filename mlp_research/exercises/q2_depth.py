"""Q2: what adding hidden layers does, everything else fixed.

Each layout is trained with several seeds (one vmapped group per layout). The
answer compares every deeper layout with the one-hidden-layer baseline under
the noise rule, and says whether depth helped fitting (train loss) as well as
generalisation (validation accuracy).
"""

from __future__ import annotations

from mlp_research.exercises import hardware, settings
from mlp_research.exercises.common import Context, Section, Table, Work, run_setup, save_figure
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.settings import Setting
from mlp_research.exercises.stats import noise_sentence, pm, within_noise

TITLE = "More hidden layers"
QUESTION = "Add a hidden layer (and more). How does it change the results?"
DIR = "q2_depth"


def _trials(cfg: dict, ctx: Context) -> tuple[list[tuple[int, ...]], list[list]]:
    base = ctx.config(**cfg["base"])
    layouts = [tuple(int(w) for w in h) for h in cfg["hiddens"]]
    return layouts, [settings.seeded("hiddens_" + "-".join(map(str, h)), base.replace(num_hiddens=h), cfg["seeds"],
                                     hiddens=list(h)) for h in layouts]


def plan(cfg: dict, ctx: Context) -> Work:
    return settings.plan_seeded(_trials(cfg, ctx)[1], ctx.path(DIR, ""))


def measure(cfg: dict, ctx: Context) -> list[Setting]:
    layouts, per_layout = _trials(cfg, ctx)
    return settings.measure_seeded([str(list(h)) for h in layouts], per_layout, layouts, ctx, ctx.path(DIR, ""),
                                   "q2")


def figure(results: list[Setting], ctx: Context) -> list[str]:
    fig, axes = new_figure(2)
    for s in results:
        settings.band(axes[0], s, "train_loss")
        settings.band(axes[1], s, "val_acc")
    axes[0].set(xlabel="epoch", ylabel="train loss", title="Training loss (band: ±1 std over seeds)")
    axes[1].set(xlabel="epoch", ylabel="val accuracy", title="Validation accuracy (band: ±1 std)")
    axes[1].legend(fontsize=7)
    return [save_figure(fig, ctx, "q2_depth.png")]


def _baseline(results: list[Setting]) -> int:
    one = [i for i, s in enumerate(results) if len(s.value) == 1]
    return one[0] if one else 0


def answer(results: list[Setting]) -> str:
    ref = _baseline(results)
    base = results[ref]
    deeper = [s for s in results if len(s.value) > 1]
    better = [s for s in deeper if s.val.mean > base.val.mean and not within_noise(s.val, base.val)]
    worse = [s for s in deeper if s.val.mean < base.val.mean and not within_noise(s.val, base.val)]
    best = max(results, key=lambda s: s.val.mean if s.val.n else -1.0)
    fits = min(results, key=lambda s: s.final("train_loss").mean if s.final("train_loss").n else float("inf"))
    labels = [s.label for s in results]
    lead = (f"With everything else fixed, the one-hidden-layer baseline {base.label} has the highest mean validation "
            f"accuracy ({pm(base.val)}, test {pm(base.test)}). " if best is base else
            f"With everything else fixed, the highest mean validation accuracy is **{best.label}** ({pm(best.val)}, "
            f"test {pm(best.test)}) against {pm(base.val)} for the one-hidden-layer baseline {base.label}. ")
    if fits is base:
        fitting = (f"Extra layers do not even fit the training data better at this budget: the baseline has the "
                   f"lowest final train loss ({pm(base.final('train_loss'))}).")
    else:
        fitting = (f"Fitting the training set is another matter: the lowest final train loss is {fits.label}'s "
                   f"({pm(fits.final('train_loss'))}) against the baseline's {pm(base.final('train_loss'))}, so "
                   "extra layers fit the training data better even where validation accuracy does not follow.")
    return (lead + f"Of {len(deeper)} deeper layouts, {len(better)} beat the baseline beyond noise"
            + (f" ({', '.join(s.label for s in better)})" if better else "") + f" and {len(worse)} fall below it "
            "beyond noise" + (f" ({', '.join(s.label for s in worse)})" if worse else "") + ". "
            + noise_sentence(labels, [s.val for s in results], "layout") + " " + fitting)


def section(cfg: dict, ctx: Context) -> Section:
    results = measure(cfg, ctx)
    rows = [[s.label, len(s.value), s.results[0]["num_params"], pm(s.final("train_loss")),
             pm(s.final("train_acc")), *settings.spread_cells(s)] for s in results]
    table = Table(["hiddens", "layers", "params", "train_loss", "train_acc", "val_acc", "test_acc"], rows,
                  f"mean ± std over {results[0].seeds} seeds")
    base = ctx.config(**cfg["base"])
    return Section("q2", TITLE, QUESTION, [table], figure(results, ctx), answer(results),
                   run_setup(base, seeds=cfg["seeds"]), hardware.device_label(),
                   settings.headline(results, "num_hiddens (depth)"))
