"""Q4: how the learning rate changes results, which is best, and how that depends on the number of epochs.

Command: python -m experiments.report --data_dir=../shared/data/fashion_mnist --only=q4 [--smoke]
The chapter's scratch MLP (784-256-10, SGD, batch 256) at a grid of constant learning rates, dense around the
optimum, on the full training split (54,000 / 6,000), 5 seeds each, all rates and seeds in one vmapped program.
The chapter trains at a constant rate, so the question is answered for constant rates: the first e epochs of a
40-epoch run are exactly the e-epoch run (same batches, same updates), and every budget is read from one run per
(rate, seed). A schedule that depends on the budget (a decay to zero over e epochs) would need a run per budget.
At each budget the statistic is the mean validation accuracy of the 3 epochs ending there. The best rate per
budget is the grid rate with the highest mean; its interval, and that of the relation (the slope of log2(best
rate) on log2(epochs)), come from resampling whole seeds (a bootstrap: which rate is best has no formula).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from typing import Callable

import numpy as np
from ml_collections import ConfigDict

from mlp_research import stats
from mlp_research.errors import ConfigError
from mlp_research.exercises import compare, seeded
from mlp_research.exercises import settings as settings_lib
from mlp_research.exercises.common import Context, Section, Table, run_setup, save_figure
from mlp_research.exercises.common import figure as new_figure
from mlp_research.exercises.plan import Plan
from mlp_research.exercises.settings import Setting, window_mean

QID = "q4"
TITLE = "Learning rate x epochs"
QUESTION = ("How does the learning rate change results? Which is best, and how does that depend on the number "
            "of epochs?")
COMPARED = "lr"


def get_config() -> ConfigDict:
    return ConfigDict(dict(
        base=dict(model="mlp_scratch", batch_size=256, schedule="constant", val_fraction=0.1, test_at_end=True),
        lrs=[0.05, 0.1, 0.2, 0.35, 0.6, 1.0],
        seeds=[0, 1, 2, 3, 4],
        epoch_budgets=[5, 10, 20, 30, 40],
        smoke=dict(lrs=[0.03, 0.3, 3.0], seeds=[0, 1, 2], epoch_budgets=[1, 2, 3], base=dict(train_subset=2000)),
    ))


RESAMPLES = 2000
TOLERANCE = 1e-9  # a fitted slope this small is a flat line (the same grid rate at every budget)


@dataclasses.dataclass
class Budget:
    """One epoch budget: every rate's per-seed statistic, the best rate against the others and its interval."""

    epochs: int
    per_lr: list[list[float]]  # [rate][seed]
    best: int
    versus: list[compare.Versus]
    rates: list[float]
    interval: tuple[float, float]  # 95% bootstrap interval of the best rate

    def rate_text(self) -> str:
        """'0.35 [0.2, 0.6]': the best grid rate and the 95% interval of which rate is best."""
        return f"{self.rates[self.best]:g} [{self.interval[0]:g}, {self.interval[1]:g}]"


