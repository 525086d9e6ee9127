"""The run driver: `train_and_evaluate(config, workdir)`, and `train_group(group)` for vmapped groups.

One driver for every way of training. It owns what a user sees identically in
every framework: the work directories and their locks, data loading, the epoch
loop (`loop.py`), metrics rows and their writers, checkpoints and resume,
signals, the plot and the summary. The backend it is handed (or finds by name
in the registry) owns the framework. The order matters for what a failure
leaves behind: every check that can refuse the run runs before anything in a
work directory changes, and a run that fails before it wrote a row or a
checkpoint leaves its work directories as it found them (`_Made`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import time
from typing import Any, Sequence

from mlp_research import launchers
from mlp_research.backends import registry
from mlp_research.backends.adapter import as_backend
from mlp_research.backends.base import Backend, GroupTrainer, check_config
from mlp_research.config import Config
from mlp_research.data import Splits, load_splits
from mlp_research.errors import (
    ConfigError,
    NonFiniteLossError,
    OutOfMemoryError,
    PreemptedError,
    StoppedBeforeCheckpointError,
    UserError,
    warn,
)
from mlp_research.run import checkpoints as checkpoints_lib
from mlp_research.run import members as members_lib
from mlp_research.run import metrics as metrics_lib
from mlp_research.run import plots, signals
from mlp_research.run import workdir as workdir_lib
from mlp_research.run.checkpoints import Checkpoints
from mlp_research.run.loop import EpochHook, MemberRun, RunLoop, barrier
from mlp_research.run.members import Group, Member
from mlp_research.run.summary import build_summary, group_summary
from mlp_research.run.trainers import OneMember

_OOM = re.compile(r"RESOURCE_EXHAUSTED|out of memory|OutOfMemory|ResourceExhausted", re.IGNORECASE)


def train_and_evaluate(config: Config, workdir: str, restart: bool = False, backend: Backend | None = None,
                       on_epoch: EpochHook | None = None, launch: dict | None = None) -> dict:
    """Train `config` in `workdir`, resuming from its latest checkpoint unless `restart`.

    Returns the summary (also written to workdir/summary.json) plus the final
    canonical parameters under "params" and the metrics rows under "rows".
    """
    return _train(config, workdir, None, restart, backend, on_epoch, launch)[0]


def train_group(group: Group, restart: bool = False, backend: Backend | None = None,
                on_epoch: EpochHook | None = None, launch: dict | None = None) -> list[dict]:
    """Train a vmapped group in one program; each member's summary (as `train_and_evaluate`'s), in member order."""
    return _train(group.shared, group.workdir, group, restart, backend, on_epoch, launch)


def _train(config: Config, workdir: str, group: Group | None, restart: bool, backend: Backend | None,
           on_epoch: EpochHook | None, launch: dict | None) -> list[dict]:
    """A failed allocation, wherever it happens, becomes one line naming the flags that size the run."""
    try:
        return _run(config, workdir, group, restart, backend, on_epoch, launch)
    except BaseException as e:  # numpy's MemoryError, XLA's RESOURCE_EXHAUSTED, a framework's own
        if isinstance(e, UserError) or not (isinstance(e, MemoryError) or _OOM.search(f"{type(e).__name__}: {e}")):
            raise
        what = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)[:160]
        raise OutOfMemoryError(
            f"--num_hiddens: the model ({config.num_params():,} parameters) with --batch_size="
            f"{config.batch_size} does not fit in this machine's memory ({what}); use smaller --num_hiddens or "
            "--batch_size") from None


def _run(config: Config, workdir: str, group: Group | None, restart: bool, backend: Backend | None,
         on_epoch: EpochHook | None, launch: dict | None) -> list[dict]:
    start = time.perf_counter()
    made = _Made()
    # Where each trained configuration writes: the run's own workdir, or each member's sub-directory.
    outputs = list(group.members) if group is not None else [Member("", config, workdir)]
    with signals.STOP.scoped() as stop, contextlib.ExitStack() as stack:
        backend = as_backend(backend) if backend is not None else registry.prepared(config)
        _check(backend, config, group)
        primary = backend.process_index() == 0
        alone = backend.process_count() == 1  # with other processes, stops are agreed in the loop
        _stop_point(stop, "start-up", alone)
        made.found = _open_workdirs(stack, outputs, workdir, group, restart, primary)
        stack.push(made.undo_on_failure)  # runs before the locks are released
        t0 = time.perf_counter()
        splits = load_splits(config)
        data_seconds = time.perf_counter() - t0
        _stop_point(stop, "loading the data", alone)
        trainer = _build_trainer(backend, config, group.members if group is not None else None, splits)
        _stop_point(stop, "compiling", alone)
        made.runs = _member_runs(stack, backend, config, outputs, group, restart, primary)
        loop = RunLoop(config, made.runs, trainer, backend, stop, primary, on_epoch)
        resumed = _resume(loop, splits)
        run_facts = {"num_train": len(splits.train), "num_eval": len(splits.eval), "eval_split": splits.eval.name,
                     "data_source": splits.source, "data_seconds": data_seconds,
                     "compile_seconds": trainer.compile_seconds, "process_index": backend.process_index(),
                     "process_count": backend.process_count(), "launch": launch or {},
                     "framework_version": backend.version(),
                     "resumed_from_step": resumed.step if resumed else None}
        if config.progress and primary:
            _print_header(config, splits, trainer, run_facts, loop, len(outputs))
        _open_writers(made.runs, primary)
        _run_loop(loop, run_facts, start, primary)
        summaries = _finish(loop, splits, run_facts, start, primary, group)
        if stop.requested:  # asked to stop while the final outputs were written: they are complete
            raise PreemptedError(f"stopped by {stop.signal_name} after the last epoch; checkpoint "
                                 f"{made.runs[0].saved} and every output are complete")
        return summaries


@dataclasses.dataclass
class _Made:
    """What this run found in its work directories before it changed them, and its members' runs once opened.

    A run that fails (or stops) before it wrote a metrics row or a checkpoint leaves its work directories
    as it found them: the ones it created are removed, and so is what it added to the others (`.lock`, an
    empty `checkpoints/`, ...). Nothing in them could be resumed. Only the primary process removes.
    """

    found: dict[str, set[str] | None] = dataclasses.field(default_factory=dict)  # entries; None: created
    runs: list[MemberRun] = dataclasses.field(default_factory=list)

    def undo_on_failure(self, kind: type | None, *_: object) -> bool:
        """An exit callback of the run's ExitStack (it runs while the locks are still held)."""
        if kind is None or any(run.saved or run.rows for run in self.runs):
            return False
        for path, entries in reversed(self.found.items()):
            if entries is None:
                shutil.rmtree(path, ignore_errors=True)
                continue
            for entry in set(os.listdir(path)) - entries:
                added = os.path.join(path, entry)
                shutil.rmtree(added, ignore_errors=True) if os.path.isdir(added) else os.remove(added)
        return False  # the failure goes on


