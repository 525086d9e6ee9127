"""Optimisers and learning-rate schedules that mirror `mlp_research.jax_backend.optim` (optax).

torch.optim's SGD (plain, momentum, nesterov), Adam and AdamW compute exactly
optax's updates (trace-style momentum, bias-corrected Adam with eps outside the
square root, AdamW's decay scaled by the learning rate), so they are used as
they are. torch's RMSprop and Adagrad are different algorithms in the details
(eps outside the square root; Adagrad's accumulator starts at 0, optax's at
0.1), so `OptaxRMSprop` and `OptaxAdagrad` below restate optax's. LAMB is not
in torch.optim and is refused by the backend's `check`.

Schedules are step-based like optax's: the trainer sets each group's lr from
`make_schedule(...)(step)` before each update, the step counting updates done.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from mlp_research.config import Config

Schedule = Callable[[int], float]
SUPPORTED = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad")


def make_schedule(config: Config, steps_per_epoch: int) -> Schedule | None:
    """lr as a function of the update count, or None for a constant rate (nothing to set per step)."""
    total = config.max_epochs * steps_per_epoch
    peak = config.lr
    if config.schedule == "constant":
        return None

    def cosine(init: float, decay_steps: int) -> Schedule:
        def value(count: int) -> float:
            count = min(count, decay_steps)
            return init * 0.5 * (1 + math.cos(math.pi * count / decay_steps))

        return value

    if config.schedule == "cosine":
        return cosine(peak, total)
    warmup = max(int(round(config.warmup_epochs * steps_per_epoch)), 0)
    decay = cosine(peak, max(total, warmup + 1) - warmup)

    def warmup_cosine(count: int) -> float:
        if count < warmup:
            return peak * count / warmup  # linear from 0
        return decay(count - warmup)

    return warmup_cosine


class OptaxRMSprop(torch.optim.Optimizer):
    """optax.rmsprop: nu = decay nu + (1 - decay) g^2; u = lr g / sqrt(nu + eps); t = momentum t + u; p -= t.

    As in optax the learning rate scales the update before the momentum trace, which
    matters when the rate follows a schedule.

    The state is created with the optimiser (nu = 0, the trace = 0), as optax's init does.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, decay: float = 0.9, eps: float = 1e-8,
                 momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps, momentum=momentum, weight_decay=weight_decay))
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["nu"] = torch.zeros_like(p)
                if group["momentum"] > 0:
                    state["trace"] = torch.zeros_like(p)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 -- torch.optim API
        for group, p, g in _grads_with_l2(self):
            state = self.state[p]
            nu = state["nu"]
            nu.mul_(group["decay"]).addcmul_(g, g, value=1 - group["decay"])
            update = g * torch.rsqrt(nu + group["eps"]) * group["lr"]
            if group["momentum"] > 0:
                update = state["trace"].mul_(group["momentum"]).add_(update)
            p.sub_(update)
        return None


class OptaxAdagrad(torch.optim.Optimizer):
    """optax.adagrad: s = 0.1 initially; s += g^2; p -= lr g / sqrt(s + eps), eps = 1e-7 inside the root."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, initial_accumulator_value: float = 0.1,
                 eps: float = 1e-7, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum_of_squares"] = torch.full_like(p, initial_accumulator_value)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 -- torch.optim API
        for group, p, g in _grads_with_l2(self):
            s = self.state[p]["sum_of_squares"]
            s.addcmul_(g, g)
            p.add_(g * torch.rsqrt(s + group["eps"]), alpha=-group["lr"])
        return None


def _grads_with_l2(optimizer: torch.optim.Optimizer):
    """(group, parameter, gradient + weight_decay * parameter) for every parameter that has a gradient."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            if group["weight_decay"]:
                g = g.add(p, alpha=group["weight_decay"])
            yield group, p, g


def make_optimizer(config: Config, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The torch optimiser for `config.optimizer`; weight decay is decoupled for adamw, L2 otherwise."""
    name, lr, wd, m = config.optimizer, config.lr, config.weight_decay, config.momentum
    # The for-each (multi-tensor) kernels: fewer dispatches per step than the per-tensor loop.
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, foreach=True)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=m, weight_decay=wd, foreach=True)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=m, nesterov=True, weight_decay=wd, foreach=True)
    if name == "adam":  # optax.adam: b1 0.9, b2 0.999, eps 1e-8 outside the root; torch's wd is L2
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, foreach=True)
    if name == "adamw":  # p -= lr * (adam + wd * p), as optax.adamw
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, foreach=True)
    if name == "rmsprop":
        return OptaxRMSprop(params, lr=lr, momentum=m, weight_decay=wd)
    if name == "adagrad":
        return OptaxAdagrad(params, lr=lr, weight_decay=wd)
    raise ValueError(f"optimizer {name!r} is not available in torch (supported: {', '.join(SUPPORTED)})")
