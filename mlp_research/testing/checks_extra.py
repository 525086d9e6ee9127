"""Kit cases that look closer: activation values over a wide range, gradients of every activation, the shape
of each init's distribution, optimiser paths the main cases leave out, state round trips leaf by leaf,
uneven chunks, evaluation sums, and the declarations and `describe()` a backend must honour.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlp_research.backends.base import DECLARATIONS, Sums, check_config
from mlp_research.errors import ConfigError
from mlp_research.optimizers import SUPPORTED
from mlp_research.spec import ACTIVATIONS, INITS, MODELS
from mlp_research.testing import reference, trees
from mlp_research.testing.checks_run import ALL_VALUES
from mlp_research.testing.checks_training import OPTIMIZER_SETTINGS, parity, poison_second_chunk
from mlp_research.testing.core import (
    Case,
    Kit,
    Outcome,
    expect,
    failed,
    passed,
    random_canonical,
    skipped,
    train_epochs,
)

VALUE_ATOL, VALUE_RTOL = 2e-6, 1e-6  # activation values in float32 against the float64 statement
# Parameters after two epochs. Steps linear in the gradient reach ~1e-7 in every backend: 1e-5 (the kit
# allows 1e-4). Rules that normalise the gradient turn float32 noise in tiny gradients into a visible
# fraction of a step (mxnet's adam: 6e-6 at lr 1e-3): the kit's 1e-4.
PARITY_TOL = {"sgd": 1e-5, "momentum": 1e-5, "nesterov": 1e-5}
NORMALISED_TOL = 1e-4
EXTRA_SETTINGS = dict(weight_decay=0.01, schedule="cosine", momentum=0.8)  # the paths the kit's settings leave out


def _activation_values(activation: str) -> Case:
    """act(x) for x over [-25, 25], both models, read off the logits of a network that passes x through."""

    def run(kit: Kit) -> Outcome:
        x = np.linspace(-25, 25, 2001, dtype=np.float32)
        images = np.zeros((len(x), 28, 28), np.float32)
        images[:, 0, 0] = x  # pixel 0 -> every hidden unit (W1 row 0 = 1) -> logit k = hidden unit k
        want = reference.ACTIVATIONS[activation][0](x.astype(np.float64))
        worst = 0.0
        for model in MODELS:
            config = kit.config(model=model, num_hiddens=(10,), activation=activation, synthetic_train_size=64)
            trainer = kit.trainer(config)
            params = {name: np.zeros(shape, np.float32) for name, shape in config.canonical_shapes().items()}
            params["W1"][0] = 1.0
            params["W2"] = np.eye(10, dtype=np.float32)
            trainer.set_params(params)
            logits = trainer.logits(images)
            if logits is None:
                return skipped("the trainer has no logits() (optional in the contract)")
            got = np.asarray(logits, np.float64)
            excess = (np.abs(got - want[:, None]) - VALUE_RTOL * np.abs(want[:, None])).max(axis=1)
            if excess.max() > VALUE_ATOL:
                n = int(excess.argmax())
                return failed(f"{model}: {activation}({x[n]:g}) gives {got[n].min():.7g}..{got[n].max():.7g}, "
                              f"the spec's {want[n]:.7g}")
            worst = max(worst, float(np.abs(got - want[:, None]).max()))
        return passed(f"max |diff| over [-25, 25] {worst:.1e}")

    return Case(f"activation values[{activation}]", run)


def _init_shape(model: str, init: str) -> Case:
    """W1's std to 1.5%, mean to 0.05 std and kurtosis to 5%; W1's and W2's largest |value| within 30% of the spec's."""

    def run(kit: Kit) -> Outcome:
        if init == "default" and model == "mlp":
            return skipped("the concise model's default is its framework's own initialiser (not specified)")
        if init == "zeros":
            return skipped("the kit checks that zeros are exact")
        config = kit.config(model=model, num_hiddens=(400, 64), init=init, sigma=0.05, seed=3)
        ours = kit.trainer(config).get_params()
        theirs = reference.init_params(config.spec, np.random.default_rng(0))
        w1, std = np.asarray(ours["W1"], np.float64), reference.init_statistics(config.spec)["W1"][1]
        if abs(w1.std() / std - 1) > 0.015 or abs(w1.mean()) > 0.05 * std:
            return failed(f"W1: std {w1.std():.5g} and mean {w1.mean():.2g}; the spec's std is {std:.5g}")
        kurtosis = [float(np.mean(w**4) / np.mean(w**2) ** 2) for w in (w1, theirs["W1"].astype(np.float64))]
        if abs(kurtosis[0] / kurtosis[1] - 1) > 0.05:
            return failed(f"W1's kurtosis is {kurtosis[0]:.3f}, the spec's {init} gives {kurtosis[1]:.3f} "
                          "(another distribution with the same std?)")
        for name in ("W1", "W2"):  # 313,600 and 25,600 values: the maximum of a draw is stable to a few %
            ratio = float(np.abs(ours[name]).max() / np.abs(theirs[name]).max())
            if abs(ratio - 1) > 0.3:
                return failed(f"{name}: largest |value| is {ratio:.2f}x that of a draw from the spec (truncation?)")
        return passed(f"W1 std ratio {w1.std() / std:.4f}, kurtosis {kurtosis[0]:.2f}")

    return Case(f"init shape[{model},{init}]", run)


def _round_trip_leaves(model: str) -> Case:
    """A mid-epoch state restored into a trainer that trained elsewhere: every leaf and every sum as the original's.

    The kit compares parameters only (of `mlp`), so a dropped step counter passes it unless the rate or
    the optimiser depends on the count; here the step counter is a leaf like any other.
    """

    def run(kit: Kit) -> Outcome:
        optimizer = next((name for name in ("adam", "momentum", "sgd") if not kit.supports(optimizer=name)), None)
        if optimizer is None:
            return skipped("the backend trains none of adam, momentum, sgd")
        config = kit.config(model=model, num_hiddens=(32,), optimizer=optimizer, lr=0.01, schedule="cosine",
                            steps_per_chunk=2)
        return _resume_everything(kit, config)

    return Case(f"state round trip, leaf by leaf[{model}]", run)


def _resume_everything(kit: Kit, config: Any) -> Outcome:
    """Straight, stopped after chunk 0, and resumed into a third trainer: compared leaf by leaf and sum by sum."""
    straight, stopped, resumed = (kit.trainer(config) for _ in range(3))
    want = train_epochs(straight, range(2))
    stopped.start_epoch(0)
    stopped.train_chunk(0)
    carried, state = stopped.epoch_sums(), trees.copy(stopped.state_dict())
    train_epochs(resumed, range(5, 6))  # another order and step count: every leaf differs from `state`'s
    if not trees.first_difference(resumed.state_dict(), state).startswith("its leaf"):
        return failed("a trainer that trained another epoch has the same state as the one to restore")
    resumed.load_state_dict(trees.copy(state))
    differs = trees.first_difference(resumed.state_dict(), state)
    if differs:
        return failed(f"right after load_state_dict, state_dict() differs from the state loaded in {differs}")
    resumed.start_epoch(0, Sums(carried.loss_sum, carried.correct, carried.count))
    for chunk in range(1, resumed.layout.chunks_per_epoch):
        resumed.train_chunk(chunk)
    got = [resumed.epoch_sums(), *train_epochs(resumed, range(1, 2))]
    differs = trees.first_difference(resumed.state_dict(), straight.state_dict())
    if differs:
        return failed(f"after resuming, state_dict() differs from an uninterrupted run's in {differs}: "
                      "load_state_dict must restore the step counter and the optimiser state")
    if [s.to_host() for s in got] != [s.to_host() for s in want]:
        return failed(f"resumed epoch sums {[s.to_host() for s in got]}, uninterrupted {[s.to_host() for s in want]}")
    return passed(f"{config.optimizer}: {len(trees.leaves(state))} leaves equal")


def _optimizer_settings(optimizer: str) -> Case:
    """Every optimiser with weight decay, a cosine schedule and momentum 0.8 (a hard-wired 0.9 passes the kit)."""

    def run(kit: Kit) -> Outcome:
        why = kit.supports(optimizer=optimizer)
        if why:
            return skipped(f"not supported: {why}")
        return parity(kit, PARITY_TOL.get(optimizer, NORMALISED_TOL), optimizer=optimizer,
                       lr=OPTIMIZER_SETTINGS[optimizer]["lr"], **EXTRA_SETTINGS)

    return Case(f"training[mlp,{optimizer},wd=0.01,cosine,momentum=0.8]", run)


def _gradient(activation: str) -> Case:
    """An epoch of sgd with each activation (the kit trains with tanh only): its derivative, in every backend."""
    return Case(f"training[mlp,sgd,{activation}]",
                lambda kit: parity(kit, PARITY_TOL["sgd"], epochs=1, activation=activation, widths=(48, 32),
                                    optimizer="sgd", lr=0.1))


def uneven_chunks(kit: Kit) -> Outcome:
    """Chunks of 3 steps over 4 (the last chunk padded, its one step the short batch) equal the spec's epochs."""
    return parity(kit, PARITY_TOL["sgd"], steps_per_chunk=3, optimizer="sgd", lr=0.1)


