"""Kit cases about training: epochs equal to the reference, state round trips, resumes, non-finite losses."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlp_research.backends.base import Sums
from mlp_research.config import Config
from mlp_research.optimizers import SUPPORTED
from mlp_research.testing import reference, trees
from mlp_research.testing.core import (
    Case,
    Kit,
    Outcome,
    expect,
    failed,
    max_diff,
    random_canonical,
    skipped,
    train_epochs,
)

# Each optimiser with the settings that exercise its whole rule: L2 or decoupled decay, a decaying schedule.
OPTIMIZER_SETTINGS = {
    "sgd": dict(lr=0.1),
    "momentum": dict(lr=0.05, weight_decay=1e-3, schedule="cosine"),
    "nesterov": dict(lr=0.05),
    "adam": dict(lr=1e-3, weight_decay=1e-3),
    "adamw": dict(lr=1e-3, weight_decay=0.1, schedule="warmup_cosine", warmup_epochs=0.5),
    "rmsprop": dict(lr=1e-3, momentum=0.5, schedule="warmup_cosine", warmup_epochs=0.5),
    "adagrad": dict(lr=0.05, weight_decay=1e-3),
    "lamb": dict(lr=1e-2, weight_decay=0.01, schedule="cosine"),
}


def train_with_reference(kit: Kit, config: Config, epochs: int) -> tuple[Any, list[Any], list[Sums], dict]:
    """The same epochs from the same random parameters in the backend and in `reference.train_epoch`:
    (the trainer, its epoch sums, the reference's, the reference's parameters at the end)."""
    trainer = kit.trainer(config)
    params = random_canonical(config, seed=1)
    trainer.set_params(params)
    train = kit.splits(config).train
    got, want, slots = train_epochs(trainer, range(epochs)), [], None
    for epoch in range(epochs):
        params, slots, sums = reference.train_epoch(config, params, slots, train.images, train.labels, epoch,
                                                    epoch * trainer.layout.steps_per_epoch)
        want.append(sums)
    return trainer, got, want, params


def parity(kit: Kit, tolerance: float, loss_rtol: float = 1e-5, epochs: int = 2, model: str = "mlp",
           activation: str = "tanh", widths: tuple[int, ...] = (32,), **settings: Any) -> Outcome:
    """Epochs against the reference: sums per epoch, parameters at the end. tanh by default, not relu: a
    rounding-level flip of a relu at 0 would become a whole step's difference."""
    config = kit.config(model=model, num_hiddens=widths, activation=activation, **settings)
    trainer, got, want, params = train_with_reference(kit, config, epochs)
    for epoch, (sums, ref) in enumerate(zip(got, want)):
        if (int(sums.count), int(sums.correct)) != (ref.count, ref.correct):
            return failed(f"epoch {epoch + 1}: count/correct {int(sums.count)}/{int(sums.correct)}, the spec's "
                          f"{ref.count}/{ref.correct} (data order, batch rule or loss before the update?)")
        if int(sums.first_nonfinite_step) != -1:
            return failed(f"epoch {epoch + 1}: first_nonfinite_step {int(sums.first_nonfinite_step)} (want -1)")
        if abs(float(sums.loss_sum) - ref.loss_sum) > loss_rtol * abs(ref.loss_sum):
            return failed(f"epoch {epoch + 1}: loss sum {float(sums.loss_sum):.7g}, the spec's {ref.loss_sum:.7g}")
    diff = max_diff(trainer.get_params(), params)
    return expect(diff < tolerance, f"max |param diff| after {epochs} epoch(s) {diff:.1e}",
                  f"{activation}, {config.optimizer}: parameters after {epochs} epoch(s) differ from the spec by "
                  f"{diff:.3g} (allowed {tolerance:g}: the update rule or its learning rate?)")


def _training_case(model: str, optimizer: str) -> Case:
    def run(kit: Kit) -> Outcome:
        settings = OPTIMIZER_SETTINGS[optimizer]
        why = kit.supports(optimizer=optimizer, **settings)
        if why:
            return skipped(f"not supported: {why}")
        return parity(kit, 1e-4, loss_rtol=1e-4, model=model, optimizer=optimizer, **settings)

    return Case(f"training[{model},{optimizer}]", run)


def state_round_trip(kit: Kit) -> Outcome:
    """abstract_state_dict matches state_dict; a restored state continues bit for bit (step and optimiser too)."""
    optimizer = "adam" if not kit.supports(optimizer="adam") else "momentum" if not kit.supports(
        optimizer="momentum") else "sgd"
    # A decaying schedule, so a step counter the load drops shows as another learning rate.
    config = kit.config(model="mlp", num_hiddens=(32,), optimizer=optimizer, lr=0.01, schedule="cosine")
    first = kit.trainer(config)
    abstract = first.abstract_state_dict()
    train_epochs(first, range(1))
    state = first.state_dict()
    if trees.structure(state) != trees.structure(abstract):
        return failed("state_dict() and abstract_state_dict() differ in structure, shapes or dtypes")
    second = kit.trainer(config)
    second.set_params(random_canonical(config, seed=9))  # other parameters: the load must replace everything
    second.load_state_dict(trees.copy(state))
    one, two = train_epochs(first, range(1, 2))[0], train_epochs(second, range(1, 2))[0]
    diff = max_diff(first.get_params(), second.get_params())
    ok = diff == 0 and (float(one.loss_sum), int(one.correct)) == (float(two.loss_sum), int(two.correct))
    return expect(ok, f"{optimizer}: max |diff| after one more epoch {diff:.1e}",
                  f"a restored state ({optimizer}) continues differently (diff {diff:.3g}): load_state_dict must "
                  "restore the parameters, the optimiser state and the step counter")


