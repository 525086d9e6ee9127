"""optax's optimisers and schedules, written as TensorFlow ops on `tf.Variable` slots.

Keras 3's optimisers do not match optax's rules: its SGD momentum keeps
`v = m*v - lr*g` (differs from optax's `t = g + m*t; p -= lr*t` once the rate
changes), Adam and Adagrad use eps 1e-7 outside/inside the root differently,
RMSprop's momentum and eps differ. Writing the rules here keeps runs comparable
across backends and the optimiser state a plain dict of arrays for checkpoints.
The schedule count is the global step, which is what optax's own counter is.
"""

from __future__ import annotations

import math
from typing import Any

from mlp_research.config import Config
from mlp_research.optimizers import (
    ADAGRAD_EPS,
    ADAM_B1,
    ADAM_B2,
    ADAM_EPS,
    RMS_DECAY,
    RMS_EPS,
    STATE_SLOTS,
)
from mlp_research_tensorflow._tf import import_tensorflow

tf = import_tensorflow()

# optax's defaults and state slots, shared with the core (lamb is refused here, see backend.check).
SLOTS = {name: slots for name, slots in STATE_SLOTS.items() if name != "lamb"}


def learning_rate(config: Config, steps_per_epoch: int, count: Any) -> Any:
    """The rate at step `count` (0-based), as optax's constant/cosine/warmup_cosine schedules."""
    lr = tf.constant(config.lr, tf.float32)
    if config.schedule == "constant":
        return lr
    total = config.max_epochs * steps_per_epoch
    count = tf.cast(count, tf.float32)

    def cosine(peak: Any, t: Any, steps: int) -> Any:
        t = tf.minimum(t, float(steps))
        return peak * (0.5 * (1.0 + tf.cos(math.pi * t / steps)))

    if config.schedule == "cosine":
        return cosine(lr, count, total)
    warmup = max(int(round(config.warmup_epochs * steps_per_epoch)), 0)
    decay_steps = max(total, warmup + 1)
    after = cosine(lr, tf.maximum(count - warmup, 0.0), decay_steps - warmup)
    if warmup == 0:
        return after
    ramp = lr * (1.0 - (1.0 - tf.clip_by_value(count, 0.0, float(warmup)) / warmup))
    return tf.where(count < warmup, ramp, after)


class Optimizer:
    """Applies `config.optimizer`'s update to a list of variables; slots are `tf.Variable`s."""

    def __init__(self, config: Config, steps_per_epoch: int, params: list[Any], names: list[str]):
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.names = names
        self.slots: dict[str, list[Any]] = {
            slot: [tf.Variable(tf.fill(p.shape, tf.constant(init, p.dtype)), trainable=False, name=f"{slot}_{n}")
                   for p, n in zip(params, names)]
            for slot, init in SLOTS[config.optimizer].items()
        }

    def apply(self, grads: list[Any], params: list[Any], count: Any) -> None:
        """One update with the gradients of step `count` (the number of updates done before it)."""
        cfg = self.config
        name, wd = cfg.optimizer, cfg.weight_decay
        lr = learning_rate(cfg, self.steps_per_epoch, count)
        for i, (g, p) in enumerate(zip(grads, params)):
            if wd > 0 and name != "adamw":  # classic L2: optax.add_decayed_weights before the optimiser
                g = g + wd * p
            if name == "sgd":
                u = g
            elif name in ("momentum", "nesterov"):
                trace = self.slots["trace"][i]
                t = g + cfg.momentum * trace
                trace.assign(t)
                u = g + cfg.momentum * t if name == "nesterov" else t
            elif name in ("adam", "adamw"):
                mu, nu = self.slots["mu"][i], self.slots["nu"][i]
                m = (1 - ADAM_B1) * g + ADAM_B1 * mu
                v = (1 - ADAM_B2) * tf.square(g) + ADAM_B2 * nu
                mu.assign(m)
                nu.assign(v)
                c = tf.cast(count + 1, tf.float32)
                m_hat = m / (1 - tf.pow(ADAM_B1, c))
                v_hat = v / (1 - tf.pow(ADAM_B2, c))
                u = m_hat / (tf.sqrt(v_hat) + ADAM_EPS)
                if name == "adamw" and wd > 0:  # decoupled: added after the Adam scaling
                    u = u + wd * p
            elif name == "rmsprop":
                nu, trace = self.slots["nu"][i], self.slots["trace"][i]
                v = (1 - RMS_DECAY) * tf.square(g) + RMS_DECAY * nu
                nu.assign(v)
                # optax: scale_by_rms (eps inside the root), then -lr, then the momentum trace.
                t = -lr * (g * tf.math.rsqrt(v + RMS_EPS)) + cfg.momentum * trace
                trace.assign(t)
                p.assign_add(t)
                continue
            elif name == "adagrad":
                acc = self.slots["sum_of_squares"][i]
                s = tf.square(g) + acc
                acc.assign(s)
                u = tf.where(s > 0, tf.math.rsqrt(s + ADAGRAD_EPS), 0.0) * g
            else:
                raise ValueError(f"unsupported optimizer {name!r}")
            p.assign_sub(lr * u)

    def state(self) -> dict[str, dict[str, Any]]:
        """Slots as {slot: {param name: numpy array}}."""
        return {slot: {n: v.numpy() for n, v in zip(self.names, vs)} for slot, vs in self.slots.items()}

    def load(self, state: dict[str, dict[str, Any]]) -> None:
        for slot, vs in self.slots.items():
            for n, v in zip(self.names, vs):
                v.assign(state[slot][n])
