"""The optimisers of `mlp_research.optimizers` in torch.

torch.optim's SGD (plain, momentum, nesterov), Adam and AdamW compute exactly
optax's updates (trace-style momentum, bias-corrected Adam with eps outside the
square root, AdamW's decay scaled by the learning rate), so they are used as
they are. torch's RMSprop and Adagrad differ in the details (eps outside the
square root; Adagrad's accumulator starts at 0, optax's at 0.1), and LAMB is
not in torch.optim: for those `SharedRule` applies the project's one statement
of optax's rules (`mlp_research.optimizers.update`) to torch tensors.

The learning rate of each step comes from `mlp_research.schedules`; the
trainer sets it on every parameter group before each update.
"""

from __future__ import annotations

from typing import Iterable

import torch

from mlp_research.config import Config
from mlp_research.optimizers import STATE_SLOTS, ArrayOps, Hyper, update

TORCH_OPS = ArrayOps(sqrt=torch.sqrt, norm=torch.linalg.vector_norm,
                     where=lambda c, a, b: torch.where(c, a, torch.as_tensor(b, dtype=a.dtype)))


class SharedRule(torch.optim.Optimizer):
    """An optimiser that applies `mlp_research.optimizers.update`: one statement of optax's rule for all backends.

    The state is created with the optimiser (optax's initial values) and keeps
    optax's slot names, so checkpoints hold it in the shared form.
    """

    def __init__(self, params: Iterable[torch.Tensor], config: Config):
        super().__init__(params, dict(lr=config.lr))
        self.hyper = Hyper(config.optimizer, config.momentum, config.weight_decay)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["count"] = 0
                for slot, value in STATE_SLOTS[config.optimizer].items():
                    state[slot] = torch.full_like(p, value)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 -- torch.optim API
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                slots = {k: v for k, v in state.items() if k != "count"}
                delta, new_slots = update(self.hyper, p.grad, p, slots, state["count"], group["lr"], TORCH_OPS)
                p.add_(delta)
                for slot, value in new_slots.items():
                    state[slot].copy_(value)
                state["count"] += 1


def make_optimizer(config: Config, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The torch optimiser for `config.optimizer`; weight decay is decoupled for adamw, L2 otherwise."""
    name = config.optimizer
    # The for-each (multi-tensor) kernels: fewer dispatches per step than the per-tensor loop.
    common = dict(lr=config.lr, weight_decay=config.weight_decay, foreach=True)
    if name in ("sgd", "momentum", "nesterov"):
        momentum = 0.0 if name == "sgd" else config.momentum
        return torch.optim.SGD(params, momentum=momentum, nesterov=name == "nesterov", **common)
    if name in ("adam", "adamw"):  # optax.adam: b1 0.9, b2 0.999, eps 1e-8 outside the root; Adam's wd is L2,
        kind = torch.optim.Adam if name == "adam" else torch.optim.AdamW  # AdamW's p -= lr * (adam + wd * p)
        return kind(params, betas=(0.9, 0.999), eps=1e-8, **common)
    return SharedRule(params, config)  # rmsprop, adagrad, lamb
