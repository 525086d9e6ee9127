"""Evaluate a checkpoint on any split, and export its parameters."""

from __future__ import annotations

import os

import jax
import numpy as np

from mlp_research import checkpoint as checkpoint_lib
from mlp_research.config import Config
from mlp_research.data import load_splits
from mlp_research.errors import CheckpointError, ConfigError, warn
from mlp_research.models import to_canonical
from mlp_research.training import parallel


def restore_latest(workdir: str, data_dir: str | None = None) -> tuple[Config, checkpoint_lib.Resumed]:
    """The config and host state of the newest readable checkpoint in `workdir`."""
    if not os.path.isdir(workdir):
        raise ConfigError(f"--workdir: {workdir} is not a directory")
    checkpoints = checkpoint_lib.Checkpoints(workdir, read_only=True)
    steps = checkpoints.steps()
    if not steps:
        raise CheckpointError(f"--workdir: {workdir} holds no checkpoint")
    meta = None
    for step in steps:
        try:
            meta = checkpoints.read_meta(step)
            break
        except Exception:
            continue
    if meta is None:
        raise CheckpointError(f"--workdir: no readable checkpoint in {checkpoints.directory}")
    flat = dict(meta["config"])
    if data_dir is not None:
        flat["data_dir"] = data_dir
    config = Config.from_flat(flat)
    from mlp_research.training.loop import abstract_host_state

    resumed = checkpoints.restore(config, abstract_host_state(config), warn=warn)
    assert resumed is not None
    return config, resumed


def evaluate_checkpoint(workdir: str, split: str = "test", data_dir: str | None = None,
                        export: str | None = None) -> dict:
    """Metrics of the latest checkpoint on `split`; optionally export its parameters as .npz."""
    config, resumed = restore_latest(workdir, data_dir)
    canonical = to_canonical(config.model, resumed.state.params)
    if export:
        checkpoint_lib.export_npz(export, config.model, canonical)
    splits = load_splits(config)
    chosen = {"test": splits.test, "train": splits.train, "validation": splits.eval}[split]
    if split == "validation" and splits.eval is splits.test:
        raise ConfigError("--split: this run has no validation split (it was trained with val_fraction=0)")
    loss, acc = evaluate_params(config, canonical, chosen.images, chosen.labels)
    return {
        f"{split}_acc": acc,
        f"{split}_loss": loss,
        "examples": len(chosen),
        "step": resumed.step,
        "epoch": resumed.position.epoch,
        "checkpoint": resumed.path,
        "backend": "jax",
        **({"exported": os.path.abspath(export)} if export else {}),
    }


def evaluate_params(config: Config, canonical: dict[str, np.ndarray], images: np.ndarray,
                    labels: np.ndarray) -> tuple[float, float]:
    """(mean loss, accuracy) of canonical parameters on the given examples, in JAX."""
    from mlp_research.models import build_model, from_canonical
    from mlp_research.training import step as step_lib

    model = build_model(config.model)
    params = from_canonical(config.model, canonical)
    batch = min(config.eval_batch_size, len(labels))
    data = parallel.pad_eval(images, labels, batch)
    totals = jax.jit(step_lib.make_evaluate(model.apply))(params, *data)
    return totals.means()
