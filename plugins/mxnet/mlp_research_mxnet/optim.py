"""The optimisers of `mlp_research.optimizers`, applied in place to mxnet arrays.

Hand-written rather than `gluon.Trainer`, so both models share one update with
optax's exact semantics: gradients are already means over a batch's examples
(a short last batch included, where `Trainer.step(batch_size)` would rescale by
the wrong size). Every rule is the project's one statement of optax's updates,
`mlp_research.optimizers.update`, run on mxnet arrays; the learning rate of each
step comes from `mlp_research.schedules`.
"""

from __future__ import annotations

from typing import Any

from mlp_research import schedules
from mlp_research.config import Config
from mlp_research.optimizers import STATE_SLOTS, ArrayOps, Hyper, update


def array_ops(np_mod: Any) -> ArrayOps:
    """The three array functions the shared rules need, from mxnet's numpy module."""
    return ArrayOps(sqrt=np_mod.sqrt, norm=lambda x: np_mod.sqrt(np_mod.sum(x * x)), where=np_mod.where)


class Optimizer:
    """Updates parameters in place from their gradients; state is a dict of slot -> name -> array."""

    def __init__(self, config: Config, steps_per_epoch: int):
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.hyper = Hyper(config.optimizer, config.momentum, config.weight_decay)

    def init_state(self, params: dict[str, Any], np_mod: Any) -> dict[str, dict[str, Any]]:
        """Fresh optimiser state for `params` (mxnet arrays), as optax's `init`."""
        return {slot: {k: np_mod.full(p.shape, value, dtype=p.dtype) for k, p in params.items()}
                for slot, value in STATE_SLOTS[self.hyper.name].items()}

    def update(self, step: int, params: dict[str, Any], grads: dict[str, Any], state: dict[str, dict[str, Any]],
               np_mod: Any) -> None:
        """One optax step at global step `step` (0-based), in place on params and state."""
        lr = schedules.learning_rate(self.config, self.steps_per_epoch, step)
        ops = array_ops(np_mod)
        for k, p in params.items():
            slots = {slot: arrays[k] for slot, arrays in state.items()}
            delta, new_slots = update(self.hyper, grads[k], p, slots, step, lr, ops)
            for slot, value in new_slots.items():
                state[slot][k][:] = value
            p += delta
