"""The epoch loop of a run, the same for a single configuration and a vmapped group of them.

Per chunk the loop makes one backend call; per epoch one evaluation and one
host sync, then a metrics row per member. Checkpoints are saved for every
member at the same step (a member's checkpoint is a single run's), when due,
at the end, on a new best val_acc with --keep_best, and on a stop request;
members are pruned only after every member has saved the step. In runs that
span processes every stop and save decision is agreed collectively
(`Backend.agree`), so no process waits at a save the others skip.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Callable, Sequence

from mlp_research import schedules
from mlp_research.backends.base import Backend, GroupTrainer, Sums
from mlp_research.batching import EpochLayout
from mlp_research.config import Config
from mlp_research.errors import ConfigError, NonFiniteLossError, PreemptedError, StoppedBeforeCheckpointError, warn
from mlp_research.run import resume as resume_lib
from mlp_research.run.checkpoints import Checkpoints, Position, Resumed
from mlp_research.run.members import Member
from mlp_research.run.metrics import MetricsRow, MetricsWriter, remaining_seconds
from mlp_research.run.signals import StopRequest

EpochHook = Callable[[int, list[MetricsRow]], None]


@dataclasses.dataclass
class MemberRun:
    """One member's share of the run: its checkpoints, rows, writer and divergence."""

    member: Member
    checkpoints: Checkpoints
    rows: list[MetricsRow] = dataclasses.field(default_factory=list)
    writer: MetricsWriter | None = None
    first_nonfinite_step: int = -1
    saved: str | None = None  # the newest verified checkpoint of this member

    @property
    def diverged(self) -> bool:
        return self.first_nonfinite_step >= 0


