"""Kit cases for `--vmap` groups (base.py's `GroupTrainer`), run for any backend that has `group_trainer`.

A group trains configurations that differ only in the per-member fields
(`run.members.VMAP_FIELDS`) and must give each member exactly what a single
run of its config gives: the same sums, evaluations and parameters, its own
carried sums and divergence, and a state that is an ordinary single-run state.
By default (`vmap_batched` off) a member is bit-identical to its single run;
with `vmap_batched` a backend may batch the members' arithmetic, equal to float
rounding.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import numpy as np

from mlp_research.backends.base import Sums
from mlp_research.config import Config
from mlp_research.run import driver, members
from mlp_research.run.members import VMAP_FIELDS
from mlp_research.testing import trees
from mlp_research.testing.core import (
    Case,
    Kit,
    Outcome,
    expect,
    failed,
    max_diff,
    metrics_rows,
    passed,
    skipped,
    train_epochs,
)

# Three members: every per-member field takes another value in some member. The scratch model's default
# initialisation is N(0, sigma), so sigma counts; momentum counts when the optimiser has one.
MEMBER_VALUES: dict[str, tuple[Any, ...]] = {
    "lr": (0.1, 0.05, 0.1), "seed": (0, 1, 2), "init": ("default", "default", "he"),
    "sigma": (0.01, 0.05, 0.01), "momentum": (0.9, 0.5, 0.9),
}
BATCHED_RTOL = 1e-5  # vmap_batched: sums and parameters to float rounding (training amplifies it a little)
CARRIED_OFFSET = Sums(50.0, 100, 1000)  # member k carries (k + 1) times this: no two members carry the same
RESTORE = "load_state_dicts must restore each member's parameters, optimiser state and step counter from its own state"


def member_configs(kit: Kit, **settings: Any) -> list[Config]:
    """The group's member configs: `MEMBER_VALUES` over a small scratch-model run."""
    optimizer = "momentum" if not kit.supports(optimizer="momentum") else "sgd"  # so the member momenta count
    base = dict(model="mlp_scratch", num_hiddens=(32,), activation="tanh", optimizer=optimizer, steps_per_chunk=2,
                schedule="cosine")
    base.update(settings)
    count = len(next(iter(MEMBER_VALUES.values())))
    return [kit.config(**base, **{field: MEMBER_VALUES[field][k] for field in VMAP_FIELDS}) for k in range(count)]


def _group_case(name: str, check: Callable[[Kit], Outcome]) -> Case:
    """A `group[...]` case, skipped for a backend without `group_trainer`."""

    def run(kit: Kit) -> Outcome:
        if not kit.backend.trains_groups:
            return skipped("the backend has no group_trainer (--vmap is refused)")
        return check(kit)

    return Case(f"group[{name}]", run)


def _sums_differ(got: Sums, want: Sums, rtol: float) -> bool:
    got, want = got.to_host(), want.to_host()
    exact = (got.count, got.correct, got.first_nonfinite_step) == (want.count, want.correct, want.first_nonfinite_step)
    return not exact or not math.isclose(got.loss_sum, want.loss_sum, rel_tol=rtol)


def _compare_members(group: Any, singles: Sequence[Any], rtol: float) -> str:
    """'' if every member of `group` equals its single run (parameters, state, evaluation), else what differs."""
    params, states, evals = group.get_params(), group.state_dicts(), group.evaluate_eval_split()
    for k, single in enumerate(singles):
        want = single.get_params()
        worst, scale = max_diff(params[k], want), max(float(np.abs(w).max()) for w in want.values())
        if worst > rtol * scale:
            return f"member {k}: its parameters differ from its single run's by {worst:.3g}"
        differs = trees.first_difference(states[k], single.state_dict())
        if rtol == 0 and differs:
            return f"member {k}: its state_dicts() entry differs from its single run's state_dict() in {differs}"
        if _sums_differ(evals[k], single.evaluate_eval_split(), rtol):
            return f"member {k}: evaluate_eval_split() gives {evals[k].to_host()}, its single run " \
                   f"{single.evaluate_eval_split().to_host()}"
    return ""


