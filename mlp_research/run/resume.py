"""Where a run resumes: the newest step that every member holds, readable and intact.

A vmapped group's members save one after another, so a kill between two saves
leaves some members a step ahead of the others. Members are pruned only once
every member holds the newer step (`loop.py`), so the step before is still
held by all of them: the resume restores the newest step they all hold and sets
aside the steps beyond it (an unfinished group save), which the run then saves
again. A single run's one directory is planned the same way.

Members that share no intact step (a group written before pruning waited for
every member, or a member whose checkpoints were lost) each restore their own
newest intact step; the driver then trains the members behind alone, as a
smaller group, up to the others' step (`behind`, `target`).

`plan` only reads: it returns what to restore and what to move aside, and the
loop applies the moves once every process of the run has read what it needs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from mlp_research.config import Config
from mlp_research.errors import CheckpointError, CheckpointMismatchError
from mlp_research.run.checkpoints import Checkpoints, Resumed, reason

NEWER = "newer than the newest step every member of the group holds intact"


@dataclasses.dataclass
class Plan:
    """What a resume restores and what it moves aside first.

    `restored` has one entry per member (None: that member starts from scratch); it is None
    itself for a fresh start. `error` is raised once the moves are made.
    """

    restored: list[Resumed | None] | None = None
    set_aside: list[tuple[int, int, str]] = dataclasses.field(default_factory=list)  # (member, step, why)
    warnings: list[str] = dataclasses.field(default_factory=list)
    error: CheckpointError | None = None

    @property
    def target(self) -> int | None:
        """The step the members behind must reach (the newest restored one)."""
        steps = [r.step for r in self.restored or [] if r is not None]
        return max(steps) if steps else None

    @property
    def behind(self) -> list[int]:
        """Members whose restored step is below the others' (empty when all share one step)."""
        target = self.target
        return [k for k, r in enumerate(self.restored or []) if r is None or r.step != target]


def plan(checkpoints: Sequence[Checkpoints], configs: Sequence[Config], abstract_state: Any) -> Plan:
    """The newest step every member holds intact; failing one, each member's own newest intact step."""
    result, failures = Plan(), []
    held = [c.steps() for c in checkpoints]
    if not any(held):
        return result
    for step in sorted(set(held[0]).intersection(*held[1:]), reverse=True):
        restored = _restore_all(checkpoints, configs, step, abstract_state, result, failures)
        if restored is not None:
            result.restored = list(restored)
            result.set_aside += [(k, newer, NEWER) for k, steps in enumerate(held) for newer in steps
                                 if newer > step and (k, newer) not in _aside(result)]
            break
    else:
        result.restored = [_newest_intact(k, c, config, abstract_state, result, failures)
                           for k, (c, config) in enumerate(zip(checkpoints, configs))]
        lost = [k for k, r in enumerate(result.restored) if r is None and held[k]]
        if lost:  # a member whose every checkpoint is unreadable: what a single run would refuse too
            result.restored = None
            result.error = CheckpointError(f"no readable checkpoint: {failures[0][0]} ({failures[0][1]}); use "
                                          "--restart to start over")
            return result
    if failures:
        newest = max(r.step for r in result.restored if r is not None)
        path, why = failures[0]
        result.warnings.append(f"checkpoint {path} is unreadable ({why}); resuming from the older step {newest}")
    return result


def _restore_all(checkpoints: Sequence[Checkpoints], configs: Sequence[Config], step: int, abstract_state: Any,
                 result: Plan, failures: list[tuple[str, str]]) -> list[Resumed] | None:
    """Every member at `step`; None (the unreadable one recorded, to be set aside) if one fails."""
    restored = []
    for k, (c, config) in enumerate(zip(checkpoints, configs)):
        resumed = _try(k, c, config, step, abstract_state, result, failures)
        if resumed is None:
            return None
        restored.append(resumed)
    return restored


def _newest_intact(k: int, c: Checkpoints, config: Config, abstract_state: Any, result: Plan,
                   failures: list[tuple[str, str]]) -> Resumed | None:
    for step in c.steps():
        if (k, step) not in _aside(result):
            resumed = _try(k, c, config, step, abstract_state, result, failures)
            if resumed is not None:
                return resumed
    return None


def _try(k: int, c: Checkpoints, config: Config, step: int, abstract_state: Any, result: Plan,
         failures: list[tuple[str, str]]) -> Resumed | None:
    try:
        return c.restore_step(step, config, abstract_state)
    except CheckpointMismatchError:
        raise
    except Exception as e:  # noqa: BLE001 -- orbax/tensorstore raise many kinds for a damaged checkpoint
        failures.append((c.path(step), reason(e)))
        result.set_aside.append((k, step, "unreadable"))
        return None


def _aside(result: Plan) -> set[tuple[int, int]]:
    return {(k, step) for k, step, _ in result.set_aside}
