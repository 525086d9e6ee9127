"""`JaxTrainer`: one run's model, optimiser state and data, placed and compiled once.

The training data stay on the device(s); one compiled call trains a chunk of
steps (a `lax.scan`, see `step.py`) through a placement (`none`, `pmap` or
`sharded`) and returns every step's loss and correct count, which stay on the
device until the driver asks for the epoch's sums (the base class adds them).
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
from mlp_research.backends.base import Sums, Trainer
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


def initial_state(config: Config, tx: Any) -> step_lib.TrainState:
    params = compiled_init(config.spec)(jax.random.PRNGKey(config.seed))
    return step_lib.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))


def optimizer_state_or_none(opt_state: Any) -> Any:
    """The optax state, or None for one without arrays (plain SGD): a checkpoint holds no empty sub-tree."""
    return opt_state if jax.tree.leaves(opt_state) else None


_PROGRAMS: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
_MAX_PROGRAMS = 16


def _program_key(config: Config, placement: placement_lib.Placement) -> tuple:
    """What a compiled program depends on: everything but the initialisation and the seed."""
    fields = ("model", "num_hiddens", "activation", "matmul_precision", "optimizer", "lr", "momentum", "weight_decay",
              "schedule", "warmup_epochs", "max_epochs")
    return (tuple(str(getattr(config, f)) for f in fields), placement.mode, tuple(str(d) for d in placement.devices))


def _signature(arrays: tuple) -> tuple:
    """Shapes and dtypes of a program's data (images arrive as uint8 pixels or as float32)."""
    return tuple((a.shape, str(a.dtype)) for a in arrays)


def _cached(key: tuple, build: Any) -> Any:
    """A compiled program from the process's small LRU cache, built on a miss."""
    program = _PROGRAMS[key] = _PROGRAMS.pop(key, None) or build()  # now the most recently used
    if len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program


class JaxTrainer(Trainer):
    """Model, optimiser state and data of one run, placed and compiled once."""

    def __init__(self, config: Config, splits: Splits, placement: placement_lib.Placement):
        super().__init__(config, splits)
        self.placement = placement
        self.model = build_model(self.spec, config.matmul_precision)
        self.tx = make_optimizer(config, self.layout.steps_per_epoch)
        self.train_data = placement.put_replicated((splits.train.compact_images, splits.train.labels))
        n = placement.num_devices  # an eval batch splits evenly over the devices
        self.eval_batch = -(-min(config.eval_batch_size, len(splits.eval)) // n) * n
        eval_x, eval_y = splits.eval.compact_images, splits.eval.labels
        self.eval_data = placement.put_eval(*batching.pad_eval(eval_x, eval_y, self.eval_batch))
        t0 = time.perf_counter()
        self.state = placement.put_replicated(initial_state(config, self.tx))
        self._next_order: tuple[int, Any] | None = None
        self.start_epoch(0)
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
                                        .lower(self.state, *self.train_data, self.order, jnp.int32(0)).compile())
        if self._eval is None:
            key = ("eval", _program_key(self.config, self.placement), _signature(self.eval_data))
            self._eval = _cached(key, lambda: self._eval_any.lower(self.state.params, *self.eval_data).compile())
        self.compile_seconds += time.perf_counter() - t0

    def describe(self) -> dict[str, Any]:
        devices = self.placement.devices
        return {"parallel": self.placement.mode, "num_devices": self.placement.num_devices,
                "device": devices[0].device_kind, "platform": devices[0].platform}

    # ----------------------------------------------------------- training
    def _start_epoch(self, epoch: int, order: np.ndarray) -> None:
        prefetched, self._next_order = self._next_order, None
        if prefetched and prefetched[0] == epoch:
            self.order = prefetched[1]
        else:
            self.order = self.placement.put_broadcast(order)

    def _train_steps(self, first: int, end: int) -> tuple[Any, Any]:
        if self._train_chunk is None:
            self.compile()
        chunk = first // self.layout.steps_per_chunk
        train_x, train_y = self.train_data
        self.state, (losses, correct) = self._train_chunk(self.state, train_x, train_y, self.order, np.int32(chunk))
        if end == self.layout.steps_per_epoch:
            # Dispatch is asynchronous: draw and place the next epoch's order (~1 ms for 60,000
            # examples) while the device trains, instead of between epochs.
            self._next_order = (self.epoch + 1, self.placement.put_broadcast(self.epoch_order(self.epoch + 1)))
        return losses, correct

    def _fetch(self, values: list[Any]) -> list[np.ndarray]:
        return list(self.placement.to_host(values))

    # --------------------------------------------------------- evaluation
    def evaluate_eval_split(self) -> Sums:
        """The whole split in one compiled scan over resident, padded batches (faster than batch by batch)."""
        if self._eval is None:
            self.compile()
        return self.placement.to_host(self._eval(self.state.params, *self.eval_data)).to_host()

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> Sums:
        data = self.placement.put_eval(*batching.pad_eval(images, labels, self.eval_batch))
        return self.placement.to_host(self._eval_any(self.state.params, *data)).to_host()

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits of a batch with the current parameters (the backend kit's parity checks)."""
        params = self.placement.to_host(self.state.params)
        return np.asarray(jax.jit(self.model.apply)({"params": params}, jnp.asarray(images, jnp.float32)))

    # -------------------------------------------------------------- state
    def _framework_state(self) -> tuple[Any, Any]:
        host = self.placement.to_host(self.state)
        return host.params, optimizer_state_or_none(host.opt_state)

    def _load_framework_state(self, params: Any, opt_state: Any) -> None:
        opt_state = self.tx.init(params) if opt_state is None else opt_state
        self.state = self.placement.put_replicated(step_lib.TrainState(np.int32(self.step), params, opt_state))

    def _get_canonical(self) -> dict[str, np.ndarray]:
        return to_canonical(self.spec, self.placement.to_host(self.state.params))

    def _set_canonical(self, params: dict[str, np.ndarray]) -> None:
        _, opt_state = self._framework_state()
        self._load_framework_state(jax.tree.map(np.asarray, from_canonical(self.spec, params)), opt_state)