def members_equal_single_runs(kit: Kit, batched: bool) -> Outcome:
    """Each member, trained in the group for two epochs of uneven chunks, against a single run of its config."""
    rtol = BATCHED_RTOL if batched else 0.0
    configs = member_configs(kit, vmap_batched=batched)
    group, singles = kit.group_trainer(configs), [kit.trainer(c) for c in configs]
    for k, single in enumerate(singles):
        if trees.first_difference(group.get_params()[k], single.get_params()):
            return failed(f"member {k} ({_label(configs[k])}) starts from other parameters than its single "
                          "run: each member initialises from its own seed, init and sigma")
    for epoch in range(2):
        got = train_epochs(group, range(epoch, epoch + 1))[0]
        for k, single in enumerate(singles):
            want = train_epochs(single, range(epoch, epoch + 1))[0]
            if _sums_differ(got[k], want, rtol):
                return failed(f"epoch {epoch + 1}, member {k} ({_label(configs[k])}): sums {got[k].to_host()}, "
                              f"its single run {want.to_host()} (does the member use its own lr, seed and "
                              "momentum?)")
    differs = _compare_members(group, singles, rtol)
    if differs:
        return failed(f"after 2 epochs, {differs} (members: {'; '.join(map(_label, configs))})")
    return passed(f"{len(configs)} members {'to float rounding' if batched else 'bit for bit'}")


def _label(config: Config) -> str:
    flat = config.as_dict()
    return ",".join(f"{field}={flat[field]}" for field in VMAP_FIELDS)


def carried_sums(kit: Kit) -> Outcome:
    """Member k adds to sums[k], the sums carried into an epoch (as after a mid-epoch resume): distinct per member."""
    configs = member_configs(kit)
    plain, carrying = kit.group_trainer(configs), kit.group_trainer(configs)
    whole = train_epochs(plain, range(1))[0]
    carried = [_plus(Sums(0.0, 0, 0), CARRIED_OFFSET, k + 1) for k in range(len(configs))]
    carrying.start_epoch(0, carried)
    for chunk in range(carrying.layout.chunks_per_epoch):
        carrying.train_chunk(chunk)
    for k, got in enumerate(carrying.epoch_sums()):
        want, have = _plus(whole[k], CARRIED_OFFSET, k + 1), got.to_host()
        if (have.count, have.correct) != (want.count, want.correct) or not math.isclose(
                have.loss_sum, want.loss_sum, rel_tol=1e-6):
            return failed(f"member {k} carried count {carried[k].count}, correct {carried[k].correct} and ends the "
                          f"epoch at {have.count}, {have.correct} (loss {have.loss_sum:.6g}); its own carried sums "
                          f"give {want.count}, {want.correct} ({want.loss_sum:.6g}): member k must add to sums[k]")
    return passed(f"{len(configs)} members, each from its own carried sums")


def _plus(sums: Sums, offset: Sums, times: int) -> Sums:
    host = sums.to_host()
    return Sums(host.loss_sum + times * offset.loss_sum, host.correct + times * offset.correct,
                host.count + times * offset.count, host.first_nonfinite_step)


def diverging_member(kit: Kit) -> Outcome:
    """One member's loss is non-finite from its first step (sigma 1e30): only that member reports it, at step 0."""
    base = kit.config(model="mlp_scratch", num_hiddens=(32,), activation="relu", steps_per_chunk=2)
    configs = [base, base.replace(sigma=1e30, seed=1), base.replace(seed=2)]
    got = train_epochs(kit.group_trainer(configs), range(1))[0]
    steps = [int(s.first_nonfinite_step) for s in got]
    finite = [math.isfinite(float(s.loss_sum)) for s in got]
    ok = steps == [-1, 0, -1] and finite == [True, False, True]
    return expect(ok, f"first_nonfinite_step per member {steps}",
                  f"members report first_nonfinite_step {steps} and finite loss sums {finite}; only member 1 "
                  "(sigma 1e30) diverges, at step 0: want [-1, 0, -1] and [True, False, True]")


