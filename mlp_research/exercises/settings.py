"""Settings compared over seeds: the trials of a setting, their spread, and the figures that show it.

A "setting" is one value of what a question varies (a width, a layout, an
activation). Each is trained with several seeds; seeds of one setting (and
settings of one shape) are one vmapped group in `sweeps.run_sweep`. Tables show
mean ± std, figures error bars or bands, and answers apply `stats.NOISE_RULE`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from mlp_research.config import Config
from mlp_research.exercises.common import Work
from mlp_research.exercises.stats import Spread, noise_groups, pm, spread
from mlp_research.exercises.sweeps import Analyse, Trial, pending_work, run_sweep


@dataclasses.dataclass
class Setting:
    """One compared setting and its per-seed results (sweep results, in seed order)."""

    label: str
    results: list[dict]
    value: Any = None  # the varied value itself (a width, a learning rate), for plots

    def final(self, key: str) -> Spread:
        """Per-seed final metric; a diverged seed counts as not finite."""
        return spread(float("nan") if r.get("diverged") else float(r["final"].get(key, float("nan")))
                      for r in self.results)

    @property
    def val(self) -> Spread:
        return self.final("val_acc")

    @property
    def test(self) -> Spread:
        return self.final("test_acc")

    @property
    def seeds(self) -> int:
        return len(self.results)

    def diverged(self) -> int:
        return sum(1 for r in self.results if r.get("diverged"))

    def mean_curve(self, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(epochs, mean, std) of a metric over the seeds whose history is complete and finite."""
        curves = [[row[key] for row in r.get("history", [])] for r in self.results if not r.get("diverged")]
        length = max((len(c) for c in curves), default=0)
        curves = [c for c in curves if len(c) == length and all(math.isfinite(v) for v in c)]
        if not curves or not length:
            return np.arange(0), np.zeros(0), np.zeros(0)
        values = np.asarray(curves, dtype=float)
        std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros(length)
        return np.arange(1, length + 1), values.mean(axis=0), std


def seeded(prefix: str, config: Config, seeds: Sequence[int], **labels: Any) -> list[Trial]:
    """The trials of one setting: `prefix_seed_K` for each seed."""
    return [Trial(f"{prefix}_seed_{s}", config.replace(seed=int(s)), {**labels, "seed": int(s)}) for s in seeds]


def width_trials(base: Config, widths: Sequence[int], seeds: Sequence[int]) -> tuple[list[int], list[list[Trial]]]:
    """The widths as ints, and each width's seeded trials (`width_W_seed_K`) of a one-hidden-layer `base`."""
    widths = [int(w) for w in widths]
    return widths, [seeded(f"width_{w}", base.replace(num_hiddens=(w,)), seeds, width=w) for w in widths]


def collect(labels: Sequence[str], trials_per_setting: Sequence[Sequence[Trial]], results: Sequence[dict],
            values: Sequence[Any] | None = None) -> list[Setting]:
    """Split a sweep's results (in trial order) back into settings."""
    by_name = {r["name"]: r for r in results}
    values = list(values) if values is not None else [None] * len(labels)
    return [Setting(label, [by_name[t.name] for t in trials], value)
            for label, trials, value in zip(labels, trials_per_setting, values)]


def flatten(trials_per_setting: Sequence[Sequence[Trial]]) -> list[Trial]:
    return [t for trials in trials_per_setting for t in trials]


def plan_seeded(trials_per_setting: Sequence[Sequence[Trial]], root: str) -> Work:
    """What a seeded comparison still has to train (for the report's time estimate)."""
    return pending_work(flatten(trials_per_setting), root)


def measure_seeded(labels: Sequence[str], trials_per_setting: Sequence[Sequence[Trial]], values: Sequence[Any],
                   ctx: Any, root: str, tag: str, analyse: Analyse | None = None) -> list[Setting]:
    """Train (or reuse) every seed of every setting and split the results back into settings."""
    results = run_sweep(flatten(trials_per_setting), root, log=ctx.log, tag=tag, analyse=analyse, clock=ctx.clock)
    return collect(labels, trials_per_setting, results, values)


def headline(settings: Sequence[Setting], what: str, **extra: Any) -> dict:
    """report.json's entry for a comparison: seeds, the chosen setting with mean and std, the noise verdict."""
    b, tied, worse = noise_groups([s.label for s in settings], [s.val for s in settings])
    best = settings[b]
    return {"seeds": min(s.seeds for s in settings), "compared": what, "chosen": best.label,
            "val_acc": {"mean": best.val.mean, "std": best.val.std},
            "test_acc": {"mean": best.test.mean, "std": best.test.std},
            "within_noise_of_chosen": tied, "below_chosen_beyond_noise": worse, **extra}


def spread_cells(setting: Setting, keys: Sequence[str] = ("val_acc", "test_acc")) -> list[str]:
    return [pm(setting.final(k)) for k in keys]


def error_bars(ax: Any, xs: Sequence[Any], settings: Sequence[Setting], key: str, label: str, fmt: str = "o-") -> None:
    """Mean ± std of a final metric per setting."""
    s = [st.final(key) for st in settings]
    ax.errorbar(xs, [v.mean for v in s], yerr=[v.std for v in s], fmt=fmt, capsize=3, label=label)


def band(ax: Any, setting: Setting, key: str, label: str | None = None) -> None:
    """A setting's mean curve with a ±1 std band over seeds."""
    epochs, mean, std = setting.mean_curve(key)
    if not len(epochs):
        return
    (line,) = ax.plot(epochs, mean, label=label or setting.label)
    ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
