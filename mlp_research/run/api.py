"""The library's front door: `train_and_evaluate(config, workdir)` and `train_group(config, workdir, vmap)`.

What the command line does, callable from Python (a notebook, a sweep, a
test): load the backend named by the config once, prepare the process for it,
join a multi-process runtime when a launcher started several, and run the
driver inside the backend's guard. The result is a typed object: the summary,
every epoch's metrics (as rows, or as a pandas DataFrame), the final
parameters and the paths written, so nothing has to be read back from files.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mlp_research.backends import registry
from mlp_research.backends.base import Backend
from mlp_research.config import Config
from mlp_research.files import read_json_object
from mlp_research.launchers import Launch
from mlp_research.run import driver
from mlp_research.run import members as members_lib
from mlp_research.run.loop import EpochHook
from mlp_research.run.metrics import CURVES_FILE, METRICS_FILE, SUMMARY_FILE, MetricsRow

if TYPE_CHECKING:
    import pandas


@dataclasses.dataclass(frozen=True)
class Result:
    """One configuration's run: what it wrote to `workdir`, in memory."""

    config: Config
    workdir: str
    summary: dict[str, Any]
    rows: tuple[MetricsRow, ...]
    params: dict[str, np.ndarray]  # the final parameters, canonical layout (W1, b1, ...)

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's metrics (and test_loss/test_acc with --test_at_end)."""
        return self.summary["final"]

    @property
    def metrics(self) -> "pandas.DataFrame":
        """Every epoch's row as a DataFrame indexed by epoch (needs pandas)."""
        import pandas

        return pandas.DataFrame([dataclasses.asdict(r) for r in self.rows]).set_index("epoch")

    @property
    def paths(self) -> dict[str, str]:
        """metrics.jsonl, summary.json, curves.png and the newest checkpoint, where this run wrote them."""
        files = {"metrics": METRICS_FILE, "summary": SUMMARY_FILE, "curves": CURVES_FILE}
        paths = {name: os.path.join(self.workdir, file) for name, file in files.items()}
        return {**paths, "checkpoint": self.summary.get("checkpoint") or ""}


@dataclasses.dataclass(frozen=True)
class GroupResult:
    """A vmapped group: each member's `Result`, in member order, and the group's own summary."""

    workdir: str
    members: dict[str, Result]  # member name ("lr=0.05") -> its result
    summary: dict[str, Any]

    @property
    def metrics(self) -> "pandas.DataFrame":
        """Every member's rows in one DataFrame: a `member` column, the varied fields as `config_<field>` (the
        rows' own `lr` is the schedule's rate of each epoch), then the rows' columns (needs pandas)."""
        import pandas

        frames = []
        for name, result in self.members.items():
            frame = result.metrics.reset_index()
            frame.insert(0, "member", name)
            for k, field in enumerate(self.summary.get("axes", {}), start=1):
                frame.insert(k, f"config_{field}", result.summary["config"][field])
            frames.append(frame)
        return pandas.concat(frames, ignore_index=True)

    @property
    def best(self) -> Result:
        """The member with the best final val_acc among those that did not diverge."""
        return self.members[self.summary["best_member"]]


def _result(config: Config, workdir: str, summary: dict[str, Any]) -> Result:
    summary = dict(summary)
    params, rows = summary.pop("params"), summary.pop("rows")
    return Result(config, workdir, summary, tuple(rows), params)


def _backend_for(config: Config, backend: Backend | None, launch: Launch | None) -> tuple[Backend, dict | None]:
    """The run's backend, loaded and prepared once; the launch completed by the runtime it joins (if any)."""
    backend = registry.prepared(config, backend)
    if launch is not None and launch.joins:
        launch = backend.join_processes(launch)
    return backend, launch.to_dict() if launch is not None else None


def train_and_evaluate(config: Config, workdir: str, *, restart: bool = False, backend: Backend | None = None,
                       on_epoch: EpochHook | None = None, launch: Launch | None = None) -> Result:
    """Train `config` in `workdir` (resuming from its newest checkpoint unless `restart`) and evaluate it.

    Raises the `UserError` subclasses of `mlp_research.errors` for what the
    command line turns into one line and an exit code (a bad flag, a damaged or
    locked workdir, a diverged run, a stop request).
    """
    backend, launch = _backend_for(config, backend, launch)
    with backend.guard():
        summary = driver.train_and_evaluate(config, workdir, restart=restart, backend=backend, on_epoch=on_epoch,
                                            launch=launch)
    return _result(config, workdir, summary)


def train_group(config: Config, workdir: str, vmap: dict[str, Sequence[Any]], *, restart: bool = False,
                backend: Backend | None = None, on_epoch: EpochHook | None = None, launch: Launch | None = None
                ) -> GroupResult:
    """Train every combination of `vmap`'s values of `config` as one vmapped group (e.g. {"lr": [0.05, 0.1]}).

    Each member writes a single run's outputs to `workdir/FIELD=VALUE,...`; the
    group directory gets group.json and the group's summary.
    """
    axes = members_lib.parse_vmap([f"{field}:{','.join(map(str, values))}" for field, values in vmap.items()])
    group = members_lib.expand(config, axes, workdir)
    backend, launch = _backend_for(config, backend, launch)
    with backend.guard():
        summaries = driver.train_group(group, restart=restart, backend=backend, on_epoch=on_epoch, launch=launch)
    results = {m.name: _result(m.config, m.workdir, s) for m, s in zip(group.members, summaries)}
    return GroupResult(workdir, results, read_json_object(os.path.join(workdir, SUMMARY_FILE)) or {})