def _member_runs(stack: contextlib.ExitStack, backend: Backend, config: Config, outputs: Sequence[Member],
                 group: Group | None, restart: bool, primary: bool) -> list[MemberRun]:
    """Only now, with flags, data and compilation known good, does any work directory change.

    The primary process makes the changes while the others wait (they have read the work
    directories already), and every process lists the checkpoints only after them: from
    here on every process of the run holds the same list.
    """
    barrier(backend)
    if primary:
        for m in outputs:
            if restart:
                workdir_lib.discard(m.workdir)
            checkpoints_lib.remove_unfinished(m.workdir)
        if group is not None:
            members_lib.write_group(group)
    barrier(backend)
    return [MemberRun(m, stack.enter_context(contextlib.closing(
        Checkpoints(m.workdir, keep=config.keep_checkpoints, keep_best=config.keep_best, primary=primary))))
        for m in outputs]


def _resume(loop: RunLoop, splits: Splits) -> Any:
    """`loop.resume()`; members behind the others first train alone, as a smaller group, up to their step.

    Members share no intact step only where a group was written before pruning waited for every
    member (or a member's checkpoints were lost): each then restored its own newest intact step.
    """
    resumed = loop.resume()
    while loop.behind:
        runs = [loop.runs[k] for k in loop.behind]
        if loop.primary and loop.config.progress:
            print(f"{', '.join(r.member.name for r in runs)} behind the other members: training them alone up to "
                  f"step {loop.target}", flush=True)
        trainer = _build_trainer(loop.backend, loop.config, [r.member for r in runs], splits)
        catch_up = RunLoop(loop.config, runs, trainer, loop.backend, loop.stop, loop.primary)
        _resume(catch_up, splits)
        _open_writers(runs, loop.primary)
        try:
            catch_up.run(until_step=loop.target)
        finally:
            for run in runs:
                if run.writer is not None:
                    run.writer.close()
                    run.writer = None
        resumed = loop.resume()
    return resumed


