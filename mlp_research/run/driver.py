"""The run driver: `train_and_evaluate(config, workdir)`, the same for every backend.

It owns what a user sees identically in every framework: the work directory
and its lock, data loading, the epoch/chunk schedule, metrics rows and their
writers, checkpoints and resume, preemption, the plot and the summary. The
backend (`mlp_research.backends`) owns the framework: its `Trainer` trains a
chunk of steps, evaluates, and converts state to numpy. Per chunk the driver
makes one backend call, per epoch one evaluation and one host sync.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
import statistics
import sys
import time
from typing import Any

from mlp_research.backends import registry as backends
from mlp_research.run import checkpoints as checkpoint_lib
from mlp_research.backends.base import Sums, Trainer
from mlp_research.batching import EpochLayout
from mlp_research.config import Config
from mlp_research.data import Splits, load_splits
from mlp_research.errors import ConfigError, NonFiniteLossError, PreemptedError, warn
from mlp_research.run import metrics as metrics_lib
from mlp_research.run.signals import StopOnSignal
from mlp_research.run.workdir import WorkdirLock, prepare_workdir

OUTPUTS = (metrics_lib.METRICS_FILE, metrics_lib.SUMMARY_FILE, metrics_lib.CURVES_FILE, metrics_lib.TENSORBOARD_DIR)


def _process_index(config: Config) -> int:
    """Multi-process runs exist only for the JAX backend; others never touch JAX's runtime."""
    if config.backend != "jax":
        return 0
    import jax

    return jax.process_index()


def train_and_evaluate(config: Config, workdir: str, restart: bool = False) -> dict:
    """Train `config` in `workdir`, resuming from its latest checkpoint unless `restart`.

    Writes metrics.jsonl, summary.json, curves.png, TensorBoard events and
    Orbax checkpoints. Returns the summary plus the final canonical parameters
    under "params".
    """
    start = time.perf_counter()
    if config.backend != "jax":
        # Orbax brings JAX into the process; keep it from reserving most of a GPU that another
        # framework trains on (read when JAX first touches a device).
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    backend = backends.load(config.backend)
    backend.check(config)  # e.g. refuses an uneven batch split before any work
    created = not os.path.exists(workdir)
    prepare_workdir(workdir)
    primary = _process_index(config) == 0
    if not restart:  # refuse a mismatched resume before anything in the workdir changes
        checkpoint_lib.Checkpoints(workdir, read_only=True).check_compatible(config)
    with WorkdirLock(workdir) if primary else contextlib.nullcontext():
        if primary:
            metrics_lib.preload_plotting()
        try:
            t0 = time.perf_counter()
            splits = load_splits(config)
            data_seconds = time.perf_counter() - t0
            if config.batch_size > len(splits.train):
                raise ConfigError(
                    f"--batch_size: {config.batch_size} is larger than the training set ({len(splits.train)})")
            trainer = backend.trainer(config, splits)
        except Exception:
            if created and primary:  # a run that failed before writing anything leaves no workdir behind
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        # Only now, with config, data and compilation known to be good, does the workdir change.
        if restart and primary:
            checkpoint_lib.discard(workdir, OUTPUTS)
        checkpoints = checkpoint_lib.Checkpoints(workdir, keep=config.keep_checkpoints)
        try:
            return _train(config, splits, trainer, workdir, checkpoints, primary, start, data_seconds,
                          backend.version())
        finally:
            checkpoints.close()