def state_round_trip(kit: Kit) -> Outcome:
    """state_dicts -> load_state_dicts continues bit for bit, member by member; each member's state is an
    ordinary single-run state that a single trainer of its config continues the same way."""
    configs = member_configs(kit)
    first, second = kit.group_trainer(configs), kit.group_trainer(configs)
    abstract = trees.structure(first.abstract_state_dict())
    train_epochs(first, range(1))
    states = trees.copy(first.state_dicts())
    single = kit.trainer(configs[-1])  # per-member fields never change a state's structure
    for k, state in enumerate(states):
        if trees.structure(state) != abstract:
            return failed(f"member {k}'s state differs in structure, shapes or dtypes from abstract_state_dict()")
        if trees.structure(state) != trees.structure(single.abstract_state_dict()):
            return failed(f"member {k}'s state is not in the form of a single run's state_dict()")
    train_epochs(second, range(5, 6))  # another order and step count: the load must replace everything
    second.load_state_dicts(trees.copy(states))
    differs = _first_member_difference(second.state_dicts(), states)
    if differs:
        return failed(f"right after load_state_dicts, state_dicts() differs from the states loaded: {differs} "
                      f"({RESTORE})")
    single.load_state_dict(trees.copy(states[-1]))
    original, restored = ([s.to_host() for s in train_epochs(g, range(1, 2))[0]] for g in (first, second))
    alone = train_epochs(single, range(1, 2))[0].to_host()
    differs = _first_member_difference(second.state_dicts(), first.state_dicts())
    if differs or original != restored:
        return failed(f"after one more epoch the restored group differs from the original: {differs or 'sums'} "
                      f"({RESTORE})")
    if trees.first_difference(single.state_dict(), first.state_dicts()[-1]) or alone != original[-1]:
        return failed("the last member's state, loaded into a single trainer of its config, continues differently "
                      "from the member: a member's checkpoint must be an ordinary single-run checkpoint")
    return passed(f"{len(configs)} members, {len(trees.leaves(states[0]))} leaves each")


def driver_rows(kit: Kit) -> Outcome:
    """The driver trains a group (two seeds): each member's metrics rows equal those of a single run of its config."""
    base = kit.config(model="mlp", num_hiddens=(32,), synthetic_train_size=300, plot=False)
    workdir = os.path.join(kit.workdir, "group-rows")
    group = members.expand(base, {"seed": ["0", "1"]}, workdir)
    driver.train_group(group, backend=kit.backend)
    for member in group.members:
        alone = os.path.join(kit.workdir, f"group-rows-single-{member.name}")
        driver.train_and_evaluate(member.config, alone, backend=kit.backend)
        got, want = metrics_rows(member.workdir), metrics_rows(alone)
        differs = next((f"epoch {a.get('epoch')}: {key} {a.get(key)!r}, a single run's {b.get(key)!r}"
                        for a, b in zip(got, want) for key in b if a.get(key) != b[key]), "")
        if differs or len(got) != len(want):
            return failed(f"member {member.name} of a group the driver trained: {differs or f'{len(got)} rows'} "
                          f"(its rows must equal a single run of its config)")
    return passed(f"{len(group.members)} members x {base.max_epochs} epochs, rows equal")


def _first_member_difference(got: Sequence[Any], want: Sequence[Any]) -> str:
    if len(got) != len(want):
        return f"{len(got)} states for {len(want)} members"
    return next((f"member {k}, {d}" for k, (a, b) in enumerate(zip(got, want))
                 if (d := trees.first_difference(a, b))), "")


CASES = (
    _group_case("members equal their single runs", lambda kit: members_equal_single_runs(kit, batched=False)),
    _group_case("members equal their single runs, vmap_batched",
                lambda kit: members_equal_single_runs(kit, batched=True)),
    _group_case("carried sums are each member's own", carried_sums),
    _group_case("a diverging member is its own", diverging_member),
    _group_case("state round trip, member by member", state_round_trip),
    _group_case("driver rows equal single runs", driver_rows),
)