def mid_epoch_resume(kit: Kit) -> Outcome:
    """Stopping after a chunk and resuming (state + carried sums) equals a straight epoch."""
    config = kit.config(model="mlp", num_hiddens=(32,), optimizer="sgd", steps_per_chunk=2)
    straight = kit.trainer(config)
    want = train_epochs(straight, range(1))[0]
    stopped = kit.trainer(config)
    stopped.start_epoch(0)
    stopped.train_chunk(0)
    carried, state = stopped.epoch_sums(), trees.copy(stopped.state_dict())
    resumed = kit.trainer(config)
    resumed.load_state_dict(state)
    resumed.start_epoch(0, Sums(carried.loss_sum, carried.correct, carried.count))
    for chunk in range(1, resumed.layout.chunks_per_epoch):
        resumed.train_chunk(chunk)
    got = resumed.epoch_sums()
    diff = max_diff(resumed.get_params(), straight.get_params())
    ok = diff == 0 and (int(got.count), int(got.correct)) == (int(want.count), int(want.correct)) and \
        abs(float(got.loss_sum) - float(want.loss_sum)) <= 1e-6 * abs(float(want.loss_sum))
    return expect(ok, f"max |param diff| {diff:.1e}, count {int(got.count)}",
                  f"resumed epoch: count {int(got.count)}, correct {int(got.correct)}, diff {diff:.3g}; straight: "
                  f"{int(want.count)}, {int(want.correct)} (carried sums or the order within the epoch?)")


def poison(trainer: Any) -> None:
    """Set one weight to NaN: the next step's loss is NaN."""
    broken = {name: np.array(value, copy=True) for name, value in trainer.get_params().items()}
    broken["W2"][0, 0] = np.nan
    trainer.set_params(broken)


def poison_second_chunk(trainer: Any) -> None:
    """Epoch 1: train its first chunk, set one weight to NaN, train the second (its first step's loss is NaN)."""
    trainer.start_epoch(1)
    trainer.train_chunk(0)
    poison(trainer)
    trainer.train_chunk(1)


def nonfinite_step(kit: Kit) -> Outcome:
    """A NaN loss is reported as the run-wide index of its update, afresh in every epoch (it is an epoch's sum)."""
    config = kit.config(model="mlp_scratch", num_hiddens=(32,), synthetic_train_size=640, steps_per_chunk=3)
    trainer = kit.trainer(config)
    first = train_epochs(trainer, range(1))[0]
    if int(first.first_nonfinite_step) != -1:
        return failed(f"a finite epoch reports first_nonfinite_step {int(first.first_nonfinite_step)} (want -1)")
    poison_second_chunk(trainer)
    want = trainer.layout.steps_per_epoch + trainer.layout.steps_per_chunk
    got = int(trainer.epoch_sums().first_nonfinite_step)
    if got != want:
        return failed(f"first_nonfinite_step {got}, want {want} (0-based, counted from the start of the run)")
    for chunk in range(2, trainer.layout.chunks_per_epoch):
        trainer.train_chunk(chunk)
    nan_from_start = int(train_epochs(trainer, range(2, 3))[0].first_nonfinite_step)  # the parameters are NaN now
    fresh = 2 * trainer.layout.steps_per_epoch
    return expect(nan_from_start == fresh, f"first_nonfinite_step {got}, then {nan_from_start} in the next epoch",
                  f"the epoch after the one that reported {got} reports {nan_from_start}, want {fresh}: "
                  "first_nonfinite_step is part of an epoch's sums, so start_epoch without sums starts it at -1")


def nonfinite_step_counts_updates(kit: Kit) -> Outcome:
    """After a resume on a training set of another size, first_nonfinite_step is still the count of updates made."""
    before = kit.config(model="mlp_scratch", num_hiddens=(32,), synthetic_train_size=640, steps_per_chunk=3)
    trainer = kit.trainer(before)
    train_epochs(trainer, range(2))
    state, updates = trees.copy(trainer.state_dict()), 2 * trainer.layout.steps_per_epoch
    resumed = kit.trainer(before.replace(synthetic_train_size=512))  # 8 steps an epoch instead of 10
    resumed.load_state_dict(state)
    poison(resumed)
    got = int(train_epochs(resumed, range(2, 3))[0].first_nonfinite_step)
    by_epoch = " = epoch * steps_per_epoch" if got == 2 * resumed.layout.steps_per_epoch else ""
    return expect(got == updates, f"first_nonfinite_step {got} after {updates} updates",
                  f"the first step after {updates} updates, in epoch 2 of a training set of "
                  f"{resumed.layout.steps_per_epoch} steps, reports first_nonfinite_step {got}{by_epoch}: it is the "
                  "trainer's step counter, which continues across a resume on a training set of another size")


CASES = (
    *(_training_case(model, "sgd") for model in ("mlp_scratch", "mlp")),
    *(_training_case("mlp", optimizer) for optimizer in SUPPORTED if optimizer != "sgd"),
    Case("state_dict round trip", state_round_trip),
    Case("mid-epoch resume", mid_epoch_resume),
    Case("non-finite loss step", nonfinite_step),
    Case("non-finite loss step counts updates", nonfinite_step_counts_updates),
)
