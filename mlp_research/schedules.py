"""The learning rate of every optimiser step, framework-free: one definition for every backend.

optax's formulas (`cosine_decay_schedule`, and `warmup_cosine_decay_schedule`
with `init_value=0`, `end_value=0`), written once with numpy. A plugin calls
`learning_rate(config, steps_per_epoch, count)` before each update; the JAX
backend and graph frameworks take `rate_table(...)`, the same values for every
step of the run, and index it on the device. `count` is the number of updates
already made (0 for the first step), as optax's own counter. The rates are
computed in float64 and used in float32.
"""

from __future__ import annotations

import numpy as np

from mlp_research.config import Config


def warmup_steps(config: Config, steps_per_epoch: int) -> int:
    """Length of the linear warm-up of `warmup_cosine`, in steps (0 for the other schedules)."""
    if config.schedule != "warmup_cosine":
        return 0
    return max(int(round(config.warmup_epochs * steps_per_epoch)), 0)


def total_steps(config: Config, steps_per_epoch: int) -> int:
    """The steps a decaying schedule spans: `max_epochs` epochs (raising --max_epochs on resume stretches it)."""
    return config.max_epochs * steps_per_epoch


def _cosine(count: np.ndarray, decay_steps: int) -> np.ndarray:
    count = np.clip(count, 0, decay_steps)
    return 0.5 * (1.0 + np.cos(np.pi * count / decay_steps))


def learning_rate(config: Config, steps_per_epoch: int, count, peak: float | None = None):
    """The rate of update `count` (an int, or an array of them); `peak` replaces `config.lr`.

    constant: `peak`. cosine: `peak * (1 + cos(pi * min(count, T) / T)) / 2` with
    T = `total_steps`. warmup_cosine: `peak * count / W` for count < W (W =
    `warmup_steps`), then the cosine over the remaining `max(T, W + 1) - W` steps.
    """
    peak = config.lr if peak is None else peak
    scalar = np.ndim(count) == 0
    count = np.asarray(count, np.float64)
    if config.schedule == "constant":
        factor = np.ones_like(count)
    elif config.schedule == "cosine":
        factor = _cosine(count, total_steps(config, steps_per_epoch))
    else:
        warmup = warmup_steps(config, steps_per_epoch)
        decay = max(total_steps(config, steps_per_epoch), warmup + 1) - warmup
        ramp = count / warmup if warmup else np.zeros_like(count)
        factor = np.where(count < warmup, ramp, _cosine(count - warmup, decay))
    rate = peak * factor
    return float(rate) if scalar else rate


def rate_table(config: Config, steps_per_epoch: int, peak: float = 1.0) -> np.ndarray:
    """`learning_rate` of steps 0..T (T = `total_steps`) as float32; index it with min(count, T)."""
    steps = total_steps(config, steps_per_epoch)
    return np.asarray(learning_rate(config, steps_per_epoch, np.arange(steps + 1), peak=peak), np.float32)
