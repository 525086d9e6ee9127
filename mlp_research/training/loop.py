"""The run driver: `train_and_evaluate(config, workdir)`.

Loads data, builds the model and optimiser, places everything on the
device(s), compiles the chunk and eval functions ahead of time (so compile
time is measured apart from epoch time), then runs epochs: per chunk one
compiled call, per epoch one evaluation and one host sync for the metrics row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp_research import checkpoint as checkpoint_lib
from mlp_research.config import Config
from mlp_research.data import Splits, load_splits
from mlp_research.errors import ConfigError, NonFiniteLossError, PreemptedError, warn
from mlp_research.models import build_model, to_canonical
from mlp_research.training import metrics as metrics_lib
from mlp_research.training import parallel
from mlp_research.training import step as step_lib
from mlp_research.training.optim import make_optimizer
from mlp_research.training.preemption import StopOnSignal
from mlp_research.workdir import WorkdirLock, prepare_workdir

log = logging.getLogger(__name__)


class Run:
    """Everything a training run compiles and places, built once from a config."""

    def __init__(self, config: Config, splits: Splits, placement: parallel.Placement):
        self.config = config
        self.splits = splits
        self.placement = placement
        spec = config.model
        self.model = build_model(spec)
        self.layout = step_lib.make_layout(len(splits.train), config.batch_size, config.steps_per_call)
        self.tx = make_optimizer(config, self.layout.steps_per_epoch)
        self.init_key = jax.random.PRNGKey(config.seed)

        train = splits.train
        self.train_data = placement.put_replicated((train.images, train.labels))
        eval_batch = _round_up(min(config.eval_batch_size, len(splits.eval)), placement.eval_batch_multiple())
        self.eval_data = placement.put_eval(*parallel.pad_eval(splits.eval.images, splits.eval.labels, eval_batch))
        self.eval_batch = eval_batch

        t0 = time.perf_counter()
        # Initialisation is one compiled call rather than hundreds of eager ops. It runs once, so
        # XLA's backend optimisations are off: on CPU they make compiling the random-number code
        # take ~2 s instead of ~0.3 s, for the same values.
        self._init = jax.jit(init_state_fn(config, self.layout.steps_per_epoch)).lower(self.init_key).compile(
            compiler_options={"xla_backend_optimization_level": 0}
        )
        state = self.init_state()
        totals = placement.put_replicated(step_lib.Totals.zeros())
        order = self.epoch_order(0)
        # Compiled ahead of time, so compile time is measured apart from epoch time.
        self.train_chunk = (
            placement.train_fn(self.model.apply, self.tx, self.layout)
            .lower(state, totals, *self.train_data, order, jnp.int32(0))
            .compile()
        )
        self._eval_any = placement.eval_fn(self.model.apply)  # other splits compile on first use
        self.evaluate = self._eval_any.lower(state.params, *self.eval_data).compile()
        self.compile_seconds = time.perf_counter() - t0

    def abstract_host_state(self) -> step_lib.TrainState:
        return abstract_host_state(self.config)

    def init_state(self) -> step_lib.TrainState:
        """Fresh parameters and optimiser state, placed on the device(s)."""
        return self.placement.put_replicated(self._init(self.init_key))

    def epoch_order(self, epoch: int) -> jax.Array:
        """The batch order of epoch `epoch` (0-based), on the device(s)."""
        return self.placement.put_broadcast(step_lib.epoch_order(self.config.seed, epoch, self.layout))

    def evaluate_split(self, params: Any, split) -> step_lib.Totals:
        """Evaluate on any split (e.g. test at the end) with the compiled-eval layout."""
        data = self.placement.put_eval(*parallel.pad_eval(split.images, split.labels, self.eval_batch))
        return self.placement.to_host(self._eval_any(params, *data))


OUTPUTS = (metrics_lib.METRICS_FILE, metrics_lib.SUMMARY_FILE, metrics_lib.CURVES_FILE, metrics_lib.TENSORBOARD_DIR)


def init_state_fn(config: Config, steps_per_epoch: int):
    """`init(key) -> TrainState` for a config: Flax parameters and optax state."""
    model, tx = build_model(config.model), make_optimizer(config, steps_per_epoch)

    def init(key: jax.Array) -> step_lib.TrainState:
        params = model.init(key, jnp.zeros((1, 28, 28), jnp.float32))["params"]
        return step_lib.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

    return init


def abstract_host_state(config: Config) -> step_lib.TrainState:
    """Zeros shaped like a run's state, on the host: the restore target for its checkpoints."""
    shapes = jax.eval_shape(init_state_fn(config, 1), jax.random.PRNGKey(0))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def train_and_evaluate(config: Config, workdir: str, restart: bool = False) -> dict:
    """Train `config` in `workdir`, resuming from its latest checkpoint unless `restart`.

    Writes metrics.jsonl, summary.json, curves.png, TensorBoard events and
    Orbax checkpoints. Returns the summary plus the final canonical parameters
    under "params".
    """
    start = time.perf_counter()
    placement = parallel.make_placement(config)  # refuses an uneven batch split before any work
    prepare_workdir(workdir)
    primary = jax.process_index() == 0
    if not restart:  # refuse a mismatched resume before anything in the workdir changes
        checkpoint_lib.Checkpoints(workdir, read_only=True).check_compatible(config)
    with WorkdirLock(workdir) if primary else contextlib.nullcontext():
        if primary:
            metrics_lib.preload_plotting()
        t0 = time.perf_counter()
        splits = load_splits(config)
        data_seconds = time.perf_counter() - t0
        if config.batch_size > len(splits.train):
            raise ConfigError(f"--batch_size: {config.batch_size} is larger than the training set ({len(splits.train)})")
        run = Run(config, splits, placement)
        # Only now, with config, data and compilation known to be good, does the workdir change.
        if restart and primary:
            checkpoint_lib.discard(workdir, OUTPUTS)
        checkpoints = checkpoint_lib.Checkpoints(workdir, keep=config.keep_checkpoints)
        try:
            return _train(run, workdir, checkpoints, primary, start, data_seconds)
        finally:
            checkpoints.close()


