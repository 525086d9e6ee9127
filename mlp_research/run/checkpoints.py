"""Orbax checkpoints of a run: verified saves, restore with fallback, the canonical parameter export.

A checkpoint (in `<workdir>/checkpoints/<step>/`, step = optimiser updates made
so far, which never goes backwards) holds three items:
- `state`: the backend's parameters, optimiser state and step counter, as plain
  host arrays (never replicated, so it restores onto any device count);
- `canonical`: the parameters in the canonical layout, so any backend can
  evaluate the checkpoint without the framework that wrote it;
- `meta`: JSON with the run's flat config, the position in the data order
  (epoch and step within it, with the partial epoch's metric sums), the
  metrics history and a SHA-256 checksum of every array of `state` and
  `canonical` (`checksums.py`), which binds the three items to one another.
  Initialisation and data order are pure functions of the seed, so seed +
  position is the complete random state.

A save either completes and is verified on disk, or raises: saves are
synchronous, a step at or below an existing one is refused, and a full disk is
a `StorageError` with the unfinished save removed. Every restore checks the
arrays against their checksums; a mismatch is a corrupt checkpoint.

The list of checkpoints is read from disk when the run opens them and then kept
in memory, changed only by this run's own saves, prunes and set-asides, which
every process of a run makes in the same order: no process re-lists a directory
another may be changing, and every process prunes the same steps. Only the
primary process moves or deletes step directories. Nothing is pickled: Orbax
stores arrays with TensorStore and metadata as JSON. Orbax is imported on first
use, so the package imports no JAX at module level.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
import time
from typing import Any

import numpy as np

from mlp_research.backends.base import check_canonical
from mlp_research.config import LEGACY_NAMES, LEGACY_VALUES, Config
from mlp_research.errors import CheckpointError, CheckpointMismatchError, ConfigError, warn
from mlp_research.files import atomic_path, storage_error
from mlp_research.run import checksums
from mlp_research.run.orbax_env import load_orbax
from mlp_research.run.workdir import CHECKPOINT_DIR
from mlp_research.spec import ModelSpec

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 3: meta holds the checksums of the arrays; 2 and older are restored unverified, with a warning
SET_ASIDE_DIR = "checkpoints_set_aside"
SET_ASIDE_KEEP = 3  # checkpoints_set_aside/ keeps the newest few moved there; older ones are removed
# Fields a resumed run may change: how long and where it runs, not what it computes.
CHANGEABLE_ON_RESUME = frozenset({
    "max_epochs", "progress", "parallel", "eval_batch_size", "data_dir", "data_source", "test_at_end",
    "steps_per_chunk", "checkpoint_every_epochs", "checkpoint_every_steps", "keep_checkpoints", "keep_best",
    "checkpoint_min_seconds", "compilation_cache_dir", "vmap_batched", "plot",
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
    state: Any  # the backend's host state tree
    position: Position
    history: list[dict]
    path: str
    extra: dict = dataclasses.field(default_factory=dict)  # what the driver stored beside the position


def config_differences(old: dict, new: dict, ignore: frozenset[str] = CHANGEABLE_ON_RESUME) -> list[str]:
    """'field: old -> new' for every field outside `ignore` (by default: what a resume may change)."""
    diffs = []
    # A checkpoint written before a field existed computed with that field's default (or its legacy value).
    defaults = Config().as_dict()
    old = {LEGACY_NAMES.get(k, k): v for k, v in old.items()}
    for name in sorted(set(old) | set(new)):
        if name in ignore:
            continue
        a = old.get(name, LEGACY_VALUES.get(name, defaults.get(name)))
        b = new.get(name, LEGACY_VALUES.get(name, defaults.get(name)))
        if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
            a, b = list(a or []), list(b or [])
        if a != b:
            diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs


def reason(error: BaseException) -> str:
    """An exception as a short phrase for a one-line message."""
    return " ".join(str(error).split())[:200] or type(error).__name__


def _disk_errno(error: BaseException) -> int | None:
    """The errno of a storage failure hidden in whatever Orbax/TensorStore raised, if it is one."""
    text = str(error)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES):
        if isinstance(error, OSError) and error.errno == code:
            return code
        if os.strerror(code) in text or errno.errorcode[code] in text:
            return code
    return None


class Checkpoints:
    """Save and restore run state with an Orbax `CheckpointManager` (synchronous, verified saves)."""

    def __init__(self, workdir: str, keep: int = 3, keep_best: bool = False, read_only: bool = False,
                 primary: bool = True):
        self.workdir = workdir
        self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
        self.keep, self.keep_best, self.primary = keep, keep_best, primary
        self._manager = None
        self._steps: set[int] = set()
        if read_only and not os.path.isdir(self.directory):
            return  # nothing to inspect: a fresh run does not wait for Orbax's import here
        self._ocp = load_orbax()
        options = self._ocp.CheckpointManagerOptions(
            max_to_keep=None,  # pruned by `prune`: the latest `keep` plus, with keep_best, the best
            create=not read_only,
            cleanup_tmp_directories=False,  # the driver's primary process does it before any process opens them
            enable_async_checkpointing=False,
        )
        try:
            self._manager = self._ocp.CheckpointManager(self.directory, options=options,
                                                        item_names=("state", "canonical", "meta"))
        except OSError as e:
            raise storage_error(self.directory, e) from None
        self._steps = set(self._manager.all_steps())

    # ---------------------------------------------------------------- read
    def steps(self) -> list[int]:
        """Checkpoints on disk, newest first: the list read on opening, kept up to date by this run's changes."""
        return sorted(self._steps, reverse=True)

    def refresh(self) -> None:
        """Read the list from disk again: only where no process of the run can be changing it."""
        if self._manager is not None:
            self._manager.reload()
            self._steps = set(self._manager.all_steps())

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def read_meta(self, step: int) -> dict:
        args = self._ocp.args
        meta = self._manager.restore(step, args=args.Composite(meta=args.JsonRestore()))["meta"]
        if not isinstance(meta, dict) or "config" not in meta or "position" not in meta:
            raise ValueError("metadata lacks config/position")
        return meta

    def check_compatible(self, config: Config) -> None:
        """Refuse (before anything is written) to resume with a config that computes something else."""
        for step in self.steps():
            try:
                meta = self.read_meta(step)
            except Exception:  # noqa: BLE001 -- unreadable: the resume reports it and falls back
                continue
            self._refuse_mismatch(step, meta, config)
            return

    def _refuse_mismatch(self, step: int, meta: dict, config: Config) -> None:
        diffs = config_differences(meta["config"], config.as_dict())
        if diffs:
            raise CheckpointMismatchError(
                f"--workdir: the checkpoint in {self.path(step)} was written by a different run "
                f"({'; '.join(diffs)}); use another --workdir, or --restart to discard it"
            )

    def restore_step(self, step: int, config: Config, abstract_state: Any) -> Resumed:
        """Checkpoint `step`, its arrays verified (raises whatever Orbax raises if it is unreadable,
        `ChecksumMismatch` if it is corrupt, `CheckpointMismatchError` if another config wrote it)."""
        meta = self.read_meta(step)
        self._refuse_mismatch(step, meta, config)
        args = self._ocp.args
        try:
            restored = self._manager.restore(step, args=args.Composite(
                state=args.StandardRestore(abstract_state),
                canonical=args.StandardRestore(_abstract_canonical(config.spec))))
        except ValueError:  # a tree of another structure: an older layout of the same state, or really another
            restored = self._restore_older_layout(step, config, abstract_state)
        self._verify(step, meta, restored)
        extra = {k: v for k, v in meta.items() if k not in ("format", "config", "position", "history", "checksums")}
        return Resumed(step, restored["state"], Position(**meta["position"]), meta.get("history", []),
                       self.path(step), extra)

    def _restore_older_layout(self, step: int, config: Config, abstract_state: Any) -> dict:
        """The state as saved, when it differs from today's layout only by sub-trees without arrays.

        Before the backend base class (format 3), the JAX core saved plain SGD's empty optimiser state as
        entries without arrays; today's layout leaves the key out. Anything else that differs re-raises.
        """
        args = self._ocp.args
        restored = self._manager.restore(step, args=args.Composite(
            state=args.StandardRestore(), canonical=args.StandardRestore(_abstract_canonical(config.spec))))
        state = checksums.without_empty(restored["state"])
        if checksums.array_shapes(state) != checksums.array_shapes(abstract_state):
            raise ValueError("the stored state's arrays are not this run's")
        return {"state": state, "canonical": restored["canonical"]}

    def restore_canonical(self, step: int, spec: ModelSpec) -> tuple[dict, dict[str, np.ndarray]]:
        """(meta, the canonical parameters) of checkpoint `step`, whichever backend wrote it, verified."""
        args = self._ocp.args
        try:
            meta = self.read_meta(step)
            restored = self._manager.restore(step, args=args.Composite(
                canonical=args.StandardRestore(_abstract_canonical(spec))))
            self._verify(step, meta, restored)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{self.path(step)}: cannot read its parameters ({reason(e)})") from None
        return meta, {name: np.asarray(value) for name, value in restored["canonical"].items()}

    def _verify(self, step: int, meta: dict, restored: dict) -> None:
        """Every restored item against the checksums in `meta` (a checkpoint older than them: a warning)."""
        stored = meta.get("checksums")
        if stored is None:
            warn(f"checkpoint {self.path(step)} has no checksums (written before format {FORMAT_VERSION}); "
                 "its arrays are used unverified")
            return
        for item, tree in restored.items():
            checksums.verify(item, tree, stored.get(item, {}))

    def set_aside(self, step: int, why: str) -> None:
        """Move checkpoint `step` into `checkpoints_set_aside/` (the primary does; every process forgets it).

        Every process of a run makes the same calls, after all of them have read what
        they need. The folder keeps the newest `SET_ASIDE_KEEP` checkpoints moved there.
        """
        self._steps.discard(step)
        if not self.primary:
            return
        target_dir = os.path.join(self.workdir, SET_ASIDE_DIR)
        target = os.path.join(target_dir, f"{step}-{time.time_ns()}")
        try:
            os.makedirs(target_dir, exist_ok=True)
            os.rename(self.path(step), target)
            for old in sorted(os.listdir(target_dir), key=_moved_at)[:-SET_ASIDE_KEEP]:
                shutil.rmtree(os.path.join(target_dir, old))
        except OSError as e:
            raise storage_error(self.path(step), e) from None
        log.warning("checkpoint %s (%s) moved to %s", self.path(step), why, target)

    # --------------------------------------------------------------- write
    def save(self, step: int, host_state: Any, canonical: dict[str, np.ndarray], config: Config,
             position: Position, history: list[dict], extra: dict | None = None) -> str:
        """Write checkpoint `step` and verify it is on disk; returns its path.

        Refuses a step at or below an existing checkpoint (the numbering never goes
        backwards, and an existing step is never silently kept instead of new state).
        Prunes nothing: the caller does, once every member of its run holds the step.
        """
        existing = self.steps()
        if existing and step <= existing[0]:
            raise CheckpointError(f"cannot save step {step}: {self.path(existing[0])} is at or beyond it; "
                                  "use --restart to start over or move that checkpoint away")
        canonical = dict(canonical)
        meta = {"format": FORMAT_VERSION, "config": config.as_dict(), "position": dataclasses.asdict(position),
                "history": history, **(extra or {}),
                "checksums": {"state": checksums.manifest(host_state), "canonical": checksums.manifest(canonical)}}
        args = self._ocp.args
        try:
            saved = self._manager.save(step, force=True, args=args.Composite(
                state=args.StandardSave(host_state), canonical=args.StandardSave(canonical),
                meta=args.JsonSave(meta)))
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 -- a full disk surfaces as many exception types
            self._cleanup_unfinished()
            code = _disk_errno(e)
            if code is not None:
                raise storage_error(self.path(step), OSError(code, os.strerror(code))) from None
            raise
        if not saved or not os.path.isdir(self.path(step)):
            raise CheckpointError(f"checkpoint {self.path(step)} was not written (Orbax declined the save)")
        self._steps.add(step)
        return self.path(step)

    def _cleanup_unfinished(self) -> None:
        """Remove what a failed save left, once Orbax's writer threads have given up on it."""
        if not self.primary or not os.path.isdir(self.directory):
            return
        try:
            self._manager.wait_until_finished()
        except Exception:  # noqa: BLE001 -- the failure itself, raised again: already being reported
            pass
        for _ in range(20):  # a thread may still be creating files for a moment after the error
            if not remove_unfinished(self.workdir):
                return
            time.sleep(0.05)

    def prune(self, history: list[dict]) -> None:
        """Keep the latest `keep` checkpoints and, with `keep_best`, the one with the best val_acc.

        Decided from the in-memory list, which is the same in every process of a run,
        so every process makes the same calls of Orbax's collective delete.
        """
        if self.keep <= 0:
            return
        steps = self.steps()
        keep = set(steps[: self.keep])
        best = best_step(history, steps) if self.keep_best else None
        if best is not None:
            keep.add(best)
        for step in steps:
            if step not in keep:
                try:
                    self._manager.delete(step)
                except OSError as e:
                    raise storage_error(self.path(step), e) from None
                self._steps.discard(step)

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None


