"""optax optimisers and learning-rate schedules, chosen by name."""

from __future__ import annotations

from typing import Any

import optax

from mlp_research.config import Config


def make_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule | float:
    total = config.max_epochs * steps_per_epoch
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.lr, decay_steps=total)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    return optax.warmup_cosine_decay_schedule(
        0.0, config.lr, warmup_steps=max(warmup, 0), decay_steps=max(total, warmup + 1)
    )


def make_optimizer(config: Config, steps_per_epoch: int, lr: Any = None) -> optax.GradientTransformation:
    """The optax transformation for `config.optimizer` at `config.lr`.

    `lr` replaces `config.lr` as the peak rate and may be a traced value, so
    `optax.inject_hyperparams(lambda learning_rate: make_optimizer(c, n, learning_rate))`
    gives vmapped sweeps one optimiser whose members differ in learning rate.
    Note: `max_epochs` sets the length of decaying schedules, so raising it on a
    resumed run changes the schedule of a cosine run (not of a constant one).
    """
    if lr is None:
        lr = make_schedule(config, steps_per_epoch)
    elif config.schedule != "constant":
        shape, peak = make_schedule(config.replace(lr=1.0), steps_per_epoch), lr
        lr = lambda count: peak * shape(count)  # noqa: E731
    name, wd = config.optimizer, config.weight_decay
    if name == "adamw":
        return optax.adamw(lr, weight_decay=wd)
    if name == "lamb":
        return optax.lamb(lr, weight_decay=wd)
    base = {
        "sgd": lambda: optax.sgd(lr),
        "momentum": lambda: optax.sgd(lr, momentum=config.momentum),
        "nesterov": lambda: optax.sgd(lr, momentum=config.momentum, nesterov=True),
        "adam": lambda: optax.adam(lr),
        "rmsprop": lambda: optax.rmsprop(lr, momentum=config.momentum),
        "adagrad": lambda: optax.adagrad(lr),
    }[name]()
    # For the others weight decay is the classic L2 term added to the gradient.
    return optax.chain(optax.add_decayed_weights(wd), base) if wd > 0 else base
