"""The JAX/Flax backend: the core, registered like any plugin.

`JaxTrainer` keeps the training data on the device(s), compiles one chunk of
steps (a `lax.scan`) and the evaluation ahead of time through a placement
(`none`, `pmap` or `sharded`), and keeps metric sums on the device until the
driver asks for them.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp_research import batching
from mlp_research.backends.base import Sums
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.errors import ConfigError, warn
from mlp_research.jax_backend.models import build_model, from_canonical, to_canonical
from mlp_research.jax_backend import placement as parallel
from mlp_research.jax_backend import step as step_lib
from mlp_research.jax_backend.optim import make_optimizer


class JaxBackend:
    name = "jax"

    def version(self) -> str:
        return jax.__version__

    def check(self, config: Config) -> None:
        """Every option of the spec is supported; the device split of the batch is checked here."""
        tune_xla_cpu()  # before make_placement starts JAX's backends
        parallel.make_placement(config)

    def trainer(self, config: Config, splits: Splits) -> "JaxTrainer":
        tune_xla_cpu()
        use_compilation_cache(config.resolved_compilation_cache_dir())
        return JaxTrainer(config, splits, parallel.make_placement(config))


# XLA:CPU's concurrency-optimised scheduler orders the step's ops so that independent ones can run
# side by side; here the matmuls already use every core, and that order made an epoch 5-6% slower
# (0.359 -> 0.340 s on a 2-core EPYC, bit-identical results). GPUs ignore CPU flags.
CPU_XLA_FLAGS = {"xla_cpu_enable_concurrency_optimized_scheduler": "false"}


def tune_xla_cpu() -> None:
    """Add `CPU_XLA_FLAGS` to $XLA_FLAGS, leaving any the user set alone.

    XLA reads the variable once, when JAX starts its backends: later calls change nothing.
    """
    from jax._src import xla_bridge

    if getattr(xla_bridge, "backends_are_initialized", lambda: True)():
        return
    current = os.environ.get("XLA_FLAGS", "")
    extra = [f"--{name}={value}" for name, value in CPU_XLA_FLAGS.items() if f"--{name}=" not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()


def use_compilation_cache(path: str) -> None:
    """Point JAX's persistent compilation cache at `path` ('' leaves it as it is).

    Every program is cached, however quick it was to compile: on a warm cache a
    run skips XLA's compilation (tracing remains). The setting is process-wide
    and JAX opens the cache once, so the first directory a process uses stays.
    """
    if not path:
        return
    current = getattr(jax.config, "jax_compilation_cache_dir", None)
    if current and os.path.abspath(current) != os.path.abspath(path):
        warn(f"--compilation_cache_dir: this process already caches in {current}; {path} is not used")
        return
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(13, "not writable")
    except OSError as e:
        raise ConfigError(f"--compilation_cache_dir: cannot use {path} ({e.strerror or e})") from None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def init_state_fn(config: Config, steps_per_epoch: int):
    """`init(key) -> TrainState` for a config: Flax parameters and optax state."""
    model, tx = build_model(config.model, config.matmul_precision), make_optimizer(config, steps_per_epoch)

    def init(key: jax.Array) -> step_lib.TrainState:
        params = model.init(key, jnp.zeros((1, 28, 28), jnp.float32))["params"]
        return step_lib.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

    return init


def abstract_host_state(config: Config) -> step_lib.TrainState:
    """Zeros shaped like a run's state, on the host: the restore target for its checkpoints."""
    shapes = jax.eval_shape(init_state_fn(config, 1), jax.random.PRNGKey(0))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _sums(totals: step_lib.Totals) -> Sums:
    return Sums(float(totals.loss_sum), int(totals.correct), int(totals.count), int(totals.first_nonfinite_step))