def remove_unfinished(workdir: str) -> bool:
    """Remove the temporary directories of saves that never completed (a crash, a full disk); True if any."""
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    leftovers = [e for e in os.listdir(directory) if "tmp" in e] if os.path.isdir(directory) else []
    for entry in leftovers:
        shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
    return bool(leftovers)


def _moved_at(entry: str) -> int:
    """When a set-aside entry (`STEP-TIME_NS`) was moved there; 0 for anything else."""
    stamp = entry.rpartition("-")[2]
    return int(stamp) if stamp.isdigit() else 0


def _abstract_canonical(spec: ModelSpec) -> dict[str, np.ndarray]:
    return {name: np.zeros(shape, np.float32) for name, shape in spec.canonical_shapes().items()}


def best_step(history: list[dict], steps: list[int]) -> int | None:
    """The step of the best-val_acc epoch among `steps` (the earliest on ties), or None."""
    candidates = [(row["val_acc"], -row["step"]) for row in history
                  if row.get("step") in steps and np.isfinite(row.get("val_acc", np.nan))]
    return -max(candidates)[1] if candidates else None


# ------------------------------------------------------------------ export
def export_npz(path: str, spec: ModelSpec, canonical: dict[str, np.ndarray]) -> None:
    """Write canonical parameters as .npz: W1, b1, ... plus `spec_json` (a string array, no pickle).

    Layout: `W{i}` float32 shaped (fan_in, fan_out) and `b{i}` float32 (fan_out,), i = 1 for the
    first layer; a layer computes `x @ W + b`. Load with `np.load(path, allow_pickle=False)`.
    """
    payload = check_canonical(spec, canonical)
    payload["spec_json"] = np.array(json.dumps(dataclasses.asdict(spec)))
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **payload)


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

