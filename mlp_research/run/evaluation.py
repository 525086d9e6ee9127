"""Evaluate a checkpoint on any split, in any backend, and export its parameters.

Every checkpoint carries its parameters in the canonical layout, so a
checkpoint written by one backend is evaluated by another without the first
framework: the target backend builds the model from the checkpoint's spec and
loads the canonical parameters. Options that only training uses (optimiser,
schedule, placement, ...) are reset first, so no backend refuses a checkpoint
because of how it was trained.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

from mlp_research.backends import registry
from mlp_research.backends.base import check_config, evaluation_config
from mlp_research.config import Config
from mlp_research.data import load_splits
from mlp_research.errors import CheckpointError, ConfigError, warn
from mlp_research.run import checkpoints as checkpoint_lib
from mlp_research.run import members as members_lib

SPLITS = ("test", "train", "validation")


def check_export_path(path: str | None) -> None:
    """Refuse, before any work, an export target that cannot be written."""
    if path is None:
        return
    if not path:
        raise ConfigError("--export: must name a .npz file")
    if os.path.isdir(path):
        raise ConfigError(f"--export: {path} is a directory; name a .npz file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"--export: the directory {parent} does not exist")
    try:  # the only sure test of a place (root may write where permissions say no; /proc says yes but refuses)
        fd, probe = tempfile.mkstemp(prefix=".export-probe.", dir=parent)
    except OSError as e:
        raise ConfigError(f"--export: cannot write in {parent} ({e.strerror or e})") from None
    os.close(fd)
    os.remove(probe)


def choose(workdir: str, choice: str = "latest") -> tuple[checkpoint_lib.Checkpoints, int, dict]:
    """(checkpoints, step, meta) of the checkpoint `choice` names: latest (readable), best or a step."""
    if choice not in ("latest", "best") and not choice.isdigit():
        raise ConfigError(f"--checkpoint: expected latest, best or a step number, got {choice!r}")
    want = int(choice) if choice.isdigit() else choice
    if not os.path.isdir(workdir):
        raise ConfigError(f"--workdir: {workdir} is not a directory")
    group = members_lib.read_group(workdir)
    if group is not None:
        names = [m.get("name") for m in group["members"]]
        raise ConfigError(f"--workdir: {workdir} is a vmapped group; evaluate a member, e.g. "
                          f"--workdir={os.path.join(workdir, str(names[0]))}")
    checkpoints = checkpoint_lib.Checkpoints(workdir, read_only=True)
    steps = checkpoints.steps()
    if not steps:
        raise CheckpointError(f"--workdir: {workdir} holds no checkpoint")
    if isinstance(want, int):
        if want not in steps:
            raise CheckpointError(f"--checkpoint: no checkpoint {want} in {checkpoints.directory} "
                                  f"(there are {', '.join(map(str, sorted(steps)))})")
        return checkpoints, want, checkpoints.read_meta(want)
    for step in steps:
        try:
            meta = checkpoints.read_meta(step)
        except Exception:  # noqa: BLE001 -- try the next older one
            warn(f"checkpoint {checkpoints.path(step)} is unreadable; trying an older one")
            continue
        if want == "latest":
            return checkpoints, step, meta
        best = checkpoint_lib.best_step(meta.get("history", []), steps)
        if best is None:
            raise CheckpointError(f"--checkpoint: the best epoch's checkpoint is not kept in {checkpoints.directory}; "
                                  "train with --keep_best")
        return checkpoints, best, checkpoints.read_meta(best)
    raise CheckpointError(f"--workdir: no readable checkpoint in {checkpoints.directory}")


def _canonical(checkpoints: checkpoint_lib.Checkpoints, step: int, config: Config, fallback: bool
               ) -> tuple[int, dict, Any]:
    """(step, meta, parameters); with `fallback`, older checkpoints stand in for one whose parameters are corrupt."""
    steps = [s for s in checkpoints.steps() if s <= step] if fallback else [step]
    first_error = None
    for candidate in steps:
        try:
            return candidate, *checkpoints.restore_canonical(candidate, config.spec)
        except Exception as e:  # noqa: BLE001 -- CheckpointError or Orbax's own
            first_error = first_error or e
            if fallback:
                warn(f"checkpoint {checkpoints.path(candidate)} cannot be read; trying an older one")
    raise CheckpointError(f"no readable parameters: {first_error}")


def evaluate_checkpoint(workdir: str, split: str = "test", data_dir: str | None = None, export: str | None = None,
                        backend: str | None = None, checkpoint: str = "latest", target: Any = None) -> dict:
    """Metrics of a checkpoint on `split` in `backend` (default: the one that wrote it)."""
    if split not in SPLITS:
        raise ConfigError(f"--split: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    check_export_path(export)
    checkpoints, step, meta = choose(workdir, checkpoint)
    with contextlib.closing(checkpoints):
        flat = dict(meta["config"])
        written_by = flat.get("backend", registry.CORE.name)  # checkpoints from before the field existed
        flat.update(backend=backend or written_by, **({"data_dir": data_dir} if data_dir is not None else {}))
        config = evaluation_config(Config.from_dict(flat), same_backend=flat["backend"] == written_by)
        step, meta, canonical = _canonical(checkpoints, step, config, fallback=checkpoint == "latest")
    if export:
        checkpoint_lib.export_npz(export, config.spec, canonical)
    target = target or registry.prepared(config)  # as a run gets it: flags and caches set before its framework starts
    check_config(target, config)
    splits = load_splits(config)
    if split == "validation" and splits.eval is splits.test:
        raise ConfigError("--split: this run has no validation split (it was trained with val_fraction=0)")
    chosen = {"test": splits.test, "train": splits.train, "validation": splits.eval}[split]
    trainer = target.trainer(config, splits)
    trainer.set_params(canonical)
    loss, acc = trainer.evaluate(chosen.images, chosen.labels).means()
    return {
        f"{split}_acc": acc, f"{split}_loss": loss, "examples": len(chosen), "step": step,
        "epoch": meta["position"]["epoch"], "checkpoint": checkpoints.path(step), "written_by": written_by,
        "backend": config.backend, **({"exported": os.path.abspath(export)} if export else {}),
    }
