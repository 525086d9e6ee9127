"""The loop drives every trainer through the group calls; a single run's `Trainer` is adapted here as a group of one.

Backends that train vmapped groups return a `GroupTrainer` themselves; every
other trainer (and every backend written against the first protocol) is wrapped
here, so one loop drives both without asking which it has.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mlp_research.backends.base import Sums, Trainer


class OneMember:
    """A `Trainer` with the `GroupTrainer` calls: every value a list of one (the rest is the trainer's own)."""

    members = 1

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    @property
    def compile_seconds(self) -> float:
        return float(self.trainer.compile_seconds)

    def __getattr__(self, name: str) -> Any:  # layout, describe, compile, train_chunk, abstract_state_dict
        return getattr(self.trainer, name)

    def start_epoch(self, epoch: int, sums: Sequence[Sums] | None = None) -> None:
        self.trainer.start_epoch(epoch, sums[0] if sums else None)

    def epoch_sums(self) -> list[Sums]:
        return [self.trainer.epoch_sums()]

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> list[Sums]:
        return [self.trainer.evaluate(images, labels)]

    def evaluate_eval_split(self) -> list[Sums]:
        return [self.trainer.evaluate_eval_split()]

    def state_dicts(self) -> list[Any]:
        return [self.trainer.state_dict()]

    def load_state_dicts(self, states: Sequence[Any]) -> None:
        self.trainer.load_state_dict(states[0])

    def get_params(self) -> list[dict[str, np.ndarray]]:
        return [self.trainer.get_params()]