def _run_loop(loop: RunLoop, run_facts: dict, start: float, primary: bool) -> None:
    """The epochs, then each member's TensorBoard session ended with how the run ended."""
    status = None
    try:
        loop.run()
        status = "success"
    except NonFiniteLossError:
        status = "failure"
        if primary:  # the run is over: say so where compare and TensorBoard look
            for run in loop.runs:
                if run.rows:
                    _write_member_outputs(run, _summary(loop, run, run_facts, start, "diverged"))
        raise
    finally:
        for run in loop.runs:
            if run.writer is not None:
                run.writer.close("failure" if run.diverged and status else status)


def _check(backend: Backend, config: Config, group: Group | None) -> None:
    """Everything that can refuse the run from its flags alone."""
    if group is None:
        check_config(backend, config)
        return
    for m in group.members:
        check_config(backend, m.config)
    if not backend.trains_groups:
        raise ConfigError(f"--vmap: the {backend.name} backend trains one configuration at a time")
    if len({members_lib.group_key(m.config) for m in group.members}) != 1:
        raise ConfigError("--vmap: members may differ only in " + ", ".join(members_lib.VMAP_FIELDS))


def _stop_point(stop: signals.StopRequest, phase: str, alone: bool) -> None:
    if stop.requested and alone:
        raise StoppedBeforeCheckpointError(f"stopped by {stop.signal_name} while {phase}; nothing was saved "
                                           "(an earlier checkpoint, if any, is unchanged)")


def _open_workdirs(stack: contextlib.ExitStack, outputs: Sequence[Member], workdir: str, group: Group | None,
                   restart: bool, primary: bool) -> dict[str, set[str] | None]:
    """Check, create and lock every directory of the run; what each held before (None: created), for `_Made`."""
    dirs = ([workdir] if group is not None else []) + [m.workdir for m in outputs]
    for path in dirs:
        workdir_lib.check_workdir(path)
        workdir_lib.refuse_damage(path, restart)
    if not restart:  # refuse a mismatched resume before anything in the workdir changes
        members_lib.check_group_resume(workdir, group)
        for m in outputs:
            with contextlib.closing(Checkpoints(m.workdir, read_only=True)) as existing:
                existing.check_compatible(m.config)
    if not primary:
        return {}
    found = {path: set(os.listdir(path)) if os.path.isdir(path) else None for path in dirs}
    for path in dirs:
        workdir_lib.prepare_workdir(path)
        stack.enter_context(workdir_lib.WorkdirLock(path, launchers.launch_hint))
    return found


def _build_trainer(backend: Backend, config: Config, members: Sequence[Member] | None, splits: Splits
                   ) -> GroupTrainer:
    """The backend's trainer for `config` alone, or for the group's `members`, compiled ahead of time
    (so epoch times exclude compilation)."""
    if config.batch_size > len(splits.train):
        raise ConfigError(f"--batch_size: {config.batch_size} is larger than the training set ({len(splits.train)})")
    if members is None:
        trainer = OneMember(backend.trainer(config, splits))
    else:
        trainer = backend.group_trainer([m.config for m in members], splits)
    trainer.compile()
    return trainer


def _open_writers(runs: Sequence[MemberRun], primary: bool) -> None:
    """metrics.jsonl rewritten from each member's checkpoint history (no duplicates, no gaps), then appended."""
    if not primary:
        return
    for run in runs:
        metrics_lib.write_rows(run.member.workdir, run.rows)
        run.writer = metrics_lib.MetricsWriter(run.member.workdir, hparams=_hparams(run.member.config))