def nonfinite_sums(kit: Kit) -> Outcome:
    """The epoch in which a loss went NaN still counts every trained example, and its loss sum is not finite."""
    config = kit.config(model="mlp_scratch", num_hiddens=(32,), synthetic_train_size=640, steps_per_chunk=3)
    trainer = kit.trainer(config)
    poison_second_chunk(trainer)
    sums = trainer.epoch_sums()
    ok = int(sums.count) == 6 * config.batch_size and not math.isfinite(float(sums.loss_sum))
    return expect(ok, f"count {int(sums.count)}, loss sum {float(sums.loss_sum)}",
                  f"after 6 steps, one NaN: count {int(sums.count)} (want {6 * config.batch_size}), "
                  f"loss sum {float(sums.loss_sum)} (want NaN or inf)")


def evaluation_sums(kit: Kit) -> Outcome:
    """evaluate() and evaluate_eval_split() give the spec's sums, in batches that do not divide the split."""
    config = kit.config(model="mlp", num_hiddens=(48, 32), activation="gelu", eval_batch_size=48)
    trainer = kit.trainer(config)
    params = random_canonical(config, seed=4)
    trainer.set_params(params)
    split = kit.splits(config).eval
    want = reference.evaluate(config.spec, params, split.images, split.labels)
    for name, sums in (("evaluate", trainer.evaluate(split.images, split.labels)),
                       ("evaluate_eval_split", trainer.evaluate_eval_split())):
        diff = abs(float(sums.loss_sum) - want.loss_sum) / want.loss_sum
        if (int(sums.count), int(sums.correct)) != (want.count, want.correct) or diff > 1e-5:
            return failed(f"{name}(): count {int(sums.count)}, correct {int(sums.correct)}, loss "
                          f"{float(sums.loss_sum):.7g}; the spec's {want.count}, {want.correct}, {want.loss_sum:.7g}")
    return passed(f"{want.count} examples in batches of 48, loss rel diff {diff:.1e}")