class RunLoop:
    """Trains `trainer`'s members from their common checkpoint to `max_epochs`."""

    def __init__(self, config: Config, runs: Sequence[MemberRun], trainer: GroupTrainer, backend: Backend,
                 stop: StopRequest, primary: bool, on_epoch: EpochHook | None = None):
        self.config = config  # the settings every member shares (epochs, checkpoints, progress)
        self.runs, self.trainer, self.backend, self.stop = list(runs), trainer, backend, stop
        self.primary, self.on_epoch = primary, on_epoch
        self.layout: EpochLayout = trainer.layout
        self.position = Position()
        self.positions: list[Position] = [Position() for _ in self.runs]
        self.epoch_start = 0  # global step at the start of the current epoch
        self.resumed: Resumed | None = None
        self.behind: list[int] = []  # members below `target` after `resume` (they must catch up first)
        self.target: int | None = None
        self.until_step: int | None = None
        self.last_save = time.monotonic()
        self.epoch_seconds: list[float] = []
        self.started = time.perf_counter()

    # ------------------------------------------------------------- resume
    def resume(self) -> Resumed | None:
        """Restore every member from the newest step all of them hold intact; None for a fresh start.

        Members that share no such step are left as they are: `behind` lists the ones below
        `target`, which must train up to it (the driver's catch-up) before the group resumes.
        """
        plan = resume_lib.plan([r.checkpoints for r in self.runs], [r.member.config for r in self.runs],
                               self.trainer.abstract_state_dict())
        if plan.restored is not None:  # a position this layout cannot continue is refused before anything moves
            self._check_position(next(r for r in plan.restored if r is not None and r.step == plan.target))
        if plan.set_aside:  # every process read what it needed before the primary moves anything
            barrier(self.backend)
            for k, step, why in plan.set_aside:
                self.runs[k].checkpoints.set_aside(step, why)
            barrier(self.backend)
            for run in self.runs:
                run.checkpoints.refresh()
        for message in plan.warnings:
            warn(message)
        if plan.error is not None:
            raise plan.error
        self.behind, self.target = plan.behind, plan.target
        if plan.restored is None or self.behind:
            return None
        self.trainer.load_state_dicts([x.state for x in plan.restored])
        for k, (run, resumed) in enumerate(zip(self.runs, plan.restored)):
            run.rows = [MetricsRow.from_dict(row) for row in resumed.history]
            run.saved = resumed.path
            run.first_nonfinite_step = _stored_divergence(resumed, run.rows)
            self.positions[k] = resumed.position
        first = plan.restored[0]
        self.resumed, self.position = first, first.position
        self.epoch_start = first.step - first.position.step_in_epoch
        return first

    def _check_position(self, resumed: Resumed) -> None:
        at = resumed.position.step_in_epoch
        if at >= self.layout.steps_per_epoch and at:
            raise ConfigError(f"--data_dir: {resumed.path} stops at step {at} of an epoch, but an epoch of this "
                              f"training set has {self.layout.steps_per_epoch} steps; resume with the original data")
        if at % self.layout.steps_per_chunk:
            raise ConfigError(f"--steps_per_chunk: {resumed.path} stops at step {at} of an epoch, which is not a "
                              f"multiple of {self.layout.steps_per_chunk}; resume with the run's original "
                              "--steps_per_chunk")

    # -------------------------------------------------------------- train
    def run(self, until_step: int | None = None) -> None:
        """Train to `max_epochs`; with `until_step` (members catching up with their group), to that step,
        saved there, whatever `max_epochs` says."""
        self.until_step = until_step
        for epoch in itertools.count(self.position.epoch):
            if until_step is None and epoch >= self.config.max_epochs:
                return
            t0 = time.perf_counter()
            if self._train_epoch(epoch):
                return
            self._end_epoch(epoch, time.perf_counter() - t0)
            self.epoch_start += self.layout.steps_per_epoch
            if until_step is not None and self.epoch_start >= until_step:
                return

    def _train_epoch(self, epoch: int) -> bool:
        """Train the epoch's chunks; True if it reached `until_step` within the epoch (saved there)."""
        layout = self.layout
        resuming = epoch == self.position.epoch and self.position.step_in_epoch
        first_chunk = self.position.step_in_epoch // layout.steps_per_chunk if resuming else 0
        carried = [Sums(p.loss_sum, p.correct, p.count) for p in self.positions] if resuming else None
        self.trainer.start_epoch(epoch, carried)
        for chunk in range(first_chunk, layout.chunks_per_epoch):
            self.trainer.train_chunk(chunk)
            done = layout.steps_done(chunk)
            if done == layout.steps_per_epoch:
                return False
            step = self.epoch_start + done
            reached = step == self.until_step
            due = reached or self._periodic_due(self.config.checkpoint_every_steps, step, layout.steps_per_chunk)
            stop, due = self._agree(due)
            if stop or due:
                sums = self.trainer.epoch_sums()
                self._check_finite(sums, epoch + 1)
                self._save(step, [Position(epoch, done, s.loss_sum, s.correct, s.count) for s in sums])
            if stop:
                self._preempted()
            if reached:
                return True
        return False

    def _end_epoch(self, epoch: int, train_seconds: float) -> None:
        t0 = time.perf_counter()
        eval_sums = self.trainer.evaluate_eval_split()
        sums = self.trainer.epoch_sums()
        seconds = time.perf_counter() - t0 + train_seconds
        self.epoch_seconds.append(seconds)
        self._check_finite(sums, epoch + 1)
        step = self.epoch_start + self.layout.steps_per_epoch
        rows = [self._row(epoch, step, s, e, seconds,
                          schedules.learning_rate(run.member.config, self.layout.steps_per_epoch, step - 1))
                for run, s, e in zip(self.runs, sums, eval_sums)]
        new_best = self._record(rows, epoch)
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, rows)
        last = epoch + 1 == self.config.max_epochs
        due = last or new_best or step == self.until_step or \
            self._periodic_due(self.config.checkpoint_every_epochs, epoch + 1)
        stop, due = self._agree(due)
        if stop or due:
            self._save(step, [Position(epoch + 1, 0) for _ in self.runs])
        if stop and not last:  # after the last epoch the driver completes every output first
            self._preempted()

    def _row(self, epoch: int, step: int, sums: Sums, eval_sums: Sums, seconds: float, lr: float) -> MetricsRow:
        train_loss, train_acc = sums.means()
        val_loss, val_acc = eval_sums.means()
        return MetricsRow(epoch=epoch + 1, step=step, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
                          val_acc=val_acc, seconds=seconds, examples_per_second=self.layout.num_train / seconds,
                          lr=lr)

    def _record(self, rows: Sequence[MetricsRow], epoch: int) -> bool:
        """Append and write each member's row and progress line; True on a new best val_acc (--keep_best)."""
        new_best = False
        elapsed = time.perf_counter() - self.started
        remaining = remaining_seconds(self.epoch_seconds, self.config.max_epochs - epoch - 1)
        for run, row in zip(self.runs, rows):
            best = max((r.val_acc for r in run.rows if r.val_acc == r.val_acc), default=float("-inf"))
            new_best |= self.config.keep_best and row.val_acc > best and not run.diverged
            run.rows.append(row)
            if run.writer is not None:
                run.writer.write(row)
            if self.config.progress and self.primary:
                print(row.progress_line(self.config.max_epochs, elapsed, remaining, run.member.name), flush=True)
        return new_best

    # ---------------------------------------------------- checks and saves
    def _check_finite(self, sums: Sequence[Sums], epoch: int) -> None:
        """A single run stops (exit 4); a group records the member as diverged and goes on."""
        for run, s in zip(self.runs, sums):
            bad = int(s.first_nonfinite_step)
            if bad < 0 or run.diverged:
                continue
            message = (f"training loss became non-finite in epoch {epoch} at step {bad + 1} "
                       f"(step {bad - self.epoch_start + 1} of the epoch); try a smaller --lr")
            if not run.member.name:
                raise NonFiniteLossError(message)
            run.first_nonfinite_step = bad
            warn(f"member {run.member.name}: {message}; recorded as diverged, the others go on")
        if all(run.diverged for run in self.runs):
            raise NonFiniteLossError(
                f"every member of the group diverged (the last in epoch {epoch}); try a smaller --lr")

    def _periodic_due(self, every: int, count: int, stride: int = 1) -> bool:
        """`count` crossed a multiple of `every`, and the last save is `checkpoint_min_seconds` old."""
        crossed = every and count // every != (count - stride) // every
        return bool(crossed) and time.monotonic() - self.last_save >= self.config.checkpoint_min_seconds

    def _agree(self, due: bool) -> tuple[bool, bool]:
        stop = self.stop.requested
        if self.backend.process_count() > 1:
            stop, due = self.backend.agree(stop, due)
        if stop and not self.stop.requested:
            self.stop.request("SIGTERM (to another process of the run)")
        return stop, due

    def _save(self, step: int, positions: Sequence[Position]) -> None:
        """Every member saves `step`; only then is any member pruned, so a kill between two members' saves
        leaves every member the step before (the resume's common step)."""
        states, params = self.trainer.state_dicts(), self.trainer.get_params()
        histories = []
        for run, state, canonical, position in zip(self.runs, states, params, positions):
            if run.writer is not None:
                run.writer.sync()
            histories.append([dataclasses.asdict(r) for r in run.rows])
            run.saved = run.checkpoints.save(step, state, canonical, run.member.config, position, histories[-1],
                                             extra={"first_nonfinite_step": run.first_nonfinite_step})
        for run, history in zip(self.runs, histories):
            run.checkpoints.prune(history)
        self.last_save = time.monotonic()

    def _preempted(self) -> None:
        name = self.stop.signal_name or "a stop request"
        saved = self.runs[0].saved
        if saved is None:
            raise StoppedBeforeCheckpointError(f"stopped by {name} before a checkpoint was saved; nothing to resume")
        where = saved if len(self.runs) == 1 else f"{saved} and the other members' directories"
        raise PreemptedError(f"stopped by {name}; checkpoint saved in {where}; run the same command again to resume")


def barrier(backend: Backend) -> None:
    """Wait until every process of the run arrives here (the collective `agree`, its answer unused)."""
    if backend.process_count() > 1:
        backend.agree(False, False)


def _stored_divergence(resumed: Resumed, rows: Sequence[MetricsRow]) -> int:
    """A member that diverged before its checkpoint stays diverged (the step from its meta, else its rows)."""
    stored = int(resumed.extra.get("first_nonfinite_step", -1))
    if stored >= 0:
        return stored
    bad = [r for r in rows if not math.isfinite(r.train_loss)]
    return bad[0].step if bad else -1
