"""The parts every seeded comparison question shares: its plan, the ranking against the best, its table and record.

Q1, Q2, Q9 and Q10 train a few settings with the same seeds and ask which is
best and what the others look like next to it; their modules keep only what
differs (what is varied, the figure, the answer's wording).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from mlp_research.config import Config
from mlp_research.exercises import compare
from mlp_research.exercises.common import Context, Section, Table, fmt, run_setup
from mlp_research.exercises.hardware import device_label
from mlp_research.exercises.plan import Plan
from mlp_research.exercises.settings import STAT_EPOCHS, Setting, flatten, measure_seeded, record, seeded
from mlp_research.exercises.sweeps import Analyse, Trial
from mlp_research.stats import interval

Column = tuple[str, Callable[[Setting], Any]]
TRAIN_LOSS: Column = ("train loss (final) [95% CI]", lambda s: interval(s.final("train_loss")).text())
EPOCH_SECONDS: Column = ("epoch s (all seeds)", lambda s: fmt(s.first("steady_epoch_seconds"), 2))


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compared setting before it is trained: its label, the varied value, and its config (seeds aside)."""

    label: str
    value: Any
    config: Config


def trials(variants: Sequence[Variant], seeds: Sequence[int]) -> list[list[Trial]]:
    return [seeded(v.config, seeds, setting=v.label) for v in variants]


def plan(variants: Sequence[Variant], cfg: dict, ctx: Context, noun: str) -> Plan:
    """'8 widths x 5 seeds x 10 epochs' and every trial, in the shared pool."""
    epochs = max(v.config.max_epochs for v in variants)
    return Plan(f"{len(variants)} {noun} x {len(cfg['seeds'])} seeds x {epochs} epochs",
                [(ctx.trials, flatten(trials(variants, cfg["seeds"])))])


def measure(variants: Sequence[Variant], cfg: dict, ctx: Context, tag: str,
            analyse: Analyse | None = None) -> list[Setting]:
    """Train (or reuse) every seed of every variant; one `Setting` per variant, seeds in order."""
    return measure_seeded([v.label for v in variants], trials(variants, cfg["seeds"]), [v.value for v in variants],
                          ctx, tag, analyse)


def widths(cfg: dict, ctx: Context) -> list[Variant]:
    """One-hidden-layer variants of the question's base, one per width of `cfg["widths"]` (Q1, Q3)."""
    base = ctx.config(**cfg["base"])
    return [Variant(str(int(w)), int(w), base.replace(num_hiddens=(int(w),))) for w in cfg["widths"]]


@dataclasses.dataclass
class Ranking:
    """Settings with a reference (the best: highest mean statistic, or a baseline) and every other against it,
    paired by seed and Holm-corrected."""

    settings: list[Setting]
    best: int  # the reference's index
    versus: list[compare.Versus]
    role: str = "best"

    @property
    def top(self) -> Setting:
        return self.settings[self.best]

    def verdict(self, label: str) -> str:
        return next((v.verdict for v in self.versus if v.label == label), self.role)

    def sentence(self, what: str) -> str:
        return compare.verdict_sentence(self.top.label, self.versus, what, self.role)

    def record(self) -> dict:
        return {self.role: self.top.label, f"{self.role}_stat": self.top.interval().as_dict(),
                f"against_{self.role}": [v.record() for v in self.versus]}


def rank(settings: Sequence[Setting], reference: int | None = None) -> Ranking:
    """Against the best setting, or against `reference` (a baseline index) when given."""
    labels, values = [s.label for s in settings], [s.stat for s in settings]
    if reference is None:
        best, versus = compare.against_best(labels, values)
        return Ranking(list(settings), best, versus)
    rest = [i for i in range(len(settings)) if i != reference]
    versus = compare.versus(values[reference], [labels[i] for i in rest], [values[i] for i in rest])
    return Ranking(list(settings), reference, versus, "baseline")


def stat_text(setting: Setting) -> str:
    return setting.interval().text()


def table(ranking: Ranking, first: Column, extra: Sequence[Column] = ()) -> Table:
    """One row per setting: what varies, extra columns, the statistic with its 95% interval, final test accuracy
    (mean over seeds), and the verdict against the best."""
    rows = [[first[1](s)] + [f(s) for _, f in extra]
            + [stat_text(s), fmt(interval(s.final("test_acc")).mean), ranking.verdict(s.label)]
            for s in ranking.settings]
    n = len(ranking.settings[0].results)
    role = ranking.role
    return Table([first[0]] + [h for h, _ in extra] + [f"val acc, last {STAT_EPOCHS} epochs [95% CI]",
                                                       "test acc (final)", f"vs {role}"], rows,
                 f"mean over {n} seeds; 'vs {role}': paired by seed, Holm-corrected (above / below / equivalent "
                 f"within ±{compare.MARGIN:g} / cannot tell)")


def compose(module: Any, cfg: dict, ctx: Context, results: list[Setting], first: Column,
            extra: Sequence[Column] = (), reference: int | None = None, **record_extra: Any) -> Section:
    """The usual seeded question's Section: its ranking (against the best, or `reference`), one table, the
    module's `figure(results, ctx)` and `answer(results)`."""
    ranking = rank(results, reference)
    return section(module, cfg, ctx, ranking, [table(ranking, first, extra)], module.figure(results, ctx),
                   module.answer(results), **record_extra)


def section(module: Any, cfg: dict, ctx: Context, ranking: Ranking, tables: list[Table], figures: list[str],
            lines: tuple[str, str, str], setup: str = "", **extra: Any) -> Section:
    """A seeded question's Section: `lines` is (answer, one-line summary, evidence); `setup` replaces the line
    made from the base config (a question whose runs differ from it in more than the varied value)."""
    base = ctx.config(**cfg["base"])
    headline = record(ranking.settings, module.COMPARED, **ranking.record(), **extra)
    answer, summary, evidence = lines
    return Section(module.QID, module.TITLE, module.QUESTION, tables, figures, answer,
                   setup or run_setup(base, seeds=cfg["seeds"]), device_label(), headline, summary=summary,
                   evidence=evidence, precision=base.matmul_precision)
