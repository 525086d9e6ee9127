"""Evaluate a checkpoint on any split, in any backend, and export its parameters.

Every checkpoint carries its parameters in the canonical layout, so a
checkpoint written by one backend is evaluated by another without the first
framework: the target backend builds the model from the checkpoint's spec and
loads the canonical parameters.
"""

from __future__ import annotations

import os

from mlp_research.backends import registry as backends
from mlp_research.run import checkpoints as checkpoint_lib
from mlp_research.config import Config
from mlp_research.data import load_splits
from mlp_research.errors import CheckpointError, ConfigError, warn


def latest_readable(workdir: str) -> tuple[checkpoint_lib.Checkpoints, int, dict]:
    """(checkpoints, step, meta) of the newest checkpoint whose metadata reads."""
    if not os.path.isdir(workdir):
        raise ConfigError(f"--workdir: {workdir} is not a directory")
    checkpoints = checkpoint_lib.Checkpoints(workdir, read_only=True)
    steps = checkpoints.steps()
    if not steps:
        raise CheckpointError(f"--workdir: {workdir} holds no checkpoint")
    for step in steps:
        try:
            meta = checkpoints.read_meta(step)
        except Exception:  # noqa: BLE001 -- try the next older one
            warn(f"checkpoint {checkpoints.path(step)} is unreadable; trying an older one")
            continue
        return checkpoints, step, meta
    raise CheckpointError(f"--workdir: no readable checkpoint in {checkpoints.directory}")


def evaluate_checkpoint(workdir: str, split: str = "test", data_dir: str | None = None,
                        export: str | None = None, backend: str | None = None) -> dict:
    """Metrics of the latest checkpoint on `split` in `backend` (default: the one that wrote it)."""
    checkpoints, step, meta = latest_readable(workdir)
    flat = dict(meta["config"])
    written_by = flat.get("backend", "jax")
    if data_dir is not None:
        flat["data_dir"] = data_dir
    if backend is not None:
        flat["backend"] = backend
    # Evaluation runs on one device in any backend, whatever parallel mode trained the checkpoint,
    # and other frameworks at their own precision (reduced matmul precision is JAX-only).
    flat.update(progress=False, parallel="none")
    if flat["backend"] != "jax":
        flat["matmul_precision"] = "default"
    config = Config.from_flat(flat)
    canonical = checkpoints.restore_canonical(step, config.model)
    if export:
        checkpoint_lib.export_npz(export, config.model, canonical)
    target = backends.load(config.backend)
    target.check(config)
    splits = load_splits(config)
    if split == "validation" and splits.eval is splits.test:
        raise ConfigError("--split: this run has no validation split (it was trained with val_fraction=0)")
    chosen = {"test": splits.test, "train": splits.train, "validation": splits.eval}[split]
    trainer = target.trainer(config, splits)
    trainer.set_params(canonical)
    loss, acc = trainer.evaluate(chosen.images, chosen.labels).means()
    return {
        f"{split}_acc": acc,
        f"{split}_loss": loss,
        "examples": len(chosen),
        "step": step,
        "epoch": meta["position"]["epoch"],
        "checkpoint": checkpoints.path(step),
        "written_by": written_by,
        "backend": config.backend,
        **({"exported": os.path.abspath(export)} if export else {}),
    }
