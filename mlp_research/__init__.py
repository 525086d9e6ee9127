"""mlp-research: multilayer-perceptron experiments on Fashion-MNIST, JAX first, any framework through plugins.

Packages, in the direction imports run:
- `run`: the framework-neutral driver (one loop for single runs and vmapped groups), metrics, checkpoints,
  signals, the work directory. It imports no JAX at module level and never asks which backend it drives.
- `backends`: the interface a framework implements (`base`) and the entry-point registry (`registry`).
- `jax_backend`: the JAX/Flax implementation of that interface (models, pure step functions, placements).
- shared by all of them: `config`, `spec`, `data`, `batching`, `schedules`, `optimizers`, `errors`, `files`.

The front door, for notebooks and scripts (what `python -m experiments.train` calls):

    from mlp_research import Config, train_and_evaluate
    result = train_and_evaluate(Config().replace(data_dir="../shared/data/fashion_mnist"), "runs/default")
    result.metrics  # every epoch as a pandas DataFrame
"""

from __future__ import annotations

from typing import Any

_FRONT_DOOR = {"train_and_evaluate": "mlp_research.run.api", "train_group": "mlp_research.run.api",
               "Result": "mlp_research.run.api", "GroupResult": "mlp_research.run.api",
               "Config": "mlp_research.config", "ModelSpec": "mlp_research.spec"}
__all__ = sorted(_FRONT_DOOR)


def __getattr__(name: str) -> Any:
    """The front door's names, imported on first use: `import mlp_research` stays cheap (no JAX, no Orbax)."""
    if name not in _FRONT_DOOR:
        raise AttributeError(f"module 'mlp_research' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_FRONT_DOOR[name]), name)
