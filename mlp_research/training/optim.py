"""optax optimisers and learning-rate schedules, chosen by name."""

from __future__ import annotations

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


def make_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """The optax transformation for `config.optimizer` at `config.lr`.

    Note: `max_epochs` sets the length of decaying schedules, so raising it on a
    resumed run changes the schedule of a cosine run (not of a constant one).
    """
    lr = make_schedule(config, steps_per_epoch)
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
