"""Where arrays live and how the step functions are compiled: one device, pmap, or jit over a mesh.

Each `Placement` takes the same pure functions from `step.py` and returns
compiled callables plus the device placement of data and state, so the run
driver never branches on the mode. The mathematics are the same in all three:
sums over the global batch divided by its size.

- `none`: one device, `jax.jit`.
- `pmap`: `jax.pmap` over the local devices; state and data are replicated
  along a leading device axis, each device gathers its slice of every batch.
- `sharded`: `jax.jit` over a `Mesh` with a `data` axis; state and data are
  replicated, batch indices are sharded, XLA inserts the gradient all-reduce.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mlp_research.batching import EpochLayout
from mlp_research.config import Config
from mlp_research.errors import ConfigError
from mlp_research.jax_backend import step as step_lib

AXIS = "data"


def resolve_mode(config: Config, num_devices: int) -> str:
    """`auto` -> `none` on one device, `sharded` (JAX's recommended path) on several."""
    if config.parallel != "auto":
        return config.parallel
    return "none" if num_devices == 1 else "sharded"


class Placement:
    """Single device: plain jit."""

    mode = "none"

    def __init__(self, devices: list[Any]):
        self.devices = devices

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    # ------------------------------------------------------------- placement
    def put_replicated(self, tree: Any) -> Any:
        """State and training data: a full copy on every device."""
        return jax.device_put(tree, self.devices[0])

    def put_broadcast(self, array: np.ndarray) -> Any:
        """An argument every device reads whole (the epoch's batch order)."""
        return self.put_replicated(array)

    def put_eval(self, images: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple:
        """Eval arrays shaped (num_batches, batch, ...), as `pad_eval` makes them."""
        return self.put_replicated((images, labels, weights))

    def to_host(self, tree: Any) -> Any:
        """Plain (unreplicated) numpy values, restorable onto any device count."""
        return jax.tree.map(np.asarray, jax.device_get(tree))

    # ------------------------------------------------------------ functions
    def train_fn(self, apply_fn, tx, layout: EpochLayout) -> Any:
        """`train_chunk(state, images, labels, order, chunk)`, jitted for this placement."""
        return jax.jit(step_lib.make_train_chunk(apply_fn, tx, layout), donate_argnums=(0,))

    def eval_fn(self, apply_fn) -> Any:
        """`evaluate(params, images, labels, weights) -> Sums`, jitted for this placement."""
        return jax.jit(step_lib.make_evaluate(apply_fn))


class PmapPlacement(Placement):
    """`jax.pmap` over the local devices, with a leading device axis."""

    mode = "pmap"

    def __init__(self, devices: list[Any]):
        super().__init__(devices)
        self._sharding = NamedSharding(Mesh(np.array(devices), (AXIS,)), P(AXIS))

    def _per_device(self, a: np.ndarray) -> jax.Array:
        """Entry i of `a`'s leading (device) axis on device i."""
        shards = [jax.device_put(a[i : i + 1], d) for i, d in enumerate(self.devices)]
        return jax.make_array_from_single_device_arrays(a.shape, self._sharding, shards)

    def put_replicated(self, tree: Any) -> Any:
        n = self.num_devices
        return jax.tree.map(lambda x: self._per_device(np.broadcast_to(x, (n, *np.shape(x)))), tree)

    def to_host(self, tree: Any) -> Any:
        return jax.tree.map(lambda x: np.asarray(jax.device_get(x.addressable_shards[0].data))[0], tree)

    def put_broadcast(self, array):
        return array  # pmap's in_axes=None sends it to every device

    def put_eval(self, images, labels, weights):
        # (num_batches, batch, ...) -> (devices, num_batches, batch / devices, ...): each device
        # holds and evaluates its own share of every eval batch.
        n = self.num_devices

        def split(a):
            a = np.asarray(a)
            return np.moveaxis(a.reshape(a.shape[0], n, a.shape[1] // n, *a.shape[2:]), 1, 0)

        return tuple(self._per_device(split(a)) for a in (images, labels, weights))

    def train_fn(self, apply_fn, tx, layout):
        fn = step_lib.make_train_chunk(apply_fn, tx, layout, axis_name=AXIS, num_shards=self.num_devices)
        # The epoch order and chunk index are the same for every device: broadcast them.
        return jax.pmap(fn, axis_name=AXIS, devices=self.devices, in_axes=(0, 0, 0, None, None), donate_argnums=(0,))

    def eval_fn(self, apply_fn):
        return jax.pmap(step_lib.make_evaluate(apply_fn, axis_name=AXIS), axis_name=AXIS, devices=self.devices)


class ShardedPlacement(Placement):
    """`jax.jit` over a 1-D device mesh: replicated state, batch split on `data`."""

    mode = "sharded"

    def __init__(self, devices: list[Any]):
        super().__init__(devices)
        self.mesh = Mesh(np.array(devices), (AXIS,))
        self._replicated = NamedSharding(self.mesh, P())
        self._batch = NamedSharding(self.mesh, P(AXIS))

    def put_replicated(self, tree: Any) -> Any:
        return jax.tree.map(lambda x: _global_array(x, self._replicated), tree)

    def put_eval(self, images, labels, weights):
        sharding = NamedSharding(self.mesh, P(None, AXIS))
        return tuple(_global_array(a, sharding) for a in (images, labels, weights))

    def to_host(self, tree: Any) -> Any:
        # Replicated values: any local shard is the whole value (also when other processes hold the rest).
        return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), tree)

    def _constrain(self, x: jax.Array) -> jax.Array:
        return jax.lax.with_sharding_constraint(x, self._batch)

    def train_fn(self, apply_fn, tx, layout):
        fn = step_lib.make_train_chunk(apply_fn, tx, layout, constrain_batch=self._constrain)
        return jax.jit(fn, donate_argnums=(0,), out_shardings=self._replicated)

    def eval_fn(self, apply_fn):
        fn = step_lib.make_evaluate(apply_fn, constrain_batch=self._constrain)
        return jax.jit(fn, out_shardings=self._replicated)


def _global_array(value: Any, sharding: NamedSharding) -> jax.Array:
    """A global array from a host value every process holds; each process fills only its own devices."""
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def check_placement(config: Config, devices: list[Any] | None = None) -> tuple[str, list[Any]]:
    """The mode `config.parallel` resolves to on `devices` (default: every device), and those devices; refuses
    a multi-process run that is not sharded and a batch that does not split evenly."""
    devices = list(devices if devices is not None else jax.devices())
    mode = resolve_mode(config, len(devices))
    if jax.process_count() > 1 and mode != "sharded":
        raise ConfigError(f"--parallel: a multi-process run needs --parallel=sharded (or auto), not {mode}")
    if mode != "none" and config.batch_size % len(devices):
        raise ConfigError(
            f"--batch_size: {config.batch_size} does not divide evenly across {len(devices)} devices "
            f"for --parallel={mode}; use a multiple of {len(devices)}"
        )
    return mode, devices


def make_placement(config: Config, devices: list[Any] | None = None) -> Placement:
    """The placement for `config.parallel` (checked by `check_placement`)."""
    mode, devices = check_placement(config, devices)
    if mode == "none":
        return Placement(devices[:1])
    return (PmapPlacement if mode == "pmap" else ShardedPlacement)(devices)
