"""The optimisers every backend trains, stated once: optax's update rules as plain arithmetic.

The JAX backend uses optax itself. A plugin whose framework has an optimiser
that computes exactly optax's update uses it (and says so); the others apply
`update` below, which is written with `+ - * /` and three array functions
(`ArrayOps`), so the same lines run on numpy, torch, TensorFlow and mxnet
arrays. The numpy reference (`mlp_research.testing.reference`) runs it too, and
the tests compare it with optax, so this description cannot drift from the core.

For a gradient g (already the mean over the batch's examples), parameter p,
learning rate lr (from `mlp_research.schedules`) and `count` updates made so far:

- L2 (every optimiser but adamw and lamb, when weight_decay > 0): g += weight_decay * p, first.
- sgd:      p -= lr * g
- momentum: t = g + momentum * t;  p -= lr * t            (optax.trace)
- nesterov: t = g + momentum * t;  p -= lr * (g + momentum * t)
- adam:     mu = b1 mu + (1 - b1) g;  nu = b2 nu + (1 - b2) g^2;  k = count + 1;
            u = (mu / (1 - b1^k)) / (sqrt(nu / (1 - b2^k)) + eps);  p -= lr * u
            (b1 0.9, b2 0.999, eps 1e-8 outside the square root)
- adamw:    adam's u + weight_decay * p (decoupled), then p -= lr * u
- lamb:     adam's u with eps 1e-6, + weight_decay * p, times the trust ratio
            ||p|| / ||u|| (1 where either norm is 0), then p -= lr * u
- rmsprop:  nu = 0.9 nu + 0.1 g^2;  t = momentum * t - lr * g / sqrt(nu + 1e-8);  p += t
            (eps inside the root; the rate scales the step before the momentum trace, which therefore
            holds the negated step, as optax's state does)
- adagrad:  s = s + g^2 (s starts at 0.1);  p -= lr * g / sqrt(s + 1e-7)  (0 where s = 0)

The state each optimiser keeps per parameter is `STATE_SLOTS` (optax's names
and initial values); checkpoints store it in that form.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

SUPPORTED = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "lamb")
ADAM_B1, ADAM_B2, ADAM_EPS, LAMB_EPS = 0.9, 0.999, 1e-8, 1e-6
RMS_DECAY, RMS_EPS = 0.9, 1e-8
ADAGRAD_INIT, ADAGRAD_EPS = 0.1, 1e-7
# Optimisers whose weight decay is decoupled (added to the update) rather than L2 on the gradient.
DECOUPLED_DECAY = ("adamw", "lamb")
STATE_SLOTS: dict[str, dict[str, float]] = {
    "sgd": {},
    "momentum": {"trace": 0.0},
    "nesterov": {"trace": 0.0},
    "adam": {"mu": 0.0, "nu": 0.0},
    "adamw": {"mu": 0.0, "nu": 0.0},
    "lamb": {"mu": 0.0, "nu": 0.0},
    "rmsprop": {"nu": 0.0, "trace": 0.0},
    "adagrad": {"sum_of_squares": ADAGRAD_INIT},
}


@dataclasses.dataclass(frozen=True)
class ArrayOps:
    """The array functions the rules need beyond arithmetic, for one framework."""

    sqrt: Callable[[Any], Any]
    norm: Callable[[Any], Any]  # the L2 norm of all elements
    where: Callable[[Any, Any, Any], Any]


NUMPY_OPS = ArrayOps(np.sqrt, lambda x: np.sqrt(np.sum(np.square(x))), np.where)


@dataclasses.dataclass(frozen=True)
class Hyper:
    """The per-run constants of a rule."""

    name: str
    momentum: float = 0.9
    weight_decay: float = 0.0


def update(hyper: Hyper, grad: Any, param: Any, slots: dict[str, Any], count: Any, lr: Any,
           ops: ArrayOps) -> tuple[Any, dict[str, Any]]:
    """(delta, new_slots): one update of one parameter; the new parameter is `param + delta`."""
    g = grad
    if hyper.weight_decay and hyper.name not in DECOUPLED_DECAY:
        g = g + hyper.weight_decay * param
    name = hyper.name
    if name == "sgd":
        return -lr * g, {}
    if name in ("momentum", "nesterov"):
        trace = g + hyper.momentum * slots["trace"]
        step = g + hyper.momentum * trace if name == "nesterov" else trace
        return -lr * step, {"trace": trace}
    if name in ("adam", "adamw", "lamb"):
        return _adam_family(hyper, g, param, slots, count, lr, ops)
    if name == "rmsprop":  # optax's trace follows the negated step, so it holds the delta itself
        nu = RMS_DECAY * slots["nu"] + (1 - RMS_DECAY) * g * g
        trace = hyper.momentum * slots["trace"] - lr * g / ops.sqrt(nu + RMS_EPS)
        return trace, {"nu": nu, "trace": trace}
    if name == "adagrad":
        total = slots["sum_of_squares"] + g * g
        scale = ops.where(total > 0, 1 / ops.sqrt(total + ADAGRAD_EPS), 0.0 * total)
        return -lr * scale * g, {"sum_of_squares": total}
    raise ValueError(f"unknown optimizer {name!r}; supported: {', '.join(SUPPORTED)}")


def _adam_family(hyper: Hyper, g: Any, param: Any, slots: dict[str, Any], count: Any, lr: Any,
                 ops: ArrayOps) -> tuple[Any, dict[str, Any]]:
    mu = ADAM_B1 * slots["mu"] + (1 - ADAM_B1) * g
    nu = ADAM_B2 * slots["nu"] + (1 - ADAM_B2) * g * g
    k = count + 1
    eps = LAMB_EPS if hyper.name == "lamb" else ADAM_EPS
    u = (mu / (1 - ADAM_B1**k)) / (ops.sqrt(nu / (1 - ADAM_B2**k)) + eps)
    if hyper.name in DECOUPLED_DECAY and hyper.weight_decay:
        u = u + hyper.weight_decay * param
    if hyper.name == "lamb":
        p_norm, u_norm = ops.norm(param), ops.norm(u)
        safe = ops.where(u_norm == 0, 1.0 + 0.0 * u_norm, u_norm)
        ratio = ops.where(p_norm == 0, 1.0 + 0.0 * p_norm, ops.where(u_norm == 0, 1.0 + 0.0 * u_norm, p_norm / safe))
        u = u * ratio
    return -lr * u, {"mu": mu, "nu": nu}


def initial_slots(name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """A parameter's fresh optimiser state as numpy arrays (what optax's `init` makes)."""
    return {slot: np.full(shape, value, dtype) for slot, value in STATE_SLOTS[name].items()}
