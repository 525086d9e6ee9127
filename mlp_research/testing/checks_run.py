"""Kit cases about the backend as the driver uses it: loading, refusals, a real run, cross-backend evaluation."""

from __future__ import annotations

import os

from mlp_research.backends import registry
from mlp_research.backends.base import DECLARATIONS, check_config
from mlp_research.config import MATMUL_PRECISIONS, PARALLEL_MODES
from mlp_research.errors import ConfigError
from mlp_research.optimizers import SUPPORTED
from mlp_research.run import driver, evaluation, members
from mlp_research.testing.core import Case, Kit, Outcome, expect, failed, metrics_rows, passed, skipped

# Every value of each declarable option, to find the ones a backend does not declare.
ALL_VALUES = {"optimizers": SUPPORTED, "parallel_modes": PARALLEL_MODES, "matmul_precisions": MATMUL_PRECISIONS}


def loads(kit: Kit) -> Outcome:
    """Registered under the entry-point group, constructed with no arguments, reports its framework's version."""
    version = kit.backend.version()
    if not isinstance(version, str) or not version:
        return failed(f"version() returned {version!r}; expected the framework's version string")
    listed = registry.available()
    if kit.name not in listed:  # Kit(name) loads from the registry: only an object handed to the kit gets here
        return skipped(f"{kit.name!r} was handed to the kit as an object; its registration under "
                       f"{registry.GROUP!r} is not checked (framework {version})")
    return passed(f"{listed[kit.name].distribution} {listed[kit.name].distribution_version}, framework {version}")


def refusals(kit: Kit) -> Outcome:
    """Every value outside the backend's declarations is refused with ConfigError naming its flag."""
    refused = []
    for attribute, field in DECLARATIONS.items():
        for value in ALL_VALUES[attribute]:
            if value in getattr(kit.backend, attribute):
                continue
            try:
                check_config(kit.backend, kit.config(**{field: value}))
            except ConfigError as e:
                if not str(e).startswith(f"--{field}: "):
                    return failed(f"{field}={value!r} refused without naming --{field}: {e}")
                refused.append(f"{field}={value}")
                continue
            return failed(f"{field}={value!r} is outside {attribute} but check() accepts it")
    return passed(f"refused {', '.join(refused) or 'nothing (everything declared)'}")


def vmap_refusal(kit: Kit) -> Outcome:
    """Without `group_trainer`, a vmapped group is refused with ConfigError naming --vmap."""
    if kit.backend.trains_groups:
        return skipped("the backend trains vmapped groups")
    base = kit.config(max_epochs=1)
    group = members.expand(base, {"lr": ["0.05", "0.1"]}, os.path.join(kit.workdir, "vmap"))
    try:
        driver.train_group(group, backend=kit.backend)
    except ConfigError as e:
        return expect(str(e).startswith("--vmap: "), "refused", f"refused without naming --vmap: {e}")
    return failed("a vmapped group was accepted by a backend without group_trainer")


def driver_run_and_resume(kit: Kit) -> Outcome:
    """The driver trains it (outputs written, loss falls), and a run stopped after epoch 1 resumes to the same rows."""
    config = kit.config(synthetic_train_size=600, max_epochs=3, model="mlp", num_hiddens=(32,))
    whole, split = os.path.join(kit.workdir, "whole"), os.path.join(kit.workdir, "split")
    driver.train_and_evaluate(config, whole, backend=kit.backend)
    driver.train_and_evaluate(config.replace(max_epochs=1), split, backend=kit.backend)
    driver.train_and_evaluate(config, split, backend=kit.backend)
    rows, resumed = metrics_rows(whole), metrics_rows(split)
    if [r["epoch"] for r in rows] != [1, 2, 3] or rows[-1]["train_loss"] >= rows[0]["train_loss"]:
        return failed(f"a 3-epoch run wrote epochs {[r['epoch'] for r in rows]} and its loss did not fall")
    worst = max(abs(a[k] - b[k]) for a, b in zip(rows, resumed) for k in ("train_loss", "val_loss", "val_acc"))
    same_steps = [r["step"] for r in rows] == [r["step"] for r in resumed]
    return expect(worst <= 1e-6 and same_steps, f"resumed rows differ by {worst:.1e}",
                  f"a run resumed after epoch 1 differs from a straight run by {worst:.3g} (state_dict round trip?)")


def _cross(kit: Kit, writer: str, reader: str, optimizer: str) -> Outcome:
    """A checkpoint trained by `writer` (with `optimizer`) evaluates the same in `reader`."""
    name = f"{writer}-{optimizer}"
    workdir = os.path.join(kit.workdir, f"cross-{name}")
    config = kit.config(backend=writer, model="mlp", num_hiddens=(32, 16), optimizer=optimizer, max_epochs=1,
                        lr=0.01 if optimizer != "sgd" else 0.1, synthetic_test_size=999)
    write_backend = kit.backend if writer == kit.name else None
    driver.train_and_evaluate(config, workdir, backend=write_backend)
    read_backend = kit.backend if reader == kit.name else registry.load(reader)
    theirs = evaluation.evaluate_checkpoint(workdir, backend=writer, target=write_backend)
    ours = evaluation.evaluate_checkpoint(workdir, backend=reader, target=read_backend)
    diff = max(abs(ours["test_acc"] - theirs["test_acc"]), abs(ours["test_loss"] - theirs["test_loss"]))
    return expect(diff <= 1e-4, f"{writer}->{reader}: |diff| {diff:.1e} over {ours['examples']} examples",
                  f"a {writer} checkpoint ({optimizer}) evaluates to acc {ours['test_acc']:.5f}, loss "
                  f"{ours['test_loss']:.5f} in {reader}, {theirs['test_acc']:.5f}, {theirs['test_loss']:.5f} "
                  f"in {writer}")


def _cross_case(from_core: bool, optimizer: str) -> Case:
    """Checkpoints cross between this backend and the core (`registry.CORE`) in one direction."""
    core = registry.CORE.name

    def run(kit: Kit) -> Outcome:
        if from_core and kit.name == core:
            return skipped("the core evaluates its own checkpoints in every other case")
        if from_core:  # a core checkpoint, trained with an optimiser the backend may not train itself
            return _cross(kit, core, kit.name, optimizer)
        why = kit.supports(optimizer=optimizer)
        if why:
            return skipped(f"not supported: {why}")
        return _cross(kit, kit.name, core, optimizer)

    source = f"a {core} checkpoint evaluated here" if from_core else f"this backend's checkpoint in {core}"
    return Case(f"cross-evaluation[{source},{optimizer}]", run)


CASES_FIRST = (Case("loads", loads), Case("refuses unsupported options", refusals),
               Case("refuses --vmap without group_trainer", vmap_refusal))
CASES_LAST = (
    Case("driver run and resume", driver_run_and_resume),
    *(_cross_case(True, optimizer) for optimizer in ("sgd", "adam", "lamb")),
    _cross_case(False, "sgd"),
)
