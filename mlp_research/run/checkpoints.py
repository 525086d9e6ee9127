"""Orbax checkpoints of a run, resume logic and the canonical parameter export.

A checkpoint (in `<workdir>/checkpoints/<step>/`) holds three items:
- `state`: the backend's parameters, optimiser state and step counter, as plain
  host arrays (never replicated, so it restores onto any device count);
- `canonical`: the parameters in the canonical layout, so any backend can
  evaluate the checkpoint without the framework that wrote it;
- `meta`: JSON with the run's flat config, the position in the data order
  (epoch and step within it), the partial-epoch metric sums, and the metrics
  history. The data order and initialisation are pure functions of the seed,
  so seed + position is the complete random state.

Nothing is pickled: Orbax stores arrays with TensorStore and metadata as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from typing import Any, Callable

import numpy as np

from mlp_research.config import Config
from mlp_research.errors import CheckpointError, CheckpointMismatchError, ConfigError
from mlp_research.spec import ModelSpec

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
FORMAT_VERSION = 1
# Fields a resumed run may change: how long and where it runs, not what it computes.
CHANGEABLE_ON_RESUME = frozenset({
    "max_epochs", "progress", "parallel", "eval_batch_size", "data_dir", "data_source", "test_at_end",
    "steps_per_call", "checkpoint_every_epochs", "checkpoint_every_steps", "keep_checkpoints",
    "checkpoint_min_seconds", "compilation_cache_dir",
})


@dataclasses.dataclass
class Position:
    """Where training stands: `epoch` (0-based, in progress) and completed steps within it."""

    epoch: int = 0
    step_in_epoch: int = 0
    # Partial-epoch training sums (loss_sum, correct, count) so a mid-epoch resume reports the same row.
    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0


@dataclasses.dataclass
class Resumed:
    step: int
    state: Any  # host (numpy) TrainState
    position: Position
    history: list[dict]
    path: str


def config_differences(old: dict, new: dict, ignore: frozenset[str] = CHANGEABLE_ON_RESUME) -> list[str]:
    """'field: old -> new' for every field outside `ignore` (by default: what a resume may change)."""
    diffs = []
    # A checkpoint written before a field existed computed with that field's default.
    defaults = Config().to_flat()
    for name in sorted(set(old) | set(new)):
        if name in ignore:
            continue
        a, b = old.get(name, defaults.get(name)), new.get(name, defaults.get(name))
        if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
            a, b = list(a or []), list(b or [])
        if a != b:
            diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs


class Checkpoints:
    """Save and restore run state with an Orbax `CheckpointManager`."""

    def __init__(self, workdir: str, keep: int = 3, read_only: bool = False):
        self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
        if read_only and not os.path.isdir(self.directory):
            self._manager = None  # nothing to inspect: a fresh run does not wait for Orbax's import here
            return
        import orbax.checkpoint as ocp

        self._ocp = ocp
        # `read_only` here means "inspect only": no directory is created and nothing is cleaned up.
        # (Orbax's own read_only option logs three warnings per use, so it is not used.)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep if keep > 0 and not read_only else None,
            create=not read_only,
            cleanup_tmp_directories=not read_only,  # removes saves that a crash left unfinished
            enable_async_checkpointing=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("state", "canonical", "meta"))

    # ---------------------------------------------------------------- read
    def steps(self) -> list[int]:
        """Complete checkpoints, newest first."""
        return sorted(self._manager.all_steps(), reverse=True) if self._manager else []

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def read_meta(self, step: int) -> dict:
        meta = self._manager.restore(step, args=self._ocp.args.Composite(meta=self._ocp.args.JsonRestore()))["meta"]
        if not isinstance(meta, dict) or "config" not in meta or "position" not in meta:
            raise ValueError("metadata lacks config/position")
        return meta

    def check_compatible(self, config: Config) -> None:
        """Refuse (before anything is written) to resume with a config that computes something else."""
        for step in self.steps():
            try:
                meta = self.read_meta(step)
            except Exception:  # unreadable: restore() reports it and falls back
                continue
            self._refuse_mismatch(step, meta, config)
            return

    def _refuse_mismatch(self, step: int, meta: dict, config: Config) -> None:
        diffs = config_differences(meta["config"], config.to_flat())
        if diffs:
            raise CheckpointMismatchError(
                f"--workdir: the checkpoint in {self.path(step)} was written by a different run "
                f"({'; '.join(diffs)}); use another --workdir, or --restart to discard it"
            )

    def restore(self, config: Config, abstract_state: Any, warn: Callable[[str], None]) -> Resumed | None:
        """The newest readable checkpoint; older ones are tried if it is corrupt. None if there is none."""
        steps = self.steps()
        failures = []
        for step in steps:
            try:
                meta = self.read_meta(step)
                self._refuse_mismatch(step, meta, config)
                restored = self._manager.restore(
                    step, args=self._ocp.args.Composite(state=self._ocp.args.StandardRestore(abstract_state))
                )
            except CheckpointMismatchError:
                raise
            except Exception as e:  # orbax/tensorstore raise many kinds for a damaged checkpoint
                reason = " ".join(str(e).split())[:200] or type(e).__name__
                failures.append(f"{self.path(step)} ({reason})")
                continue
            if failures:
                warn(f"checkpoint {failures[0]} is unreadable; resuming from the older {self.path(step)}")
            return Resumed(step, restored["state"], Position(**meta["position"]), meta.get("history", []), self.path(step))
        if failures:
            raise CheckpointError(f"no readable checkpoint: {failures[0]}; use --restart to start over")
        return None

    # --------------------------------------------------------------- write
    def restore_canonical(self, step: int, spec: ModelSpec) -> dict[str, np.ndarray]:
        """The canonical parameters of checkpoint `step`, whichever backend wrote it."""
        abstract = {name: np.zeros(shape, np.float32) for name, shape in spec.canonical_shapes().items()}
        args = self._ocp.args
        try:
            restored = self._manager.restore(step, args=args.Composite(canonical=args.StandardRestore(abstract)))
        except Exception as e:  # noqa: BLE001
            reason = " ".join(str(e).split())[:200]
            raise CheckpointError(f"{self.path(step)}: cannot read its parameters ({reason})") from None
        return {name: np.asarray(value) for name, value in restored["canonical"].items()}

    def save(self, step: int, host_state: Any, canonical: dict[str, np.ndarray], config: Config, position: Position,
             history: list[dict]) -> None:
        """Start an asynchronous save; the next save or `close()` waits for it."""
        if step in self._manager.all_steps():
            return
        meta = {
            "format": FORMAT_VERSION,
            "config": config.to_flat(),
            "position": dataclasses.asdict(position),
            "history": history,
        }
        args = self._ocp.args
        self._manager.save(step, args=args.Composite(
            state=args.StandardSave(host_state),
            canonical=args.StandardSave(dict(canonical)),
            meta=args.JsonSave(meta),
        ))

    def wait(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()


def discard(workdir: str, outputs: tuple[str, ...]) -> None:
    """`--restart`: remove checkpoints and the outputs they produced."""
    shutil.rmtree(os.path.join(workdir, CHECKPOINT_DIR), ignore_errors=True)
    for name in outputs:
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


# ------------------------------------------------------------------ export
def export_npz(path: str, spec: ModelSpec, canonical: dict[str, np.ndarray]) -> None:
    """Write canonical parameters as .npz: W1, b1, ... plus `spec_json` (a string array, no pickle).

    Layout: `W{i}` float32 shaped (fan_in, fan_out) and `b{i}` float32 (fan_out,), i = 1 for the
    first layer; a layer computes `x @ W + b`. Load with `np.load(path, allow_pickle=False)`.
    """
    for name, shape in spec.canonical_shapes().items():
        if canonical[name].shape != shape:
            raise ValueError(f"{name} has shape {canonical[name].shape}, expected {shape}")
    payload = {name: np.asarray(canonical[name], np.float32) for name in spec.canonical_shapes()}
    payload["spec_json"] = np.array(json.dumps(dataclasses.asdict(spec)))
    tmp = path + ".tmp.npz"
    np.savez(tmp, **payload)
    os.replace(tmp, path)


def load_npz(path: str) -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """Read an `export_npz` file without unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as data:
            spec_values = json.loads(str(data["spec_json"]))
            spec_values["num_hiddens"] = tuple(spec_values["num_hiddens"])
            spec = ModelSpec(**spec_values)
            params = {name: np.array(data[name]) for name in spec.canonical_shapes()}
    except (OSError, KeyError, ValueError) as e:
        raise ConfigError(f"{path}: not a parameter export of this project ({e})") from None
    return spec, params
