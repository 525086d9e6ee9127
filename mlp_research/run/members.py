"""Who a run trains: one configuration, or a vmapped group of configurations, and where each writes.

`--vmap=lr:0.05,0.1 --vmap=seed:0,1` asks for the product of the listed values:
four members that differ only in fields a backend can vary per member inside
one compiled program. Each member writes exactly a single run's outputs to its
own sub-directory (`W/lr=0.05,seed=0/`); the group directory W holds
`group.json` (what the group is, so a resume can be checked) and the group's
summary. A single run is no group: the driver trains it directly, and a group
adds its members around that path.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from typing import Any, Sequence

from mlp_research.config import Config, field_types
from mlp_research.errors import CheckpointMismatchError, ConfigError, WorkdirDamagedError
from mlp_research.files import atomic_write
from mlp_research.run.workdir import CHECKPOINT_DIR

# Fields the members of a group may differ in: the JAX backend varies them per member in one program.
VMAP_FIELDS = ("lr", "seed", "init", "sigma", "momentum")
GROUP_FILE = "group.json"
GROUP_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Member:
    """One configuration of a run and the directory its outputs go to."""

    name: str  # "" for a single run, "lr=0.05" in a group
    config: Config
    workdir: str


@dataclasses.dataclass(frozen=True)
class Group:
    """Members that train together in one vmapped program, and the directory holding group.json."""

    workdir: str
    members: tuple[Member, ...]
    axes: dict[str, list[Any]]  # field -> the members' values, typed as the config holds them

    @property
    def shared(self) -> Config:
        """The settings every member shares (its varied fields are the first member's)."""
        return self.members[0].config

    @classmethod
    def of(cls, members: Sequence[Member], workdir: str) -> "Group":
        """A group of hand-made members; its axes are the fields in which they differ."""
        members = tuple(members)
        values = _values(members, field_types())
        return cls(workdir, members, {field: v for field, v in values.items() if len(v) > 1})


def parse_vmap(specs: Sequence[str]) -> dict[str, list[str]]:
    """`["lr:0.05,0.1", "seed:0,1"]` -> {"lr": ["0.05", "0.1"], "seed": ["0", "1"]} (values unparsed)."""
    axes: dict[str, list[str]] = {}
    for spec in specs:
        field, sep, values = spec.partition(":")
        field = field.strip()
        items = [v.strip() for v in values.split(",")]
        if not sep or not field or not values.strip() or any(not v for v in items):
            raise ConfigError(f"--vmap: expected FIELD:V1,V2,... (e.g. lr:0.05,0.1), got {spec!r}")
        if field not in VMAP_FIELDS:
            raise ConfigError(f"--vmap: {field!r} cannot vary within a group; choose from {', '.join(VMAP_FIELDS)}")
        if field in axes:
            raise ConfigError(f"--vmap: {field} is given twice; list all its values in one --vmap={field}:...")
        axes[field] = items
    return axes


def _label(field: str, value: Any) -> str:
    return f"{field}={value:g}" if isinstance(value, float) else f"{field}={value}"


def expand(base: Config, axes: dict[str, list[str]], workdir: str) -> Group:
    """Every combination of the axes' (unparsed) values as a member of `base` (validated; duplicates refused)."""
    if not axes:
        raise ConfigError("--vmap: a group needs at least one FIELD:V1,V2,... axis")
    members, names = [], set()
    for combo in itertools.product(*axes.values()):
        config = base.replace(**dict(zip(axes, combo)))
        flat = config.as_dict()
        name = ",".join(_label(field, flat[field]) for field in axes)
        if name in names:
            raise ConfigError(f"--vmap: the value behind {name} is listed twice")
        names.add(name)
        members.append(Member(name, config, os.path.join(workdir, name)))
    return Group(workdir, tuple(members), _values(members, axes))


def _values(members: Sequence[Member], fields: Sequence[str]) -> dict[str, list[Any]]:
    """Each field's distinct values over the members, in order, typed as the config holds them."""
    flats = [m.config.as_dict() for m in members]
    return {f: list({json.dumps(flat[f], sort_keys=True): flat[f] for flat in flats}.values()) for f in fields}


def group_key(config: Config) -> tuple:
    """Configurations with equal keys can train together in one vmapped program."""
    flat = config.as_dict()
    return tuple(sorted((k, json.dumps(v)) for k, v in flat.items() if k not in VMAP_FIELDS and k != "progress"))


# ------------------------------------------------------------------ group.json
def read_group(workdir: str) -> dict | None:
    """`group.json` of a group directory; None if `workdir` holds none."""
    path = os.path.join(workdir, GROUP_FILE)
    if not os.path.lexists(path):
        return None
    try:
        with open(path) as f:
            group = json.load(f)
        if not isinstance(group, dict) or not isinstance(group.get("members"), list):
            raise ValueError("no member list")
        return group
    except (OSError, ValueError) as e:
        raise WorkdirDamagedError(f"{path}: unreadable group definition ({e}); use --restart to start over") from None


def check_group_resume(workdir: str, group: Group | None) -> None:
    """Refuse a directory that another group (or a single run, for a group) wrote, before anything changes."""
    stored = read_group(workdir)
    if stored is None:
        if group is not None and os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR)):
            raise CheckpointMismatchError(f"--vmap: {workdir} holds a single run, not a group; use another --workdir")
        return
    if group is None:
        raise CheckpointMismatchError(
            f"--workdir: {workdir} holds a vmapped group ({', '.join(stored.get('axes', {}))}); pass the same "
            "--vmap flags to resume it, or use another --workdir")
    old = {m.get("name"): m.get("config") for m in stored["members"]}
    new = {m.name: m.config.as_dict() for m in group.members}
    if set(old) != set(new):
        raise CheckpointMismatchError(
            f"--vmap: {workdir} holds the group {sorted(old)}, not {sorted(new)}; use another --workdir, "
            "or --restart to discard it")


def write_group(group: Group) -> None:
    definition = {"format": GROUP_FORMAT, "axes": group.axes,
                  "members": [{"name": m.name, "config": m.config.as_dict()} for m in group.members]}
    atomic_write(os.path.join(group.workdir, GROUP_FILE), json.dumps(definition, indent=1) + "\n")
