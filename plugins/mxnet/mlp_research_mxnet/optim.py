"""optax's optimisers and schedules, written as in-place mxnet array updates.

Hand-written rather than `gluon.Trainer` so both models share one update with
optax's exact semantics: gradients are already means over a batch's examples
(a short last batch included, where `Trainer.step(batch_size)` would rescale by
the wrong size), L2 weight decay is added to the gradient except for adamw and
lamb (decoupled, scaled by the learning rate), and schedules are step-based.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from mlp_research.config import Config
from mlp_research.optimizers import (
    ADAGRAD_EPS,
    ADAM_B1,
    ADAM_B2,
    ADAM_EPS,
    LAMB_EPS,
    RMS_DECAY,
    RMS_EPS,
    STATE_SLOTS,
)

SUPPORTED = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "lamb")
# optax's defaults and state slots, shared with the core (and the other backends).
SLOTS = STATE_SLOTS
B1, B2 = ADAM_B1, ADAM_B2


def make_schedule(config: Config, steps_per_epoch: int) -> Callable[[int], float]:
    """lr(step) equal to `mlp_research.jax_backend.optim.make_schedule` (optax's formulas)."""
    total = config.max_epochs * steps_per_epoch
    peak = config.lr
    if config.schedule == "constant":
        return lambda step: peak

    def cosine(step: int, init: float, decay_steps: int) -> float:
        count = min(step, decay_steps)
        return init * 0.5 * (1 + math.cos(math.pi * count / decay_steps))

    if config.schedule == "cosine":
        return lambda step: cosine(step, peak, total)
    warmup = max(int(round(config.warmup_epochs * steps_per_epoch)), 0)
    decay_steps = max(total, warmup + 1)

    def warmup_cosine(step: int) -> float:
        if step < warmup:  # optax.linear_schedule(0, peak, warmup)
            return peak * step / warmup
        return cosine(step - warmup, peak, decay_steps - warmup)

    return warmup_cosine


class Optimizer:
    """Updates parameters in place from their gradients; state is a dict of slot -> name -> array."""

    def __init__(self, config: Config, steps_per_epoch: int):
        self.name = config.optimizer
        self.momentum = config.momentum
        self.weight_decay = config.weight_decay
        self.lr = make_schedule(config, steps_per_epoch)

    def init_state(self, params: dict[str, Any], np_mod: Any) -> dict[str, dict[str, Any]]:
        """Fresh optimiser state for `params` (mxnet arrays), as optax's `init`."""
        return {slot: {k: np_mod.full(p.shape, value, dtype=p.dtype) for k, p in params.items()}
                for slot, value in SLOTS[self.name].items()}

    def abstract_state(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, np.ndarray]]:
        return {slot: {k: np.zeros(s, np.float32) for k, s in shapes.items()} for slot in SLOTS[self.name]}

    def update(self, step: int, params: dict[str, Any], grads: dict[str, Any], state: dict[str, dict[str, Any]],
               np_mod: Any) -> None:
        """One optax step at global step `step` (0-based), in place on params and state."""
        lr, name, wd, m = self.lr(step), self.name, self.weight_decay, self.momentum
        decoupled = name in ("adamw", "lamb")
        count = step + 1
        for k, p in params.items():
            g = grads[k]
            if wd > 0 and not decoupled:
                g = g + wd * p
            if name == "sgd":
                p -= lr * g
            elif name in ("momentum", "nesterov"):
                t = state["trace"][k]
                t[:] = g + m * t
                p -= lr * (g + m * t if name == "nesterov" else t)
            elif name in ("adam", "adamw", "lamb"):
                mu, nu = state["mu"][k], state["nu"][k]
                mu[:] = (1 - B1) * g + B1 * mu
                nu[:] = (1 - B2) * (g * g) + B2 * nu
                eps = LAMB_EPS if name == "lamb" else ADAM_EPS
                u = (mu / (1 - B1 ** count)) / (np_mod.sqrt(nu / (1 - B2 ** count)) + eps)
                if decoupled and wd > 0:
                    u = u + wd * p
                if name == "lamb":  # optax.scale_by_trust_ratio: ||p|| / ||u||, 1 where either is 0
                    p_norm, u_norm = np_mod.linalg.norm(p), np_mod.linalg.norm(u)
                    zero = (p_norm == 0) + (u_norm == 0)
                    u = u * np_mod.where(zero, np_mod.ones_like(p_norm), p_norm / (u_norm + (u_norm == 0)))
                p -= lr * u
            elif name == "rmsprop":  # scale_by_rms (eps in sqrt), then lr, then trace(momentum)
                nu, t = state["nu"][k], state["trace"][k]
                nu[:] = (1 - RMS_DECAY) * (g * g) + RMS_DECAY * nu
                t[:] = lr * g / np_mod.sqrt(nu + RMS_EPS) + m * t
                p -= t
            elif name == "adagrad":
                s = state["sum_of_squares"][k]
                s += g * g
                p -= lr * g / np_mod.sqrt(s + ADAGRAD_EPS)
            else:  # check() refuses anything else first
                raise ValueError(f"unsupported optimizer {name!r}")