class JaxTrainer:
    """Model, optimiser state and data of one run, placed and compiled once."""

    def __init__(self, config: Config, splits: Splits, placement: parallel.Placement):
        self.config = config
        self.splits = splits
        self.placement = placement
        self.model = build_model(config.model, config.matmul_precision)
        self.layout = batching.make_layout(len(splits.train), config.batch_size, config.steps_per_call)
        self.tx = make_optimizer(config, self.layout.steps_per_epoch)
        self.init_key = jax.random.PRNGKey(config.seed)

        train = splits.train
        self.train_data = placement.put_replicated((train.images, train.labels))
        eval_batch = _round_up(min(config.eval_batch_size, len(splits.eval)), placement.eval_batch_multiple())
        self.eval_batch = eval_batch
        self.eval_data = placement.put_eval(*batching.pad_eval(splits.eval.images, splits.eval.labels, eval_batch))

        t0 = time.perf_counter()
        # Initialisation is one compiled call rather than hundreds of eager ops. It runs once, so
        # XLA's backend optimisations are off: on CPU they make compiling the random-number code
        # take ~2 s instead of ~0.3 s, for the same values.
        self._init = jax.jit(init_state_fn(config, self.layout.steps_per_epoch)).lower(self.init_key).compile(
            compiler_options={"xla_backend_optimization_level": 0}
        )
        self.state = placement.put_replicated(self._init(self.init_key))
        self.totals = placement.put_replicated(_host_totals(None))
        self.epoch = 0
        self.order = self._order(0)
        self._next_order: tuple[int, Any] | None = (0, self.order)  # start_epoch(0) takes it
        # Compiled ahead of time, so compile time is measured apart from epoch time.
        self._train_chunk = (
            placement.train_fn(self.model.apply, self.tx, self.layout)
            .lower(self.state, self.totals, *self.train_data, self.order, jnp.int32(0))
            .compile()
        )
        self._eval_any = placement.eval_fn(self.model.apply)  # other splits compile on first use
        self._eval = self._eval_any.lower(self.state.params, *self.eval_data).compile()
        self.compile_seconds = time.perf_counter() - t0

    def describe(self) -> dict[str, Any]:
        devices = self.placement.devices
        return {"parallel": self.placement.mode, "num_devices": self.placement.num_devices,
                "device": devices[0].device_kind, "platform": devices[0].platform}

    def _order(self, epoch: int) -> Any:
        return self.placement.put_broadcast(batching.epoch_order(self.config.seed, epoch, self.layout))

    # ----------------------------------------------------------- training
    def start_epoch(self, epoch: int, sums: Sums | None = None) -> None:
        self.epoch = epoch
        prefetched, self._next_order = self._next_order, None
        self.order = prefetched[1] if prefetched and prefetched[0] == epoch else self._order(epoch)
        # Built in numpy and placed in one transfer: eager jnp ops would cost a dispatch each.
        self.totals = self.placement.put_replicated(_host_totals(sums))

    def train_chunk(self, chunk: int) -> None:
        train_x, train_y = self.train_data
        self.state, self.totals = self._train_chunk(self.state, self.totals, train_x, train_y, self.order,
                                                    np.int32(chunk))
        if chunk == self.layout.chunks_per_epoch - 1:
            # Dispatch is asynchronous: draw and place the next epoch's order (~1 ms for 60,000
            # examples) while the device trains, instead of between epochs.
            self._next_order = (self.epoch + 1, self._order(self.epoch + 1))

    def epoch_sums(self) -> Sums:
        return _sums(self.placement.to_host(self.totals))

    def evaluate_eval_split(self) -> Sums:
        return _sums(self.placement.to_host(self._eval(self.state.params, *self.eval_data)))

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> Sums:
        data = self.placement.put_eval(*batching.pad_eval(images, labels, self.eval_batch))
        return _sums(self.placement.to_host(self._eval_any(self.state.params, *data)))

    # -------------------------------------------------------------- state
    def state_dict(self) -> step_lib.TrainState:
        return self.placement.to_host(self.state)

    def abstract_state_dict(self) -> step_lib.TrainState:
        return abstract_host_state(self.config)

    def load_state_dict(self, state: step_lib.TrainState) -> None:
        self.state = self.placement.put_replicated(state)

    def get_params(self) -> dict[str, np.ndarray]:
        return to_canonical(self.config.model, self.placement.to_host(self.state.params))

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        host = self.state_dict()
        flax_params = jax.tree.map(np.asarray, from_canonical(self.config.model, params))
        self.load_state_dict(step_lib.TrainState(host.step, flax_params, host.opt_state))


def _host_totals(sums: Sums | None) -> step_lib.Totals:
    """Running sums to start an epoch from: zeros, or those carried from a mid-epoch checkpoint."""
    sums = sums or Sums(0.0, 0, 0)
    return step_lib.Totals(np.float32(sums.loss_sum), np.int32(sums.correct), np.int32(sums.count),
                           np.int32(sums.first_nonfinite_step))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
