"""Settings compared over seeds: the trials of a setting, its per-seed statistic, and the figures that show it.

A "setting" is one value of what a question varies (a width, a layout, an
activation). Each is trained with the same seeds; a seed fixes the
initialisation and the data order, so two settings are compared seed by seed
(`compare.py`). The accuracy statistic is less noisy than one end-of-epoch
value: the mean validation accuracy of the last `STAT_EPOCHS` epochs of each
run. Trials live in one pool (`ctx.trials`) and are named by their config, so
a config two questions share trains once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Sequence

import numpy as np

from mlp_research import stats
from mlp_research.config import Config
from mlp_research.exercises.sweeps import RESULT_NEUTRAL_FIELDS, Analyse, Trial, run_sweep

STAT_EPOCHS = 3
STATISTIC = (f"the mean validation accuracy of the last {STAT_EPOCHS} epochs of each run (of every epoch in runs "
             f"shorter than {STAT_EPOCHS})")


def window_mean(result: dict, end: int, k: int = STAT_EPOCHS) -> float:
    """Mean val_acc of epochs end-k+1..end of one run (all `end` epochs when fewer than k; NaN if it diverged or
    its history is shorter): one end-of-epoch value swings by a few points under a constant rate."""
    history = result.get("history", [])
    if result.get("diverged") or len(history) < end or end < 1:
        return math.nan
    return float(np.mean([row["val_acc"] for row in history[max(end - k, 0):end]]))


@dataclasses.dataclass
class Setting:
    """One compared setting and its per-seed results (sweep results, in seed order)."""

    label: str
    results: list[dict]
    value: Any = None  # the varied value itself (a width, a learning rate), for plots and trends

    def final(self, key: str) -> list[float]:
        """Per-seed final metric; a diverged seed counts as not finite."""
        return [math.nan if r.get("diverged") else float(r["final"].get(key, math.nan)) for r in self.results]

    @property
    def stat(self) -> list[float]:
        """Per-seed value of the report's accuracy statistic (`STATISTIC`)."""
        return [window_mean(r, len(r.get("history", []))) for r in self.results]

    def interval(self, key: str = "stat") -> stats.Interval:
        return stats.interval(self.stat if key == "stat" else self.final(key))

    @property
    def seeds(self) -> list[int]:
        return [int(r["labels"]["seed"]) for r in self.results]

    def diverged(self) -> int:
        return sum(1 for r in self.results if r.get("diverged"))

    def first(self, key: str) -> Any:
        """A summary value every seed shares (parameters, epoch time of the group)."""
        return self.results[0][key]

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

    def record(self) -> dict:
        """report.json's entry: every seed's values and the statistic's mean with its 95% interval."""
        ci = self.interval()
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"label": self.label, "value": value if isinstance(value, (int, float, str, list)) else None,
                "seeds": self.seeds, "stat": self.stat, "val_acc": self.final("val_acc"),
                "test_acc": self.final("test_acc"), "mean": ci.mean, "ci95": [ci.low, ci.high], "std": ci.std,
                "diverged": self.diverged()}


def pool_name(config: Config) -> str:
    """A trial's name in the shared pool: readable fields, a digest of the whole config (seed aside), the seed."""
    flat = {k: v for k, v in config.as_dict().items() if k not in RESULT_NEUTRAL_FIELDS and k != "seed"}
    digest = hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:8]
    m = config.spec
    return (f"{m.model}_{'-'.join(map(str, m.num_hiddens))}_{m.activation}_{m.init}_{config.optimizer}{config.lr:g}_"
            f"e{config.max_epochs}_{digest}_seed{config.seed}")


def seeded(config: Config, seeds: Sequence[int], **labels: Any) -> list[Trial]:
    """The trials of one setting, one per seed, named for the shared pool."""
    out = []
    for s in seeds:
        c = config.replace(seed=int(s))
        out.append(Trial(pool_name(c), c, {**labels, "seed": int(s)}))
    return out


def flatten(trials_per_setting: Sequence[Sequence[Trial]]) -> list[Trial]:
    return [t for trials in trials_per_setting for t in trials]


def collect(labels: Sequence[str], trials_per_setting: Sequence[Sequence[Trial]], results: Sequence[dict],
            values: Sequence[Any] | None = None) -> list[Setting]:
    """Split a sweep's results (in trial order) back into settings."""
    by_name = {r["name"]: r for r in results}
    values = list(values) if values is not None else [None] * len(labels)
    return [Setting(label, [by_name[t.name] for t in trials], value)
            for label, trials, value in zip(labels, trials_per_setting, values)]


def measure_seeded(labels: Sequence[str], trials_per_setting: Sequence[Sequence[Trial]], values: Sequence[Any],
                   ctx: Any, tag: str, analyse: Analyse | None = None) -> list[Setting]:
    """Train (or reuse) every seed of every setting in the shared pool and split the results back into settings."""
    results = run_sweep(flatten(trials_per_setting), ctx.trials, log=ctx.log, tag=tag, analyse=analyse,
                        clock=ctx.clock)
    return collect(labels, trials_per_setting, results, values)


def record(settings: Sequence[Setting], compared: str, **extra: Any) -> dict:
    """report.json's entry for a seeded comparison: sizes, the statistic, and every setting's per-seed values."""
    first = settings[0].results[0]
    return {"compared": compared, "seeds": min(len(s.results) for s in settings),
            "train_examples": int(first.get("num_train", 0)), "statistic": STATISTIC,
            "settings": [s.record() for s in settings], **extra}


def error_bars(ax: Any, xs: Sequence[Any], settings: Sequence[Setting], label: str, fmt: str = "o-") -> None:
    """The statistic's mean per setting with its 95% interval, and every seed as a dot."""
    cis = [s.interval() for s in settings]
    yerr = np.array([[c.mean - c.low for c in cis], [c.high - c.mean for c in cis]])
    ax.errorbar(xs, [c.mean for c in cis], yerr=np.nan_to_num(yerr), fmt=fmt, capsize=3, label=label)
    for x, s in zip(xs, settings):
        ax.scatter([x] * len(s.stat), s.stat, color="gray", s=8, zorder=3)


def band(ax: Any, setting: Setting, key: str, label: str | None = None) -> None:
    """A setting's mean curve with a ±1 std band over seeds."""
    epochs, mean, std = setting.mean_curve(key)
    if not len(epochs):
        return
    (line,) = ax.plot(epochs, mean, label=label or setting.label)
    ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