def _train(run: Run, workdir: str, checkpoints: checkpoint_lib.Checkpoints, primary: bool, start: float,
           data_seconds: float) -> dict:
    config, splits, placement, layout = run.config, run.splits, run.placement, run.layout

    resumed = checkpoints.restore(config, run.abstract_host_state(), warn=warn)
    if resumed is None:
        state, position, history = run.init_state(), checkpoint_lib.Position(), []
    else:
        state, position, history = placement.put_replicated(resumed.state), resumed.position, resumed.history
        if position.step_in_epoch % layout.steps_per_chunk:
            raise ConfigError(
                f"--steps_per_call: the checkpoint stops at step {position.step_in_epoch} of an epoch, which "
                f"is not a multiple of {layout.steps_per_chunk}; resume with the run's original --steps_per_call"
            )
    rows = [metrics_lib.MetricsRow.from_dict(row) for row in history]
    if config.progress and primary:
        _print_header(config, splits, run, data_seconds, resumed, position)

    writer = None
    if primary:
        metrics_lib.write_rows(workdir, rows)  # exactly the checkpoint's history: no duplicates, no gaps
        writer = metrics_lib.MetricsWriter(workdir)
    train_x, train_y = run.train_data
    last_saved = resumed.step if resumed else -1

    def save(position: checkpoint_lib.Position) -> int:
        step = position.epoch * layout.steps_per_epoch + position.step_in_epoch
        checkpoints.save(step, placement.to_host(state), config, position, [dataclasses.asdict(r) for r in rows])
        return step

    try:
        with StopOnSignal(announce=primary) as stop:
            for epoch in range(position.epoch, config.max_epochs):
                t_epoch = time.perf_counter()
                order = run.epoch_order(epoch)
                first_chunk = position.step_in_epoch // layout.steps_per_chunk if epoch == position.epoch else 0
                if first_chunk:
                    totals = placement.put_replicated(step_lib.Totals(
                        jnp.float32(position.loss_sum), jnp.int32(position.correct), jnp.int32(position.count),
                        jnp.int32(-1)))
                else:
                    totals = placement.put_replicated(step_lib.Totals.zeros())
                for chunk in range(first_chunk, layout.chunks_per_epoch):
                    state, totals = run.train_chunk(state, totals, train_x, train_y, order, jnp.int32(chunk))
                    done = (chunk + 1) * layout.steps_per_chunk
                    if done >= layout.steps_per_epoch:
                        break
                    global_step = epoch * layout.steps_per_epoch + done
                    every = config.checkpoint_every_steps
                    due = every and global_step // every != (global_step - layout.steps_per_chunk) // every
                    if stop.requested or due:
                        host_totals = placement.to_host(totals)
                        check_finite(host_totals, epoch + 1, layout.steps_per_epoch)
                        last_saved = save(checkpoint_lib.Position(
                            epoch, done, float(host_totals.loss_sum), int(host_totals.correct),
                            int(host_totals.count)))
                    if stop.requested:
                        _preempted(stop, checkpoints, last_saved)
                eval_totals = run.evaluate(state.params, *run.eval_data)
                totals, eval_totals = placement.to_host((totals, eval_totals))
                seconds = time.perf_counter() - t_epoch
                check_finite(totals, epoch + 1, layout.steps_per_epoch)
                row = _row(epoch, layout, totals, eval_totals, seconds)
                rows.append(row)
                if writer is not None:
                    writer.write(row)
                if config.progress and primary:
                    print(row.progress_line(config.max_epochs), flush=True)
                every = config.checkpoint_every_epochs
                if stop.requested or epoch + 1 == config.max_epochs or (every and (epoch + 1) % every == 0):
                    last_saved = save(checkpoint_lib.Position(epoch + 1, 0))
                if stop.requested:
                    _preempted(stop, checkpoints, last_saved)
    finally:
        if writer is not None:
            writer.close()

    if not rows:
        raise ConfigError(f"--max_epochs: {config.max_epochs} trains nothing; the run is empty")
    host_state = placement.to_host(state)
    test_metrics = None
    if config.test_at_end and splits.eval is not splits.test:
        test_loss, test_acc = run.evaluate_split(state.params, splits.test).means()
        test_metrics = {"test_loss": test_loss, "test_acc": test_acc}
    summary = build_summary(config, rows, run, splits, data_seconds, time.perf_counter() - start, test_metrics)
    summary["resumed_from_step"] = resumed.step if resumed else None
    summary["checkpoint"] = checkpoints.path(last_saved) if last_saved >= 0 else None
    if primary:
        metrics_lib.plot_curves(rows, os.path.join(workdir, metrics_lib.CURVES_FILE), title=_title(config))
        metrics_lib.write_json(os.path.join(workdir, metrics_lib.SUMMARY_FILE), summary)
    summary["params"] = to_canonical(config.model, host_state.params)
    return summary


