"""optax optimisers by name, with the learning rate of `mlp_research.schedules`.

The schedule is the framework-free one every backend uses: a constant rate is
handed to optax as a number; a decaying one as a table of the rate of every
step (`schedules.rate_table`), indexed by optax's update count on the device.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from mlp_research import schedules
from mlp_research.config import Config


def learning_rate(config: Config, steps_per_epoch: int, peak: Any = None) -> Any:
    """The rate optax gets: `peak` (default `config.lr`) itself, or `count -> peak * factor(count)`.

    The factor table is the shared schedule's (`schedules.rate_table` at peak 1), and the
    product is taken on the device in float32 whether `peak` is a number (a single run) or a
    traced per-member value (a vmapped group), so both compute bit-identical rates.
    """
    peak = config.lr if peak is None else peak
    if config.schedule == "constant":
        return peak
    table = jnp.asarray(schedules.rate_table(config, steps_per_epoch, peak=1.0))
    return lambda count: peak * table[jnp.minimum(count, table.shape[0] - 1)]


def make_optimizer(config: Config, steps_per_epoch: int, lr: Any = None, momentum: Any = None
                   ) -> optax.GradientTransformation:
    """The optax transformation for `config.optimizer`; `lr` and `momentum` may be traced per-member values.

    Note: `max_epochs` sets the length of decaying schedules, so raising it on a
    resumed run changes the schedule of a cosine run (not of a constant one).
    """
    rate = learning_rate(config, steps_per_epoch, lr)
    mom = config.momentum if momentum is None else momentum
    name, wd = config.optimizer, config.weight_decay
    if name == "adamw":
        return optax.adamw(rate, weight_decay=wd)
    if name == "lamb":
        return optax.lamb(rate, weight_decay=wd)
    base = {
        "sgd": lambda: optax.sgd(rate),
        "momentum": lambda: optax.sgd(rate, momentum=mom),
        "nesterov": lambda: optax.sgd(rate, momentum=mom, nesterov=True),
        "adam": lambda: optax.adam(rate),
        "rmsprop": lambda: optax.rmsprop(rate, momentum=mom),
        "adagrad": lambda: optax.adagrad(rate),
    }[name]()
    # For the others weight decay is the classic L2 term added to the gradient.
    return optax.chain(optax.add_decayed_weights(wd), base) if wd > 0 else base


def injected_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """`make_optimizer` with the peak rate and momentum held in the optimiser state, so vmapped members differ.

    Its state is `InjectStatefulHyperparamsState(count, hyperparams, ..., inner_state)`,
    where `inner_state` has exactly the structure of `make_optimizer(config, ...)`'s state.
    """
    factory = optax.inject_hyperparams(
        lambda learning_rate, momentum: make_optimizer(config, steps_per_epoch, learning_rate, momentum))
    return factory(learning_rate=float(config.lr), momentum=float(config.momentum))  # floats: held in the state
