"""`JaxTrainer`: one run's model, optimiser state and data, placed and compiled once.

The training data stay on the device(s); one compiled call trains a chunk of
steps (a `lax.scan`, see `step.py`) through a placement (`none`, `pmap` or
`sharded`), and the metric sums stay on the device until the driver asks.
"""

from __future__ import annotations

import collections
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlp_research import batching
from mlp_research.backends.base import Sums
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.jax_backend import placement as placement_lib
from mlp_research.jax_backend import step as step_lib
from mlp_research.jax_backend.models import build_model, from_canonical, to_canonical
from mlp_research.jax_backend.optim import make_optimizer
from mlp_research.spec import ModelSpec


@functools.lru_cache(maxsize=16)
def compiled_init(spec: ModelSpec):
    """`key -> Flax params` of a spec as one compiled call (cached per spec).

    One compiled call rather than hundreds of eager ops. It runs once per run, so
    XLA's backend optimisations are off: on CPU they make compiling the
    random-number code take ~2 s instead of ~0.3 s, for the same values.
    """
    model = build_model(spec)
    init = jax.jit(lambda key: model.init(key, jnp.zeros((1, 28, 28), jnp.float32))["params"])
    return init.lower(jax.random.PRNGKey(0)).compile(compiler_options={"xla_backend_optimization_level": 0})


def initial_state(config: Config, steps_per_epoch: int) -> step_lib.TrainState:
    params = compiled_init(config.model)(jax.random.PRNGKey(config.seed))
    return step_lib.TrainState(jnp.zeros((), jnp.int32), params, make_optimizer(config, steps_per_epoch).init(params))


def abstract_host_state(config: Config) -> step_lib.TrainState:
    """Zeros shaped like a run's state, on the host: the restore target for its checkpoints."""
    model, tx = build_model(config.model), make_optimizer(config, 1)

    def init(key: jax.Array) -> step_lib.TrainState:
        params = model.init(key, jnp.zeros((1, 28, 28), jnp.float32))["params"]
        return step_lib.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))

    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def device_kind(device: Any) -> str:
    return device.device_kind


def host_sums(sums: Sums) -> Sums:
    """Device sums (already fetched to the host) as Python numbers."""
    return Sums(float(sums.loss_sum), int(sums.correct), int(sums.count), int(sums.first_nonfinite_step))


_PROGRAMS: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
_MAX_PROGRAMS = 16


def _program_key(config: Config, placement: placement_lib.Placement) -> tuple:
    """What a compiled program depends on: everything but the initialisation and the seed."""
    flat = config.to_flat()
    fields = ("model", "num_hiddens", "activation", "matmul_precision", "optimizer", "lr", "momentum", "weight_decay",
              "schedule", "warmup_epochs", "max_epochs")
    return (tuple(str(flat[f]) for f in fields), placement.mode, tuple(str(d) for d in placement.devices))


def _signature(arrays: tuple) -> tuple:
    """Shapes and dtypes of a program's data (images arrive as uint8 pixels or as float32)."""
    return tuple((a.shape, str(a.dtype)) for a in arrays)


