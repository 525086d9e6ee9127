"""The optimisers of `mlp_research.optimizers`, applied to `tf.Variable`s inside the compiled step.

Keras 3's optimisers do not match optax's rules (its SGD momentum keeps
`v = m*v - lr*g`, Adam and Adagrad place eps differently, RMSprop's momentum and
eps differ), so every optimiser here applies the project's one statement of
optax's rules, `mlp_research.optimizers.update`, to TensorFlow tensors; the
state lives in `tf.Variable` slots under optax's names. The learning rate of
each step is `mlp_research.schedules`' table, indexed by the global step.
"""

from __future__ import annotations

from typing import Any

from mlp_research import schedules
from mlp_research.config import Config
from mlp_research.optimizers import STATE_SLOTS, ArrayOps, Hyper, update
from mlp_research_tensorflow._tf import tf

TF_OPS = ArrayOps(sqrt=tf.sqrt, norm=lambda x: tf.norm(tf.reshape(x, [-1])), where=tf.where)


class Optimizer:
    """Applies `config.optimizer`'s update to a list of variables; slots are `tf.Variable`s."""

    def __init__(self, config: Config, steps_per_epoch: int, params: list[Any], names: list[str]):
        self.hyper = Hyper(config.optimizer, config.momentum, config.weight_decay)
        self.names = names
        self.rates = tf.constant(schedules.rate_table(config, steps_per_epoch, peak=config.lr))  # constant too
        self.slots: dict[str, list[Any]] = {
            slot: [tf.Variable(tf.fill(p.shape, tf.constant(init, p.dtype)), trainable=False, name=f"{slot}_{n}")
                   for p, n in zip(params, names)]
            for slot, init in STATE_SLOTS[config.optimizer].items()
        }

    def apply(self, grads: list[Any], params: list[Any], count: Any) -> None:
        """One update with the gradients of step `count` (the number of updates done before it)."""
        lr = tf.gather(self.rates, tf.minimum(count, tf.shape(self.rates)[0] - 1))  # the shared schedule's rate
        k = tf.cast(count, tf.float32)
        for i, (g, p) in enumerate(zip(grads, params)):
            slots = {name: variables[i].read_value() for name, variables in self.slots.items()}
            delta, new_slots = update(self.hyper, g, p.read_value(), slots, k, lr, TF_OPS)
            for name, value in new_slots.items():
                self.slots[name][i].assign(value)
            p.assign_add(delta)

    def state(self) -> dict[str, dict[str, Any]]:
        """Slots as {slot: {param name: numpy array}}."""
        return {slot: {n: v.numpy() for n, v in zip(self.names, vs)} for slot, vs in self.slots.items()}

    def load(self, state: dict[str, dict[str, Any]]) -> None:
        for slot, vs in self.slots.items():
            for n, v in zip(self.names, vs):
                v.assign(state[slot][n])