def _train(config: Config, splits: Splits, trainer: Trainer, workdir: str, checkpoints: checkpoint_lib.Checkpoints,
           primary: bool, start: float, data_seconds: float, framework_version: str) -> dict:
    layout = trainer.layout
    resumed = checkpoints.restore(config, trainer.abstract_state_dict(), warn=warn)
    if resumed is None:
        position, history = checkpoint_lib.Position(), []
    else:
        trainer.load_state_dict(resumed.state)
        position, history = resumed.position, resumed.history
        if position.step_in_epoch % layout.steps_per_chunk:
            raise ConfigError(
                f"--steps_per_call: the checkpoint stops at step {position.step_in_epoch} of an epoch, which "
                f"is not a multiple of {layout.steps_per_chunk}; resume with the run's original --steps_per_call"
            )
    rows = [metrics_lib.MetricsRow.from_dict(row) for row in history]
    if config.progress and primary:
        _print_header(config, splits, trainer, data_seconds, resumed, position)

    writer = None
    if primary:
        metrics_lib.write_rows(workdir, rows)  # exactly the checkpoint's history: no duplicates, no gaps
        writer = metrics_lib.MetricsWriter(workdir)
    last_saved = resumed.step if resumed else -1
    last_save_time = time.monotonic()

    def save(position: checkpoint_lib.Position) -> int:
        nonlocal last_save_time
        step = position.epoch * layout.steps_per_epoch + position.step_in_epoch
        checkpoints.save(step, trainer.state_dict(), trainer.get_params(), config, position,
                         [dataclasses.asdict(r) for r in rows])
        last_save_time = time.monotonic()
        return step

    def periodic_save_due(every: int, count: int, stride: int = 1) -> bool:
        """`count` (epochs or steps, advanced by `stride`) crossed a multiple of `every`, and the
        last save is at least `checkpoint_min_seconds` old."""
        crossed = every and count // every != (count - stride) // every
        return bool(crossed) and time.monotonic() - last_save_time >= config.checkpoint_min_seconds

    try:
        with StopOnSignal(announce=primary) as stop:
            for epoch in range(position.epoch, config.max_epochs):
                t_epoch = time.perf_counter()
                first_chunk = position.step_in_epoch // layout.steps_per_chunk if epoch == position.epoch else 0
                carried = Sums(position.loss_sum, position.correct, position.count) if first_chunk else None
                trainer.start_epoch(epoch, carried)
                for chunk in range(first_chunk, layout.chunks_per_epoch):
                    trainer.train_chunk(chunk)
                    done = layout.steps_done(chunk)
                    if done == layout.steps_per_epoch:
                        break
                    global_step = epoch * layout.steps_per_epoch + done
                    due = periodic_save_due(config.checkpoint_every_steps, global_step, layout.steps_per_chunk)
                    if stop.requested or due:
                        sums = trainer.epoch_sums()
                        check_finite(sums, epoch + 1, layout.steps_per_epoch)
                        last_saved = save(checkpoint_lib.Position(epoch, done, sums.loss_sum, sums.correct,
                                                                  sums.count))
                    if stop.requested:
                        _preempted(stop, checkpoints, last_saved)
                eval_sums = trainer.evaluate_eval_split()
                sums = trainer.epoch_sums()
                seconds = time.perf_counter() - t_epoch
                check_finite(sums, epoch + 1, layout.steps_per_epoch)
                row = _row(epoch, layout, sums, eval_sums, seconds)
                rows.append(row)
                if writer is not None:
                    writer.write(row)
                if config.progress and primary:
                    print(row.progress_line(config.max_epochs), flush=True)
                if (stop.requested or epoch + 1 == config.max_epochs
                        or periodic_save_due(config.checkpoint_every_epochs, epoch + 1)):
                    last_saved = save(checkpoint_lib.Position(epoch + 1, 0))
                if stop.requested:
                    _preempted(stop, checkpoints, last_saved)
    finally:
        if writer is not None:
            writer.close()

    if not rows:
        raise ConfigError(f"--max_epochs: {config.max_epochs} trains nothing; the run is empty")
    test_metrics = None
    if config.test_at_end and splits.eval is not splits.test:
        test_loss, test_acc = trainer.evaluate(splits.test.images, splits.test.labels).means()
        test_metrics = {"test_loss": test_loss, "test_acc": test_acc}
    summary = build_summary(config, rows, trainer, splits, data_seconds, time.perf_counter() - start, test_metrics,
                            framework_version)
    summary["resumed_from_step"] = resumed.step if resumed else None
    summary["checkpoint"] = checkpoints.path(last_saved) if last_saved >= 0 else None
    if primary:
        if not metrics_lib.plot_curves(rows, os.path.join(workdir, metrics_lib.CURVES_FILE), title=_title(config)):
            warn(f"matplotlib is not installed: {metrics_lib.CURVES_FILE} not written (metrics.jsonl has every value)")
        metrics_lib.write_json(os.path.join(workdir, metrics_lib.SUMMARY_FILE), summary)
    summary["params"] = trainer.get_params()
    return summary


def _row(epoch: int, layout: EpochLayout, sums: Sums, eval_sums: Sums, seconds: float) -> metrics_lib.MetricsRow:
    train_loss, train_acc = sums.means()
    val_loss, val_acc = eval_sums.means()
    return metrics_lib.MetricsRow(
        epoch=epoch + 1,
        step=(epoch + 1) * layout.steps_per_epoch,
        train_loss=train_loss,
        train_acc=train_acc,
        val_loss=val_loss,
        val_acc=val_acc,
        seconds=seconds,
        examples_per_second=layout.num_train / seconds,
    )


