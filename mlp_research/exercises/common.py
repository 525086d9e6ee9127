"""Shared pieces of the exercise modules: the run context, a report section, the clock, plotting helpers.

Every question module (`experiments/exercises/q1_width.py` ...) has the same
parts, kept apart so each can be read, tested and reused alone: `measure(cfg,
ctx)` trains or times and returns plain results, `figure(...)` draws them,
`answer(...)` turns the numbers into sentences, and `section(cfg, ctx)`
composes them into a report `Section`. `plan(cfg, ctx)` says what it will run
(`plan.Plan`), so the report can say how long it has left, and `--estimate`
what a fresh run costs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from typing import Any, Callable, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mlp_research.config import Config  # noqa: E402
from mlp_research.files import atomic_path
from mlp_research.run.metrics import format_duration  # noqa: E402

Log = Callable[[str], None]
# The matmul precision of every training run of the report (one place: "bfloat16" trains the sweeps on the CPU's
# bfloat16 units where it has them; the report names the precision of each question).
TRAINING_PRECISION = "float32"
FIGURE_DPI = 90  # small PNGs: the published report stays well under its size budget
HEARTBEAT_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class Work:
    """Work to do: GFLOP of training and evaluation, runs (each with its start-up cost), member-epochs, training
    examples and steps processed, and seconds of measurements that are not training (timings)."""

    gflop: float = 0.0
    runs: int = 0
    epochs: int = 0
    examples: int = 0
    steps: int = 0
    seconds: float = 0.0

    def __add__(self, other: "Work") -> "Work":
        return Work(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


class Clock:
    """Elapsed and estimated remaining time of the whole report, from planned and measured work.

    Each question plans its pending work before it runs (`Work`: GFLOP and runs);
    every finished run or group reports its GFLOP and seconds. Time is modelled
    as a start-up cost per run plus a cost per GFLOP, both fitted (least squares)
    to what this machine has done so far: small runs are dominated by start-up,
    large ones by arithmetic, and the machine's speed is not known in advance.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.planned: dict[str, Work] = {}
        self.done: dict[str, Work] = {}
        self.samples: list[tuple[float, float, float]] = []  # (runs, gflop, seconds)

    def plan(self, qid: str, work: Work) -> None:
        self.planned[qid] = work
        self.done.setdefault(qid, Work())

    def record(self, qid: str, gflop: float, seconds: float, runs: int = 1) -> None:
        self.done[qid] = self.done.get(qid, Work()) + Work(max(float(gflop), 0.0), runs)
        self.samples.append((float(runs), max(float(gflop), 0.0), max(float(seconds), 0.0)))

    def finish(self, qid: str) -> None:
        """A question ended: whatever it planned and did not do is no longer ahead."""
        self.planned[qid] = self.done.get(qid, Work())

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def rates(self) -> tuple[float, float] | None:
        """(seconds per run, seconds per GFLOP) fitted to the samples; None before any."""
        if not self.samples:
            return None
        x = np.array([[r, g] for r, g, _ in self.samples])
        y = np.array([s for _, _, s in self.samples])
        if len(self.samples) >= 2 and np.linalg.matrix_rank(x) == 2:
            (per_run, per_gflop), *_ = np.linalg.lstsq(x, y, rcond=None)
            if per_run >= 0 and per_gflop >= 0:
                return float(per_run), float(per_gflop)
        runs, gflop = x.sum(axis=0)
        return (0.0, float(y.sum() / gflop)) if gflop > 0 else (float(y.sum() / max(runs, 1.0)), 0.0)

    def remaining(self, in_progress: Work = Work()) -> float | None:
        """Seconds left for the report, or None before any work has been timed."""
        rates = self.rates()
        if rates is None:
            return None
        left = Work()
        for qid, planned in self.planned.items():
            done = self.done.get(qid, Work())
            left = left + Work(max(planned.gflop - done.gflop, 0.0), max(planned.runs - done.runs, 0))
        gflop, runs = max(left.gflop - in_progress.gflop, 0.0), max(left.runs - in_progress.runs, 0)
        return rates[0] * runs + rates[1] * gflop

    def describe(self, in_progress: Work = Work()) -> str:
        left = self.remaining(in_progress)
        return f"report {format_duration(self.elapsed())} elapsed, " + (
            f"~{format_duration(left)} left" if left is not None else "remaining time not yet known")


