"""`JaxGroupTrainer`: several configurations trained together in one compiled program with `jax.vmap`.

Members differ only in fields that leave the computation's shapes alone
(learning rate, momentum, seed, initialisation), so their training states stack
along a leading axis and one compiled chunk steps them all: one compilation and
one dispatch per chunk for the whole group. The per-member learning rate and
momentum live in the optimiser state (`optax.inject_hyperparams`); each member
draws its own epoch order from its seed. The step functions are the core's
(`step.py`).

By default the members run one after another inside the compiled program
(`lax.map`): each member's arithmetic is exactly a single run's, so a member's
rows and parameters are bit-identical to `--lr=...` alone. `--vmap_batched`
batches them with `jax.vmap` instead: batched matmuls keep an accelerator busy,
but change the order of float sums, and training amplifies those last-bit
differences (1.8e-4 in val_loss after 3 epochs on Fashion-MNIST on a CPU).

Each member's state converts to and from a single run's `TrainState`, so its
checkpoint is an ordinary single-run checkpoint: evaluable, and resumable alone.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlp_research import batching
from mlp_research.backends.base import EpochSums, Sums
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.jax_backend import optim
from mlp_research.jax_backend import step as step_lib
from mlp_research.jax_backend.models import build_model, to_canonical
from mlp_research.jax_backend.trainer import initial_state, optimizer_state_or_none


def map_members(fn: Callable[..., Any], in_axes: tuple) -> Callable[..., Any]:
    """`jax.vmap(fn, in_axes)`'s signature, computed member by member with `lax.map` (one loop in one program).

    Each iteration runs exactly the single-member computation, so results are
    bit-identical to single runs (vmap's batched kernels sum in another order).
    """

    def mapped(*args: Any) -> Any:
        per_member = [i for i, axis in enumerate(in_axes) if axis == 0]

        def one(sliced: tuple) -> Any:
            full = list(args)
            for i, value in zip(per_member, sliced):
                full[i] = value
            return fn(*full)

        return jax.lax.map(one, tuple(args[i] for i in per_member))

    return mapped


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _member(tree: Any, k: int) -> Any:
    return jax.tree.map(lambda x: np.asarray(x[k]), tree)


class JaxGroupTrainer:
    """Model, stacked optimiser states and data of a group, placed on one device and compiled once."""

    def __init__(self, configs: Sequence[Config], splits: Splits):
        self.configs = list(configs)
        self.members = len(self.configs)
        base = self.configs[0]
        self.device = jax.devices()[0]
        self.layout = batching.make_layout(len(splits.train), base.batch_size, base.steps_per_chunk)
        self.model = build_model(base.spec, base.matmul_precision)
        self.tx = optim.injected_optimizer(base, self.layout.steps_per_epoch)
        t0 = time.perf_counter()
        self.train_data = jax.device_put((splits.train.compact_images, splits.train.labels), self.device)
        self.eval_batch = max(min(base.eval_batch_size, len(splits.eval)), 1)
        self.eval_data = self._put_eval(splits.eval.compact_images, splits.eval.labels)
        self.state = jax.device_put(_stack([initial_state(c, self._member_tx(c)) for c in self.configs]), self.device)
        self.step = 0  # every member's step counter: members train the same steps
        self.start_epoch(0)
        over_members = jax.vmap if base.vmap_batched else map_members
        chunk = over_members(step_lib.make_train_chunk(self.model.apply, self.tx, self.layout),
                             in_axes=(0, None, None, 0, None))
        self._train_chunk = jax.jit(chunk, donate_argnums=(0,)).lower(
            self.state, *self.train_data, self.order, jnp.int32(0)).compile()
        self._eval_any = jax.jit(over_members(step_lib.make_evaluate(self.model.apply), in_axes=(0, None, None, None)))
        self._eval = self._eval_any.lower(self.state.params, *self.eval_data).compile()
        self.compile_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------- set-up
    def _member_tx(self, config: Config):
        return optim.injected_optimizer(config, self.layout.steps_per_epoch)

    def _put_eval(self, images: np.ndarray, labels: np.ndarray) -> tuple:
        return jax.device_put(batching.pad_eval(images, labels, self.eval_batch), self.device)

    def describe(self) -> dict[str, Any]:
        return {"parallel": "none", "num_devices": 1, "device": self.device.device_kind,
                "platform": self.device.platform, "members": self.members,
                "vmap": "batched" if self.configs[0].vmap_batched else "sequential"}

    def compile(self) -> None:
        """Compiled in the constructor (one program for the whole group)."""

    # ----------------------------------------------------------- training
    def start_epoch(self, epoch: int, sums: Sequence[Sums] | None = None) -> None:
        orders = np.stack([batching.epoch_order(c.seed, epoch, self.layout, c.data_order) for c in self.configs])
        self.order = jax.device_put(orders, self.device)
        # Each member's sums, kept as a single run of its config keeps them (`EpochSums`); its values are
        # its row of the group's per-step outputs.
        self._sums = [EpochSums(batching.step_counts(orders[k], self.layout), sums[k] if sums else None,
                                functools.partial(_member_rows, k)) for k in range(self.members)]

    def train_chunk(self, chunk: int) -> None:
        first, end = chunk * self.layout.steps_per_chunk, self.layout.steps_done(chunk)
        self.state, (losses, correct) = self._train_chunk(self.state, *self.train_data, self.order,
                                                          np.int32(chunk))
        for member_sums in self._sums:
            member_sums.add(self.step, first, end, losses, correct)
        self.step += end - first

    def epoch_sums(self) -> list[Sums]:
        return [member_sums.total() for member_sums in self._sums]

    def evaluate_eval_split(self) -> list[Sums]:
        return self._split(self._eval(self.state.params, *self.eval_data))

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> list[Sums]:
        return self._split(self._eval_any(self.state.params, *self._put_eval(images, labels)))

    def _split(self, sums: Sums) -> list[Sums]:
        host = jax.device_get(sums)
        return [_member(host, k).to_host() for k in range(self.members)]

    # -------------------------------------------------------------- state
    def state_dicts(self) -> list[dict[str, Any]]:
        """Each member's state as a single run of its config holds it (the injected rates left out)."""
        host = jax.device_get(self.state)
        states = []
        for k in range(self.members):
            member = _member(host, k)
            state = {"step": np.asarray(member.step, np.int32), "params": member.params}
            opt_state = optimizer_state_or_none(member.opt_state.inner_state)
            if opt_state is not None:
                state["opt_state"] = opt_state
            states.append(state)
        return states

    def abstract_state_dict(self) -> dict[str, Any]:
        return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), self.state_dicts()[0])

    def load_state_dicts(self, states: Sequence[dict[str, Any]]) -> None:
        wrapped = []
        for config, state in zip(self.configs, states):
            fresh = self._member_tx(config).init(state["params"])  # the member's injected rates
            inner = state.get("opt_state", fresh.inner_state)
            opt_state = fresh._replace(count=np.asarray(state["step"], np.int32), inner_state=inner)
            wrapped.append(step_lib.TrainState(np.asarray(state["step"], np.int32), state["params"], opt_state))
        self.state = jax.device_put(_stack(wrapped), self.device)
        self.step = int(np.asarray(states[0]["step"]))

    def get_params(self) -> list[dict[str, np.ndarray]]:
        params = jax.device_get(self.state.params)
        return [to_canonical(c.spec, _member(params, k)) for k, c in enumerate(self.configs)]


def _member_rows(k: int, values: list[Any]) -> list[np.ndarray]:
    """Member k's row of each of the group's (members, steps) outputs."""
    return [np.asarray(v)[k] for v in jax.device_get(values)]