def no_empty_subtrees(kit: Kit) -> Outcome:
    """sgd keeps no optimiser state, and the contract allows no empty sub-tree in its place (leave the key out)."""
    state = kit.trainer(kit.config(model="mlp", num_hiddens=(32,), optimizer="sgd")).state_dict()

    def empty(tree: Any, path: str) -> list[str]:
        if not isinstance(tree, dict):
            return []
        return [p for k, v in tree.items() for p in empty(v, f"{path}[{k!r}]")] if tree else [path or "the root"]

    found = empty(state, "")
    return expect(not found, f"{len(trees.leaves(state))} leaves",
                  f"state_dict() has empty sub-trees at {', '.join(found)}")


def declarations(kit: Kit) -> Outcome:
    """Every declared value is accepted (the kit only tries the undeclared ones); a refusal is one line."""
    for attribute, field in DECLARATIONS.items():
        declared = getattr(kit.backend, attribute)
        for value in ALL_VALUES[attribute]:
            try:
                check_config(kit.backend, kit.config(**{field: value}))
            except ConfigError as e:
                if value in declared:
                    return failed(f"{field}={value!r} is declared in {attribute} but refused: {e}")
                if "\n" in str(e):
                    return failed(f"the refusal of --{field}={value} spans several lines: {e!r}")
    return passed("declared values accepted")


def describe_keys(kit: Kit) -> Outcome:
    """describe() names at least what summary.json reports: parallel, num_devices, device, platform."""
    where = kit.trainer(kit.config()).describe()
    missing = [key for key in ("parallel", "num_devices", "device", "platform") if key not in where]
    return expect(not missing, f"platform {where.get('platform')!r}", f"describe() lacks {', '.join(missing)}")


CASES = (
    *(_activation_values(activation) for activation in ACTIVATIONS),
    *(_gradient(activation) for activation in ACTIVATIONS),
    *(_init_shape(model, init) for model in MODELS for init in INITS),
    *(_optimizer_settings(optimizer) for optimizer in SUPPORTED),
    *(_round_trip_leaves(model) for model in MODELS),
    Case("no empty sub-trees in state_dict()", no_empty_subtrees),
    Case("declared options are accepted", declarations),
    Case("uneven chunks", uneven_chunks),
    Case("non-finite sums", nonfinite_sums),
    Case("evaluation sums", evaluation_sums),
    Case("describe() keys", describe_keys),
)

