"""What each question will run, so the report's cost can be checked by arithmetic before anything trains.

A question's `plan(cfg, ctx)` returns a `Plan`: its training trials by sweep
root, a one-line shape ("8 widths x 5 seeds x 10 epochs") and the seconds of
measurements that are not training (timings). From it come the work still
pending (for the report's remaining-time clock) and, with `--estimate`, the
whole work of a fresh run. Trials two questions share count once, for the
first question that lists them. Seconds are modelled as a start-up per driver
call, an overhead per training step and a rate in GFLOP/s (`Rates`).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

from mlp_research.exercises.common import Work, trial_work
from mlp_research.exercises.sweeps import Trial, pending
from mlp_research.run import members as members_lib


@dataclasses.dataclass(frozen=True)
class Rates:
    """The time model of `--estimate`. The defaults reproduce the published full report at 9a9a310 on this 2-core
    Intel Xeon CPU when quiet: its Q1 table (a width-8 epoch of 211 steps: 0.09 s, mostly per-step cost; widths
    256 / 1024 / 2048: 0.36 / 1.24 / 2.50 s, 160 GFLOP/s beyond it) and Q1's and Q10's totals (83 s and 30 s
    published, 80 s and 29 s modelled)."""

    run_seconds: float = 3.0  # start-up of one driver call (build, compile from the cache, data)
    step_seconds: float = 0.00035  # per training step: dispatch and the work that does not scale with FLOPs
    gflops: float = 160.0  # float32 training and evaluation arithmetic (`ModelSpec` FLOPs)

    def seconds(self, work: Work, run_seconds: float | None = None) -> float:
        runs = work.runs * (self.run_seconds if run_seconds is None else run_seconds)
        return runs + work.steps * self.step_seconds + work.gflop / self.gflops + work.seconds


@dataclasses.dataclass
class Plan:
    """A question's planned work: training sweeps (root, trials), their shape in words, and timed measurements."""

    shape: str
    sweeps: list[tuple[str, list[Trial]]] = dataclasses.field(default_factory=list)
    other: Work = Work()
    vmap: bool = True  # trials that can share a program train as one group (False: one driver call each)
    run_seconds: float | None = None  # start-up per driver call where it differs from `Rates.run_seconds`

    def work(self, seen: set[tuple[str, str]] | None = None, only_pending: bool = False) -> Work:
        """The work of trials not in `seen` (which this call extends), all or only those not finished yet."""
        seen = set() if seen is None else seen
        total = self.other
        for root, trials in self.sweeps:
            mine = [t for t in trials if (root, t.name) not in seen]
            seen.update((root, t.name) for t in mine)
            if only_pending:
                mine = pending(mine, root)
            total = total + sum((trial_work(t.config) for t in mine), Work()) + Work(runs=groups(mine, self.vmap))
        return total


def groups(trials: Sequence[Trial], vmap: bool = True) -> int:
    """Driver calls a fresh sweep of `trials` makes: one per group key when vmapping, else one per trial."""
    return len({members_lib.group_key(t.config) for t in trials}) if vmap else len(trials)


def as_plan(planned: Plan | Work) -> Plan:
    """A question that still plans in `Work` (q5 until it moves) fits the same table."""
    return planned if isinstance(planned, Plan) else Plan("(pending work only)", other=planned)


def estimate_rows(plans: Iterable[tuple[str, Plan]], rates: Rates) -> list[list]:
    """One row per question (and a total) for `--estimate`: shape, member-epochs, examples, GFLOP, runs, seconds."""
    seen: set[tuple[str, str]] = set()
    rows, total, total_seconds = [], Work(), 0.0
    for qid, plan in plans:
        w = plan.work(seen)
        seconds = rates.seconds(w, plan.run_seconds)
        total, total_seconds = total + w, total_seconds + seconds
        rows.append([qid, plan.shape, w.epochs, w.examples, round(w.gflop), w.runs, round(seconds)])
    rows.append(["total", "", total.epochs, total.examples, round(total.gflop), total.runs, round(total_seconds)])
    return rows


ESTIMATE_HEADERS = ["question", "plan", "member-epochs", "training examples", "GFLOP", "driver calls", "est. s"]