def _row(epoch: int, layout: step_lib.EpochLayout, totals: step_lib.Totals, eval_totals: step_lib.Totals,
         seconds: float) -> metrics_lib.MetricsRow:
    train_loss, train_acc = totals.means()
    val_loss, val_acc = eval_totals.means()
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


def _print_header(config: Config, splits: Splits, run: Run, data_seconds: float, resumed, position) -> None:
    placement = run.placement
    print(
        f"{config.model.model} {list(config.model.layer_sizes)} ({config.model.num_params():,} params), "
        f"{len(splits.train):,} train / {len(splits.eval):,} {splits.eval.name} examples, "
        f"data {data_seconds:.2f} s, compile {run.compile_seconds:.2f} s, "
        f"{placement.num_devices} {jax.devices()[0].platform} device(s), parallel={placement.mode}",
        flush=True,
    )
    if resumed is not None:
        where = f"epoch {position.epoch + 1}" + (f", step {position.step_in_epoch}" if position.step_in_epoch else "")
        if position.epoch >= config.max_epochs:
            print(f"already trained {position.epoch} epochs (checkpoint {resumed.path}); raise --max_epochs to "
                  "train further", flush=True)
        else:
            print(f"resuming from {resumed.path} at {where}", flush=True)


def check_finite(totals: step_lib.Totals, epoch: int, steps_per_epoch: int) -> None:
    bad = int(totals.first_nonfinite_step)
    if bad >= 0:
        raise NonFiniteLossError(
            f"training loss became non-finite in epoch {epoch} at step {bad + 1} "
            f"(step {bad - (epoch - 1) * steps_per_epoch + 1} of the epoch); try a smaller --lr"
        )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _title(config: Config) -> str:
    spec = config.model
    return f"{spec.model} {list(spec.layer_sizes)} {spec.activation}, {config.optimizer} lr={config.lr}, batch {config.batch_size}"


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


def device_description() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": len(devices),
        "process_count": jax.process_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
    }


def build_summary(config, rows, run: Run, splits: Splits, data_seconds: float, total_seconds: float,
                  test_metrics: dict | None) -> dict:
    last = rows[-1]
    epoch_seconds = [r.seconds for r in rows]
    steady = float(np.median(epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds))
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
        "compile_seconds": run.compile_seconds,
        "total_seconds": total_seconds,
        "steady_epoch_seconds": steady,
        "examples_per_second": len(splits.train) / steady,
        "per_device_examples_per_second": len(splits.train) / steady / run.placement.num_devices,
        "achieved_gflops": train_flops / steady / 1e9,
        "parallel": run.placement.mode,
        "process_index": jax.process_index(),
        "num_devices": run.placement.num_devices,
        "device": device_description(),
        "versions": library_versions(),
        "argv": sys.argv,
    }
    if test_metrics:
        summary["final"].update(test_metrics)
    return summary