@dataclasses.dataclass
class Context:
    """Where a report run writes, which data it uses, how big it is, and its clock."""

    workdir: str
    dataset: str = "fashion_mnist"
    data_dir: str = ""
    smoke: bool = False
    log: Log = print
    clock: Clock = dataclasses.field(default_factory=Clock)
    search_workers: int = 1
    matmul_precision: str = TRAINING_PRECISION

    def config(self, **overrides: Any) -> Config:
        """The base config of every exercise: this run's data, no per-epoch printing or per-run figure (the report
        draws its own), few checkpoint saves, and a
        persistent compilation cache in the workdir (a rerun, and a repeated program, skip XLA compilation)."""
        values: dict[str, Any] = dict(dataset=self.dataset, data_dir=self.data_dir, progress=False, plot=False,
                                      checkpoint_min_seconds=30.0, matmul_precision=self.matmul_precision,
                                      compilation_cache_dir=os.path.join(os.path.abspath(self.workdir), "jax_cache"))
        if self.dataset == "synthetic":
            values.update(synthetic_train_size=12_000, synthetic_test_size=2_000)
        values.update(overrides)
        return Config().replace(**values)

    @property
    def trials(self) -> str:
        """The trial pool every question shares: a config trained for one question is reused by the next (created
        by the first trial that trains there, so planning writes nothing)."""
        return os.path.join(self.workdir, "trials", "")

    def path(self, *parts: str) -> str:
        path = os.path.join(self.workdir, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path


@dataclasses.dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclasses.dataclass
class Section:
    """One question's part of the report: tables, figures (relative paths), the answer, the setup, headline numbers."""

    qid: str
    title: str
    question: str
    tables: list[Table]
    figures: list[str]
    answer: str
    setup: str
    hardware: str
    headline: dict = dataclasses.field(default_factory=dict)  # report.json's entry for this question
    seconds: float = 0.0  # wall time of the run that produced it
    summary: str = ""  # the answer in one line, for the table at the top of the report
    evidence: str = ""  # effect size, interval and test behind that line
    precision: str = ""  # the matmul precision of its training runs ("" when it trains nothing)


def deep_update(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def save_figure(fig: "plt.Figure", ctx: Context, name: str) -> str:
    """Save into the workdir's figures/ folder; returns the path relative to the workdir."""
    rel = os.path.join("figures", name)
    fig.tight_layout()
    try:
        with atomic_path(ctx.path(rel), suffix=".png") as tmp:
            fig.savefig(tmp, dpi=FIGURE_DPI, format="png")
    finally:
        plt.close(fig)
    return rel


def figure(ncols: int = 1, width: float = 5.0, height: float = 3.5) -> tuple["plt.Figure", Sequence[Any]]:
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def run_setup(base: Config, epochs: int | None = None, seeds: Sequence[int] = (), lr: str = "") -> str:
    """One line describing the fixed settings of an experiment (`lr`: how the rate is set, when it varies)."""
    n = base.num_train_examples()
    subset = " (a fixed subset of the training split)" if base.train_subset else ""
    seed_text = (f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), paired: a seed fixes the initialisation and the "
                 "data order of every setting" if len(seeds) > 1 else f"seed {seeds[0] if seeds else base.seed}")
    return (f"{base.dataset}: {n:,} training examples{subset}, validation fraction {base.val_fraction}; "
            f"{base.model}, {base.optimizer} lr={lr or format(base.lr, 'g')}, {base.schedule} schedule, "
            f"batch {base.batch_size}, "
            f"{epochs or base.max_epochs} epochs, matmul precision {base.matmul_precision}, {seed_text}")


def trial_gflop(config: Config) -> float:
    """Training plus per-epoch evaluation work of one run, in GFLOP (the `ModelSpec` FLOP definition)."""
    spec = config.spec
    total = 60_000 if config.dataset == "fashion_mnist" else config.synthetic_train_size
    n_eval = round(total * config.val_fraction) or (10_000 if config.dataset == "fashion_mnist"
                                                   else config.synthetic_test_size)
    per_epoch = spec.train_flops_per_example() * config.num_train_examples() + spec.flops_per_example() * n_eval
    return per_epoch * config.max_epochs / 1e9


def trial_work(config: Config) -> Work:
    """One trial's training as `Work` (its run is counted by whoever groups the trials into driver calls)."""
    n = config.num_train_examples()
    return Work(trial_gflop(config), 0, config.max_epochs, n * config.max_epochs,
                -(-n // config.batch_size) * config.max_epochs)