def _hparams(config: Config) -> dict[str, Any]:
    flat = config.as_dict()
    flat["num_hiddens"] = ",".join(map(str, flat["num_hiddens"]))
    return {k: v for k, v in flat.items() if k not in ("progress", "data_dir", "compilation_cache_dir")}


def _finish(loop: RunLoop, splits: Splits, run_facts: dict, start: float, primary: bool, group: Group | None
            ) -> list[dict]:
    """Test evaluation, summaries, plots; returns each member's summary with its parameters."""
    config, runs = loop.config, loop.runs
    if not runs[0].rows:
        raise ConfigError(f"--max_epochs: {config.max_epochs} trains nothing; the run is empty")
    tests = None
    if config.test_at_end and splits.eval is not splits.test:
        tests = loop.trainer.evaluate(splits.test.images, splits.test.labels)
    summaries = []
    for k, (run, params) in enumerate(zip(runs, loop.trainer.get_params())):
        summary = _summary(loop, run, run_facts, start, "finished")
        if tests is not None:
            test_loss, test_acc = tests[k].means()
            summary["final"].update(test_loss=test_loss, test_acc=test_acc)
        if group is not None:
            summary["group"] = {"workdir": group.workdir, "member": run.member.name, "size": len(runs)}
        if primary:
            _write_member_outputs(run, summary)
        summaries.append({**summary, "params": params, "rows": list(run.rows)})
    where = loop.trainer.describe()
    run_facts = {**run_facts, "total_seconds": time.perf_counter() - start}
    if group is not None and primary:
        names = [run.member.name for run in runs]
        metrics_lib.write_json(os.path.join(group.workdir, metrics_lib.SUMMARY_FILE),
                               group_summary(summaries, names, group.axes, where, run_facts))
    return summaries


def _summary(loop: RunLoop, run: MemberRun, run_facts: dict, start: float, status: str) -> dict:
    facts = {**run_facts, "total_seconds": time.perf_counter() - start}
    summary = build_summary(run.member.config, run.rows, loop.trainer.describe(), facts)
    summary.update(status="diverged" if run.diverged else status, diverged=run.diverged,
                   first_nonfinite_step=run.first_nonfinite_step, checkpoint=run.saved)
    return summary


def _write_member_outputs(run: MemberRun, summary: dict) -> None:
    workdir, config = run.member.workdir, run.member.config
    spec = config.spec
    title = (f"{config.backend} {spec.model} {list(spec.layer_sizes)} {spec.activation}, "
             f"{config.optimizer} lr={config.lr}, batch {config.batch_size}")
    if config.plot and not plots.plot_curves(run.rows, os.path.join(workdir, metrics_lib.CURVES_FILE), title=title):
        warn(f"matplotlib is not installed: {metrics_lib.CURVES_FILE} not written (metrics.jsonl has every value)")
    metrics_lib.write_json(os.path.join(workdir, metrics_lib.SUMMARY_FILE), summary)


def _print_header(config: Config, splits: Splits, trainer: GroupTrainer, facts: dict, loop: RunLoop, size: int) -> None:
    where = trainer.describe()
    group = f", {size} members in one vmapped program" if size > 1 else ""
    processes = f", process {facts['process_index']} of {facts['process_count']}" if facts["process_count"] > 1 else ""
    launcher = facts["launch"].get("launcher")
    launcher = None if launcher in (None, "none") else launcher
    print(f"{config.backend}/{config.model} {list(config.layer_sizes)} "
          f"({config.num_params():,} params), {len(splits.train):,} train / {len(splits.eval):,} "
          f"{splits.eval.name} examples, data {facts['data_seconds']:.2f} s, compile {trainer.compile_seconds:.2f} s, "
          f"{where['num_devices']} {where['device']} device(s), parallel={where['parallel']}{group}{processes}"
          + (f", launcher {launcher}" if launcher else ""), flush=True)
    resumed, position = loop.resumed, loop.position
    if resumed is None:
        return
    if position.epoch >= config.max_epochs:
        print(f"already trained {position.epoch} epochs (checkpoint {resumed.path}); raise --max_epochs to "
              "train further", flush=True)
    else:
        at = f"epoch {position.epoch + 1}" + (f", step {position.step_in_epoch}" if position.step_in_epoch else "")
        print(f"resuming from {resumed.path} at {at}", flush=True)