def best_log2_rate(log2_rates: np.ndarray) -> Callable[[np.ndarray], float]:
    """The statistic 'log2 of the rate with the highest mean' of a [rate][seed] array (all-NaN rates never win)."""
    def statistic(values: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a rate whose every resampled seed diverged
            means = np.nanmean(values, axis=-1)
        return float(log2_rates[np.argmax(np.where(np.isfinite(means), means, -np.inf))])
    return statistic


def variants(cfg: dict, ctx: Context) -> list[seeded.Variant]:
    base = ctx.config(**cfg["base"]).replace(max_epochs=max(int(e) for e in cfg["epoch_budgets"]))
    if base.schedule != "constant":
        raise ConfigError("q4 reads shorter budgets off the longest run, which is exact only with a constant schedule")
    return [seeded.Variant(f"{float(lr):g}", float(lr), base.replace(lr=float(lr))) for lr in cfg["lrs"]]


def plan(cfg: dict, ctx: Context) -> Plan:
    p = seeded.plan(variants(cfg, ctx), cfg, ctx, "rates")
    return dataclasses.replace(p, shape=p.shape + " (every budget read from these runs)")


def budget(results: list[Setting], epochs: int) -> Budget:
    per_lr = [[window_mean(r, epochs) for r in s.results] for s in results]
    best, versus = compare.against_best([s.label for s in results], per_lr)
    rates = [float(s.value) for s in results]
    samples = stats.bootstrap(np.array(per_lr), best_log2_rate(np.log2(rates)), RESAMPLES)
    low, high = stats.percentile_interval(samples)
    return Budget(epochs, per_lr, best, versus, rates, (2**low, 2**high))


def measure(cfg: dict, ctx: Context) -> tuple[list[Setting], list[Budget]]:
    results = seeded.measure(variants(cfg, ctx), cfg, ctx, QID)
    return results, [budget(results, int(e)) for e in sorted(cfg["epoch_budgets"])]


@dataclasses.dataclass(frozen=True)
class Relation:
    """The slope of log2(best rate) on log2(epochs) over the budgets, and its 95% bootstrap interval."""

    slope: float
    low: float
    high: float

    def record(self) -> dict:
        return {"log2_best_lr_per_log2_epochs": self.slope, "ci95": [self.low, self.high],
                "method": f"seed bootstrap, {RESAMPLES} resamples"}


def relation(budgets: list[Budget]) -> Relation:
    log2_epochs = np.log2([b.epochs for b in budgets])
    pick = best_log2_rate(np.log2(budgets[0].rates))

    def slope(values: np.ndarray) -> float:  # values: [budget][rate][seed]
        return float(np.polyfit(log2_epochs, [pick(v) for v in values], 1)[0]) if len(budgets) > 1 else math.nan

    values = np.array([b.per_lr for b in budgets])
    return Relation(slope(values), *stats.percentile_interval(stats.bootstrap(values, slope, RESAMPLES)))


def relation_sentence(r: Relation, budgets: list[Budget]) -> str:
    """The one sentence on how the best rate depends on the budget, from the slope's interval."""
    first, last = budgets[0], budgets[-1]
    factor = (f"a factor {2 ** r.slope:.2f} [{2 ** r.low:.2f}, {2 ** r.high:.2f}] per doubling of the epochs "
              "(slope of log2 best rate on log2 epochs, 95% seed-bootstrap interval)")
    span = f"from {first.rate_text()} at {first.epochs} epochs to {last.rate_text()} at {last.epochs}"
    if max(abs(r.low), abs(r.high)) < TOLERANCE:
        return (f"The best grid rate is {first.rates[first.best]:g} at every budget from {first.epochs} to "
                f"{last.epochs} epochs, in every bootstrap resample: on this grid it does not depend on the budget.")
    if r.high < -TOLERANCE:
        return f"The best rate falls as the budget grows, {span}: {factor}."
    if r.low > TOLERANCE:
        return f"The best rate rises as the budget grows, {span}: {factor}."
    return (f"The data cannot tell whether the best rate depends on the budget between {first.epochs} and "
            f"{last.epochs} epochs ({span}; {factor}, an interval that includes 1).")


def figure(results: list[Setting], budgets: list[Budget], ctx: Context) -> list[str]:
    means = np.array([[stats.interval(v).mean for v in b.per_lr] for b in budgets]).T  # [lr][budget]
    fig, axes = new_figure(2)
    im = axes[0].imshow(np.ma.masked_invalid(means), aspect="auto", cmap="viridis")
    axes[0].set_xticks(range(len(budgets)), [str(b.epochs) for b in budgets])
    axes[0].set_yticks(range(len(results)), [s.label for s in results])
    for j, b in enumerate(budgets):
        for i in range(len(results)):
            if math.isfinite(means[i, j]):
                axes[0].text(j, i, f"{means[i, j]:.3f}", ha="center", va="center", fontsize=6,
                             color="w", weight="bold" if i == b.best else "normal")
    axes[0].set(xlabel="epochs", ylabel="learning rate", title="mean statistic (blank: every seed diverged)")
    fig.colorbar(im, ax=axes[0])
    best = [b.rates[b.best] for b in budgets]
    axes[1].errorbar([b.epochs for b in budgets], best, fmt="o-", capsize=3, yerr=np.nan_to_num(
        [[r - b.interval[0] for r, b in zip(best, budgets)], [b.interval[1] - r for r, b in zip(best, budgets)]]))
    axes[1].set(xscale="log", yscale="log", xlabel="epochs", ylabel="best learning rate",
                title="Best grid rate per budget (95% seed bootstrap)")
    return [save_figure(fig, ctx, "q4_learning_rate.png")]


def tables(results: list[Setting], budgets: list[Budget]) -> list[Table]:
    def cell(b: Budget, i: int) -> str:
        ci = stats.interval(b.per_lr[i])
        if not ci.n:
            return "div"
        text = f"{ci.mean:.4f} ±{ci.half_width:.4f}" if ci.n > 1 else f"{ci.mean:.4f}"
        return f"**{text}**" if i == b.best else text

    grid = [[s.label] + [cell(b, i) for b in budgets] for i, s in enumerate(results)]
    best = [[b.epochs, results[b.best].label, stats.interval(b.per_lr[b.best]).text(), b.rate_text(),
             ", ".join(v.label for v in b.versus if v.verdict != "below") or "none"] for b in budgets]
    n = len(results[0].results)
    return [Table(["lr \\ epochs"] + [str(b.epochs) for b in budgets], grid,
                  f"Validation accuracy of the {settings_lib.STAT_EPOCHS} epochs ending at each budget, mean ± half "
                  f"the 95% interval over {n} seeds (bold: best per budget; div: every seed diverged)"),
            Table(["epochs", "best grid rate", "its statistic [95% CI]", "best rate [95% bootstrap interval]",
                   "rates not separated from it (Holm)"], best, "The best rate per budget")]


def answer(results: list[Setting], budgets: list[Budget]) -> tuple[str, str, str]:
    """(answer, one-line summary, evidence), every number from the results."""
    r = relation(budgets)
    diverged = [s.label for s in results if s.diverged()]
    parts = [f"{b.epochs} epochs: **{results[b.best].label}** ({stats.interval(b.per_lr[b.best]).text()}; "
             f"best rate {b.rate_text()})" for b in budgets]
    last = budgets[-1]
    edges = [f"{b.epochs} ({results[b.best].label})" for b in budgets if b.best in (0, len(results) - 1)]
    edge = (f" At {', '.join(edges)} epochs the best rate is at the grid's edge: the optimum may lie beyond it."
            if edges else "")
    text = ("Best rate per epoch budget (statistic, 95% CI; which rate is best, 95% seed-bootstrap interval): "
            + "; ".join(parts) + ". " + relation_sentence(r, budgets) + edge + " "
            + compare.verdict_sentence(results[last.best].label, last.versus, f"rate at {last.epochs} epochs")
            + (f" Rates {', '.join(diverged)} diverged in at least one seed (non-finite loss)." if diverged else ""))
    summary = relation_sentence(r, budgets).split(":")[0].split(" (")[0]
    evidence = (f"slope {r.slope:+.2f} [{r.low:+.2f}, {r.high:+.2f}] log2 rate per doubling of the epochs; best at "
                f"{budgets[0].epochs}: {budgets[0].rate_text()}, at {last.epochs}: {last.rate_text()}")
    return text, summary, evidence


def section(cfg: dict, ctx: Context) -> Section:
    results, budgets = measure(cfg, ctx)
    ranking = seeded.Ranking(results, budgets[-1].best, budgets[-1].versus)
    best_by_epochs = {str(b.epochs): {"lr": b.rates[b.best], "lr_ci95": list(b.interval),
                                      "stat": stats.interval(b.per_lr[b.best]).as_dict(),
                                      "against_best": [v.record() for v in b.versus]} for b in budgets}
    base = ctx.config(**cfg["base"])
    setup = run_setup(base, max(b.epochs for b in budgets), cfg["seeds"], lr=f"{[s.value for s in results]}") + (
        f"; budgets {[b.epochs for b in budgets]} read from the same runs")
    return seeded.section(sys.modules[__name__], cfg, ctx, ranking, tables(results, budgets),
                          figure(results, budgets, ctx), answer(results, budgets), setup,
                          best_lr_by_epochs=best_by_epochs, relation=relation(budgets).record(),
                          per_budget_stat={str(b.epochs): b.per_lr for b in budgets})
