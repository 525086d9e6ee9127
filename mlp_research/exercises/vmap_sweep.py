"""Train several same-shape configurations in one compiled program with `jax.vmap`.

Configurations that differ only in learning rate, seed or initialisation have
identical parameter shapes and the same computation, so their training states
can be stacked along a leading axis and stepped together: one compile, one
dispatch per epoch, and batched matmuls that keep the cores busy. The learning
rate lives in the optimiser state (`optax.inject_hyperparams`), so it can differ
per member. Everything else reuses the core's pure step functions, so a group
of one gives the same numbers as `train_and_evaluate` (tests check 1e-5).

Members that diverge (non-finite loss) are recorded as diverged instead of
stopping the group.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mlp_research.config import Config
from mlp_research.data import Split, Splits, load_splits
from mlp_research.jax_backend.models import build_model, to_canonical
from mlp_research.jax_backend import step as step_lib
from mlp_research.run.driver import device_description
from mlp_research.jax_backend.optim import make_optimizer
from mlp_research.jax_backend.placement import pad_eval

# Fields a group's members may differ in; everything else must be equal.
PER_MEMBER_FIELDS = ("lr", "seed", "init", "sigma")
# Fields that only describe where the data come from (one load serves them all).
DATA_FIELDS = ("dataset", "data_source", "data_dir", "val_fraction", "synthetic_train_size", "synthetic_test_size")

EpochCallback = Callable[[int, list[dict]], None]


def group_key(config: Config) -> tuple:
    """Configs with equal keys can train together in one vmapped program."""
    flat = config.to_flat()
    return tuple(sorted((k, str(v)) for k, v in flat.items() if k not in PER_MEMBER_FIELDS + ("progress",)))


def data_key(config: Config) -> tuple:
    flat = config.to_flat()
    return tuple((k, flat[k]) for k in DATA_FIELDS)


_SPLITS_CACHE: dict[tuple, Splits] = {}


def cached_splits(config: Config, train_subset: int = 0) -> Splits:
    """`load_splits` once per process and data setting; optionally `train_subset` training examples.

    The subset is a fixed random draw (seed 0), the same for every trial that asks for
    that size, so sweeps compare like with like; evaluation splits stay whole.
    """
    key = data_key(config)
    if key not in _SPLITS_CACHE:
        _SPLITS_CACHE[key] = load_splits(config)
    splits = _SPLITS_CACHE[key]
    if train_subset and train_subset < len(splits.train):
        rng = np.random.default_rng(0)
        idx = np.sort(rng.permutation(len(splits.train))[:train_subset])
        train = Split("train", splits.train.images[idx], splits.train.labels[idx])
        splits = dataclasses.replace(splits, train=train)
    return splits


def injected_optimizer(config: Config, steps_per_epoch: int, lr: float) -> optax.GradientTransformation:
    """The optimiser with its learning rate held in the state, so vmapped members can differ."""
    factory = optax.inject_hyperparams(lambda learning_rate: make_optimizer(config, steps_per_epoch, learning_rate))
    return factory(learning_rate=lr)


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: Any, k: int) -> Any:
    return jax.tree.map(lambda x: x[k], tree)


_INIT_CACHE: dict[tuple, Any] = {}


def init_params(config: Config) -> Any:
    """Flax parameters of one member, initialised by one compiled call (cached per model spec)."""
    spec = config.model
    if spec not in _INIT_CACHE:
        model = build_model(spec)
        fn = jax.jit(lambda key: model.init(key, jnp.zeros((1, 28, 28), jnp.float32))["params"])
        key = jax.random.PRNGKey(0)
        _INIT_CACHE[spec] = fn.lower(key).compile(compiler_options={"xla_backend_optimization_level": 0})
    return _INIT_CACHE[spec](jax.random.PRNGKey(config.seed))


@dataclasses.dataclass
class GroupTiming:
    """Wall times of one group: compile, each epoch (train + eval), and the whole call."""

    members: int
    num_train: int
    compile_seconds: float
    epoch_seconds: list[float]
    total_seconds: float

    @property
    def steady_epoch_seconds(self) -> float:
        s = self.epoch_seconds
        return float(np.median(s[1:] if len(s) > 1 else s))

    @property
    def examples_per_second(self) -> float:
        """Training examples processed per second by the whole group (all members)."""
        return self.members * self.num_train / self.steady_epoch_seconds


def train_group(
    configs: Sequence[Config],
    splits: Splits,
    on_epoch: EpochCallback | None = None,
    vmap: bool = True,
) -> tuple[list[dict], GroupTiming]:
    """Train `configs` (same `group_key`) together; returns one summary per member and the timing.

    `on_epoch(epoch, rows)` gets the 1-based epoch and each member's metrics row; it may
    raise (e.g. Optuna pruning) to stop the group. `vmap=False` with one config runs the
    plain (unbatched) program, for speed comparisons.
    """
    start = time.perf_counter()
    configs = list(configs)
    if not configs:
        raise ValueError("train_group needs at least one config")
    keys = {group_key(c) for c in configs}
    if len(keys) != 1:
        raise ValueError("configs of one group must differ only in " + ", ".join(PER_MEMBER_FIELDS))
    if not vmap and len(configs) != 1:
        raise ValueError("vmap=False trains exactly one config")
    base = configs[0]
    k = len(configs)
    layout = step_lib.make_layout(len(splits.train), base.batch_size, 0)
    model = build_model(base.model, base.matmul_precision)  # apply does not depend on the initialiser
    tx = injected_optimizer(base, layout.steps_per_epoch, base.lr)

    t0 = time.perf_counter()
    states = []
    for c in configs:
        params = init_params(c)
        opt_state = injected_optimizer(c, layout.steps_per_epoch, c.lr).init(params)
        states.append(step_lib.TrainState(jnp.zeros((), jnp.int32), params, opt_state))
    train_x, train_y = jax.device_put((splits.train.images, splits.train.labels))
    eval_batch = min(base.eval_batch_size, len(splits.eval))
    eval_data = jax.device_put(pad_eval(splits.eval.images, splits.eval.labels, eval_batch))

    chunk = step_lib.make_train_chunk(model.apply, tx, layout)
    evaluate = step_lib.make_evaluate(model.apply)
    if vmap:
        state = _stack(states)
        chunk = jax.vmap(chunk, in_axes=(0, 0, None, None, 0, None))
        evaluate = jax.vmap(evaluate, in_axes=(0, None, None, None))
        zeros = lambda: _stack([step_lib.Totals.zeros()] * k)  # noqa: E731
        orders = lambda epoch: np.stack([step_lib.epoch_order(c.seed, epoch, layout) for c in configs])  # noqa: E731
    else:
        state = states[0]
        zeros = step_lib.Totals.zeros
        orders = lambda epoch: step_lib.epoch_order(base.seed, epoch, layout)  # noqa: E731
    order0 = jnp.asarray(orders(0))
    train_chunk = jax.jit(chunk, donate_argnums=(0, 1)).lower(
        state, zeros(), train_x, train_y, order0, jnp.int32(0)).compile()
    eval_jit = jax.jit(evaluate)
    eval_compiled = eval_jit.lower(state.params, *eval_data).compile()
    compile_seconds = time.perf_counter() - t0

    histories: list[list[dict]] = [[] for _ in configs]
    first_bad = np.full(k, -1)
    epoch_seconds = []
    for epoch in range(base.max_epochs):
        t_epoch = time.perf_counter()
        order = jnp.asarray(orders(epoch))
        totals = zeros()  # fresh each epoch: the compiled call donates it
        for c in range(layout.chunks_per_epoch):
            state, totals = train_chunk(state, totals, train_x, train_y, order, jnp.int32(c))
        ev = eval_compiled(state.params, *eval_data)
        totals, ev = jax.device_get((totals, ev))
        seconds = time.perf_counter() - t_epoch
        epoch_seconds.append(seconds)
        rows = []
        for m in range(k):
            tm = _unstack(totals, m) if vmap else totals
            em = _unstack(ev, m) if vmap else ev
            if first_bad[m] < 0 and int(tm.first_nonfinite_step) >= 0:
                first_bad[m] = int(tm.first_nonfinite_step)
            train_loss, train_acc = tm.means()
            val_loss, val_acc = em.means()
            row = dict(epoch=epoch + 1, step=(epoch + 1) * layout.steps_per_epoch, train_loss=train_loss,
                       train_acc=train_acc, val_loss=val_loss, val_acc=val_acc, seconds=seconds,
                       examples_per_second=layout.num_train * k / seconds)
            histories[m].append(row)
            rows.append(row)
        if on_epoch is not None:
            on_epoch(epoch + 1, rows)

    timing = GroupTiming(k, layout.num_train, compile_seconds, epoch_seconds, 0.0)
    summaries = []
    test_data = None
    if base.test_at_end and splits.eval is not splits.test:
        test_data = jax.device_put(pad_eval(splits.test.images, splits.test.labels, eval_batch))
        test_totals = jax.device_get(eval_jit(state.params, *test_data))
    host_params = jax.device_get(state.params)
    for m, c in enumerate(configs):
        final = {key: histories[m][-1][key] for key in ("epoch", "step", "train_loss", "train_acc", "val_loss",
                                                          "val_acc")}
        if test_data is not None:
            tl, ta = (_unstack(test_totals, m) if vmap else test_totals).means()
            final.update(test_loss=tl, test_acc=ta)
        params = _unstack(host_params, m) if vmap else host_params
        summaries.append({
            "config": c.to_flat(),
            "final": final,
            "best_val_acc": float(np.nanmax([r["val_acc"] for r in histories[m]])),
            "history": histories[m],
            "diverged": bool(first_bad[m] >= 0),
            "first_nonfinite_step": int(first_bad[m]),
            "eval_split": splits.eval.name,
            "num_params": c.model.num_params(),
            "num_train": layout.num_train,
            "num_eval": len(splits.eval),
            "data_source": splits.source,
            "group_size": k,
            "vmapped": vmap,
            "device": device_description(),
            "params": to_canonical(c.model, params),
        })
    timing.total_seconds = time.perf_counter() - start
    for s in summaries:
        s.update(compile_seconds=timing.compile_seconds, steady_epoch_seconds=timing.steady_epoch_seconds,
                 group_examples_per_second=timing.examples_per_second, total_seconds=timing.total_seconds)
    return summaries, timing
