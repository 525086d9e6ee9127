"""Pure, jit-able functions for one training chunk, evaluation and the data order.

The training data stay on the device (as uint8 pixels when the source had them).
Each epoch has its example indices step by step (`batching.epoch_order`); a
compiled call (`train_chunk`) runs a `lax.scan` over K consecutive minibatches
of it, gathering each batch from the resident arrays by index. The short batch
is padded (index -1) and its padding weighted 0, so every step has one shape
while the mathematics equal d2l's short batch.
Each step returns its loss sum and correct count over examples (the scan's
outputs); the trainer's base class adds them up on the host, once per epoch,
so nothing syncs with the host while an epoch trains.

With `axis_name` set the same functions run under `jax.pmap`: each device takes
its slice of every global batch and sums are combined with `lax.psum`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from mlp_research.backends.base import Sums
from mlp_research.batching import EpochLayout

Array = jax.Array
ApplyFn = Callable[..., Array]


@flax.struct.dataclass
class TrainState:
    """What the optimiser changes: step counter, parameters, optimiser state."""

    step: Array
    params: Any
    opt_state: Any


# The driver's `Sums` holds device arrays inside compiled code: one class for one concept.
jax.tree_util.register_dataclass(Sums, data_fields=[f.name for f in dataclasses.fields(Sums)], meta_fields=[])


def weighted_loss(apply_fn: ApplyFn, params: Any, x: Array, y: Array, w: Array) -> tuple[Array, Array]:
    """Sum over the batch of per-example cross-entropy times weight, and the logits."""
    logits = apply_fn({"params": params}, x)
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(per_example * w), logits


def _psum(tree: Any, axis_name: str | None) -> Any:
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def make_train_chunk(
    apply_fn: ApplyFn,
    tx: optax.GradientTransformation,
    layout: EpochLayout,
    axis_name: str | None = None,
    num_shards: int = 1,
    constrain_batch: Callable[[Array], Array] | None = None,
) -> Callable[..., tuple[TrainState, tuple[Array, Array]]]:
    """Build `train_chunk(state, images, labels, order, chunk) -> (state, (loss sums, correct counts))`.

    Both outputs have one entry per step of the chunk (the global batch's sums).
    `num_shards` > 1 with `axis_name` is the pmap form: each device handles
    `batch_size // num_shards` examples of every global batch. `constrain_batch`
    is the jit-with-shardings form: it annotates the batch indices so XLA
    splits each batch across the mesh.
    """
    local_batch = layout.batch_size // num_shards
    needs_skip = layout.padded_steps > layout.steps_per_epoch

    def train_chunk(state: TrainState, images: Array, labels: Array, order: Array, chunk: Array):
        offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local_batch

        def body(state, i):
            step_in_epoch = chunk * layout.steps_per_chunk + i
            start = step_in_epoch * layout.batch_size + offset
            idx = jax.lax.dynamic_slice_in_dim(order, start, local_batch)
            w = (idx >= 0).astype(jnp.float32)  # -1 marks the padding of a short batch
            idx = jnp.maximum(idx, 0)
            if constrain_batch is not None:
                idx, w = constrain_batch(idx), constrain_batch(w)
            x, y = images[idx], labels[idx]
            (loss_sum, logits), grads = jax.value_and_grad(weighted_loss, argnums=1, has_aux=True)(
                apply_fn, state.params, x, y, w
            )
            correct = jnp.sum((jnp.argmax(logits, -1) == y) * w.astype(jnp.int32))
            count = jnp.sum(w).astype(jnp.int32)
            loss_sum, correct, count, grads = _psum((loss_sum, correct, count, grads), axis_name)
            grads = jax.tree.map(lambda g: g / jnp.maximum(count, 1).astype(g.dtype), grads)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            new_state = TrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state)
            if needs_skip:  # steps past the end of the epoch (padding chunks) change nothing
                valid = step_in_epoch < layout.steps_per_epoch
                new_state = jax.tree.map(lambda new, old: jnp.where(valid, new, old), new_state, state)
            return new_state, (loss_sum, correct)

        return jax.lax.scan(body, state, jnp.arange(layout.steps_per_chunk))

    return train_chunk


def make_evaluate(
    apply_fn: ApplyFn, axis_name: str | None = None, constrain_batch: Callable[[Array], Array] | None = None
) -> Callable[..., Sums]:
    """Build `evaluate(params, images, labels, weights) -> Sums`.

    Inputs are shaped (num_batches, eval_batch, ...); padding rows have weight 0,
    so every example counts exactly once whatever the batch or device count.
    """

    def evaluate(params: Any, images: Array, labels: Array, weights: Array) -> Sums:
        def body(sums, batch):
            x, y, w = batch
            if constrain_batch is not None:
                x, y, w = constrain_batch(x), constrain_batch(y), constrain_batch(w)
            loss_sum, logits = weighted_loss(apply_fn, params, x, y, w)
            correct = jnp.sum((jnp.argmax(logits, -1) == y) * w.astype(jnp.int32))
            return jax.tree.map(jnp.add, sums, (loss_sum, correct, jnp.sum(w).astype(jnp.int32))), None

        zeros = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        sums, _ = jax.lax.scan(body, zeros, (images, labels, weights))
        return Sums(*_psum(sums, axis_name), jnp.full((), -1, jnp.int32))  # evaluation has no bad step

    return evaluate
