"""The example backend with one small, deliberate bug each: the kit must fail every one, saying what is wrong.

Each variant is the kind of slip a backend author makes while reading the
specification: a constant copied from another framework, a data loader that
does not shuffle the shared way, a restore that forgets part of the state, a
setting read nowhere, a group whose members get mixed up.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mlp_research.backends.base import Sums
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.testing.example_backend import NumpyBackend, NumpyGroupTrainer, NumpyTrainer


class LeakySlopeTrainer(NumpyTrainer):
    """leaky_relu with slope 0.02 (the specification's is 0.01)."""

    LEAKY_SLOPE = 0.02


class SequentialOrderTrainer(NumpyTrainer):
    """Batches in the stored order of the training set, ignoring `batching.epoch_order`."""

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.arange(self.layout.order_length, dtype=np.int32) % self.layout.num_train


class DropsOptimizerStateTrainer(NumpyTrainer):
    """load_state_dict restores parameters and step counter but keeps this trainer's own momentum trace."""

    def load_state_dict(self, state: Any) -> None:
        trace = self.trace
        super().load_state_dict(state)
        self.trace = trace


class DropsStepCounterTrainer(NumpyTrainer):
    """load_state_dict restores parameters and momentum trace but keeps this trainer's own step counter."""

    def load_state_dict(self, state: Any) -> None:
        step = self.step
        super().load_state_dict(state)
        self.step = step


class SeedlessInitTrainer(NumpyTrainer):
    """The initialisation draws from a fixed stream whatever --seed says (the data order still follows it)."""

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(0)


class StickyDivergenceTrainer(NumpyTrainer):
    """start_epoch keeps the first non-finite step of an earlier epoch instead of starting the epoch at -1."""

    def start_epoch(self, epoch: int, sums: Sums | None = None) -> None:
        earlier = getattr(self, "first_nonfinite", -1)
        super().start_epoch(epoch, sums)
        if sums is None and earlier >= 0:
            self.first_nonfinite = earlier


class EpochStepDivergenceTrainer(NumpyTrainer):
    """first_nonfinite_step computed as epoch * steps_per_epoch + step in the epoch, not from the step counter."""

    def start_epoch(self, epoch: int, sums: Sums | None = None) -> None:
        super().start_epoch(epoch, sums)
        self.epoch_start = (epoch * self.layout.steps_per_epoch, self.step)

    def epoch_sums(self) -> Sums:
        sums = super().epoch_sums()
        if sums.first_nonfinite_step < 0:
            return sums
        by_epoch, counter = self.epoch_start
        return Sums(sums.loss_sum, sums.correct, sums.count, by_epoch + sums.first_nonfinite_step - counter)


def ignoring(field: str, value: Any) -> type[NumpyTrainer]:
    """A trainer with `field` hard-wired to `value` wherever it reads the config (the flag has no effect)."""

    class Ignoring(NumpyTrainer):
        def __init__(self, config: Config, splits: Splits):
            super().__init__(config.replace(**{field: value}), splits)

    Ignoring.__name__ = Ignoring.__qualname__ = f"Ignoring_{field}"
    return Ignoring


class FirstConfigGroup(NumpyGroupTrainer):
    """Every member trains with the first member's config (per-member lr, seed, init, ... ignored)."""

    def __init__(self, configs: Sequence[Config], splits: Splits, trainer_class: type[NumpyTrainer]):
        super().__init__([configs[0]] * len(configs), splits, trainer_class)


class NeighbourSumsGroup(NumpyGroupTrainer):
    """start_epoch gives member k the carried sums of member k + 1 (an off-by-one over the stacked sums)."""

    def start_epoch(self, epoch: int, sums: Sequence[Sums] | None = None) -> None:
        super().start_epoch(epoch, [*sums[1:], sums[0]] if sums else None)


class SharedDivergenceGroup(NumpyGroupTrainer):
    """epoch_sums reports the group's first non-finite step for every member (a reduction over the members)."""

    def epoch_sums(self) -> list[Sums]:
        sums = super().epoch_sums()
        bad = [s.first_nonfinite_step for s in sums if s.first_nonfinite_step >= 0]
        first = min(bad) if bad else -1
        return [Sums(s.loss_sum, s.correct, s.count, first) for s in sums]


class FirstStateGroup(NumpyGroupTrainer):
    """load_state_dicts gives every member the first member's state (a broadcast instead of a split)."""

    def load_state_dicts(self, states: Sequence[Any]) -> None:
        super().load_state_dicts([states[0]] * len(states))


def backend_for(trainer_class: type[NumpyTrainer] = NumpyTrainer,
                group_class: type[NumpyGroupTrainer] = NumpyGroupTrainer) -> NumpyBackend:
    """An example backend object whose runs use `trainer_class` and whose groups use `group_class`."""
    backend = NumpyBackend()
    backend.trainer_class = trainer_class
    backend.group_class = group_class
    return backend


VARIANTS = {
    "leaky_relu slope 0.02": LeakySlopeTrainer,
    "sequential batches": SequentialOrderTrainer,
    "load_state_dict drops the optimiser state": DropsOptimizerStateTrainer,
    "load_state_dict drops the step counter": DropsStepCounterTrainer,
    "the initialisation ignores the seed": SeedlessInitTrainer,
    "first_nonfinite_step kept across epochs": StickyDivergenceTrainer,
    "first_nonfinite_step from the epoch, not the step counter": EpochStepDivergenceTrainer,
}
GROUP_VARIANTS = {
    "members train the first member's config": FirstConfigGroup,
    "member k reads member k + 1's carried sums": NeighbourSumsGroup,
    "the group's first non-finite step for every member": SharedDivergenceGroup,
    "load_state_dicts gives every member the first member's state": FirstStateGroup,
}