def _preempted(stop: StopOnSignal, checkpoints: checkpoint_lib.Checkpoints, step: int) -> None:
    checkpoints.wait()
    raise PreemptedError(
        f"stopped by {stop.signal_name}; checkpoint saved in {checkpoints.path(step)}; "
        "run the same command again to resume"
    )


def _print_header(config: Config, splits: Splits, trainer: Trainer, data_seconds: float, resumed, position) -> None:
    where = trainer.describe()
    print(
        f"{config.backend}/{config.model.model} {list(config.model.layer_sizes)} "
        f"({config.model.num_params():,} params), "
        f"{len(splits.train):,} train / {len(splits.eval):,} {splits.eval.name} examples, "
        f"data {data_seconds:.2f} s, compile {trainer.compile_seconds:.2f} s, "
        f"{where['num_devices']} {where['device']} device(s), parallel={where['parallel']}",
        flush=True,
    )
    if resumed is not None:
        at = f"epoch {position.epoch + 1}" + (f", step {position.step_in_epoch}" if position.step_in_epoch else "")
        if position.epoch >= config.max_epochs:
            print(f"already trained {position.epoch} epochs (checkpoint {resumed.path}); raise --max_epochs to "
                  "train further", flush=True)
        else:
            print(f"resuming from {resumed.path} at {at}", flush=True)


def check_finite(sums: Sums, epoch: int, steps_per_epoch: int) -> None:
    bad = sums.first_nonfinite_step
    if bad >= 0:
        raise NonFiniteLossError(
            f"training loss became non-finite in epoch {epoch} at step {bad + 1} "
            f"(step {bad - (epoch - 1) * steps_per_epoch + 1} of the epoch); try a smaller --lr"
        )


def _title(config: Config) -> str:
    spec = config.model
    return (f"{config.backend} {spec.model} {list(spec.layer_sizes)} {spec.activation}, "
            f"{config.optimizer} lr={config.lr}, batch {config.batch_size}")


# Distribution name -> module whose `__version__` says it (already imported by a run: no metadata scan).
_VERSIONED_MODULES = {"jax": "jax", "jaxlib": "jaxlib", "flax": "flax", "optax": "optax",
                      "orbax-checkpoint": "orbax.checkpoint", "numpy": "numpy"}


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("mlp-research", *_VERSIONED_MODULES):
        version = getattr(sys.modules.get(_VERSIONED_MODULES.get(name, "")), "__version__", None)
        try:
            versions[name] = version if isinstance(version, str) else md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


def build_summary(config: Config, rows: list[metrics_lib.MetricsRow], trainer: Trainer, splits: Splits,
                  data_seconds: float, total_seconds: float, test_metrics: dict | None,
                  framework_version: str) -> dict[str, Any]:
    last = rows[-1]
    epoch_seconds = [r.seconds for r in rows]
    steady = statistics.median(epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds)
    where = trainer.describe()
    train_flops = 3 * config.model.flops_per_example() * len(splits.train)
    summary = {
        "config": config.to_flat(),
        "final": {k: getattr(last, k) for k in ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc")},
        "best_val_acc": max(r.val_acc for r in rows),
        "eval_split": splits.eval.name,
        "num_params": config.model.num_params(),
        "num_train": len(splits.train),
        "num_eval": len(splits.eval),
        "data_source": splits.source,
        "data_seconds": data_seconds,
        "compile_seconds": trainer.compile_seconds,
        "total_seconds": total_seconds,
        "steady_epoch_seconds": steady,
        "examples_per_second": len(splits.train) / steady,
        "per_device_examples_per_second": len(splits.train) / steady / where["num_devices"],
        "achieved_gflops": train_flops / steady / 1e9,
        "backend": config.backend,
        "framework_version": framework_version,
        "parallel": where["parallel"],
        "num_devices": where["num_devices"],
        "process_index": _process_index(config),
        "device": {**where, "host": platform.node(), "cpu_count": os.cpu_count(),
                   "process_count": _process_count(config), "kind": where["device"]},
        "versions": library_versions(),
        "argv": sys.argv,
    }
    if test_metrics:
        summary["final"].update(test_metrics)
    return summary


def device_description() -> dict[str, Any]:
    """JAX's default devices, for reports that time JAX code outside a run."""
    import jax

    devices = jax.devices()
    return {"platform": devices[0].platform, "kind": devices[0].device_kind, "count": len(devices),
            "process_count": jax.process_count(), "host": platform.node(), "cpu_count": os.cpu_count()}


def _process_count(config: Config) -> int:
    if config.backend != "jax":
        return 1
    import jax

    return jax.process_count()