def _cached(key: tuple, build: Any) -> Any:
    """A compiled program from the process's small LRU cache, built on a miss."""
    if key in _PROGRAMS:
        _PROGRAMS.move_to_end(key)
        return _PROGRAMS[key]
    program = _PROGRAMS[key] = build()
    if len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class JaxTrainer:
    """Model, optimiser state and data of one run, placed and compiled once."""

    def __init__(self, config: Config, splits: Splits, placement: placement_lib.Placement):
        self.config = config
        self.placement = placement
        self.model = build_model(config.model, config.matmul_precision)
        self.layout = batching.make_layout(len(splits.train), config.batch_size, config.steps_per_chunk)
        self.tx = make_optimizer(config, self.layout.steps_per_epoch)
        self.train_data = placement.put_replicated((splits.train.compact_images, splits.train.labels))
        eval_batch = _round_up(min(config.eval_batch_size, len(splits.eval)), placement.eval_batch_multiple())
        self.eval_batch = eval_batch
        eval_x, eval_y = splits.eval.compact_images, splits.eval.labels
        self.eval_data = placement.put_eval(*batching.pad_eval(eval_x, eval_y, eval_batch))
        t0 = time.perf_counter()
        self.state = placement.put_replicated(initial_state(config, self.layout.steps_per_epoch))
        self.sums = placement.put_replicated(step_lib.host_start_sums(None))
        self.epoch = 0
        self.order = self._order(0)
        self._next_order: tuple[int, Any] | None = (0, self.order)  # start_epoch(0) takes it
        self._train_chunk: Any = None  # compiled by `compile()` (the driver calls it) or on first use
        self._eval: Any = None
        self._eval_any = placement.eval_fn(self.model.apply)  # other splits compile on first use
        self.compile_seconds = time.perf_counter() - t0

    def compile(self) -> None:
        """Compile the training chunk and the evaluation ahead of time, so epoch times exclude it.

        Programs are shared by every trainer of this process that computes the same
        thing (a sweep's trials, the kit's cases): only the initial values differ.
        """
        t0 = time.perf_counter()
        if self._train_chunk is None:
            key = ("train", _program_key(self.config, self.placement), self.layout, _signature(self.train_data))
            self._train_chunk = _cached(key, lambda: self.placement.train_fn(self.model.apply, self.tx, self.layout)
                                        .lower(self.state, self.sums, *self.train_data, self.order, jnp.int32(0))
                                        .compile())
        if self._eval is None:
            key = ("eval", _program_key(self.config, self.placement), _signature(self.eval_data))
            self._eval = _cached(key, lambda: self._eval_any.lower(self.state.params, *self.eval_data).compile())
        self.compile_seconds += time.perf_counter() - t0

    def describe(self) -> dict[str, Any]:
        devices = self.placement.devices
        return {"parallel": self.placement.mode, "num_devices": self.placement.num_devices,
                "device": device_kind(devices[0]), "platform": devices[0].platform}

    def _order(self, epoch: int) -> Any:
        return self.placement.put_broadcast(batching.epoch_order(self.config.seed, epoch, self.layout))

    # ----------------------------------------------------------- training
    def start_epoch(self, epoch: int, sums: Sums | None = None) -> None:
        self.epoch = epoch
        prefetched, self._next_order = self._next_order, None
        self.order = prefetched[1] if prefetched and prefetched[0] == epoch else self._order(epoch)
        # Built in numpy and placed in one transfer: eager jnp ops would cost a dispatch each.
        self.sums = self.placement.put_replicated(step_lib.host_start_sums(sums))

    def train_chunk(self, chunk: int) -> None:
        if self._train_chunk is None:
            self.compile()
        train_x, train_y = self.train_data
        self.state, self.sums = self._train_chunk(self.state, self.sums, train_x, train_y, self.order, np.int32(chunk))
        if chunk == self.layout.chunks_per_epoch - 1:
            # Dispatch is asynchronous: draw and place the next epoch's order (~1 ms for 60,000
            # examples) while the device trains, instead of between epochs.
            self._next_order = (self.epoch + 1, self._order(self.epoch + 1))

    def epoch_sums(self) -> Sums:
        return host_sums(self.placement.to_host(self.sums))

    def evaluate_eval_split(self) -> Sums:
        if self._eval is None:
            self.compile()
        return host_sums(self.placement.to_host(self._eval(self.state.params, *self.eval_data)))

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> Sums:
        data = self.placement.put_eval(*batching.pad_eval(images, labels, self.eval_batch))
        return host_sums(self.placement.to_host(self._eval_any(self.state.params, *data)))

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits of a batch with the current parameters (the backend kit's parity checks)."""
        params = self.placement.to_host(self.state.params)
        return np.asarray(jax.jit(self.model.apply)({"params": params}, jnp.asarray(images, jnp.float32)))

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
