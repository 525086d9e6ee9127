"""A backend written without the base classes, seen as a `Backend`: its own methods, the base's defaults elsewhere.

A third party may implement the contract of `base.py` from scratch (the kit
checks it the same way). The registry hands the driver every backend through
`as_backend`, so the driver calls one interface and never asks which methods
an object has: this module is the one place that does.
"""

from __future__ import annotations

from typing import Any, Sequence

from mlp_research.backends.base import DECLARATIONS, Backend, GroupTrainer, Trainer
from mlp_research.config import Config
from mlp_research.data import Splits

# What a backend may define itself; the base class's default (a class attribute of `_Adapted`) stands in otherwise.
_OWN = (*DECLARATIONS, "version", "check", "prepare", "join_processes", "guard", "process_index", "process_count",
        "agree")


class _Trainer:
    """A trainer without `compile` or `logits` (optional in the contract) gets the base class's defaults."""

    def __init__(self, trainer: Any):
        self._trainer = trainer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trainer, name)

    def compile(self) -> None:
        compile_ = getattr(self._trainer, "compile", None)
        if compile_ is not None:
            compile_()

    def logits(self, images: Any) -> Any:
        """The wrapped trainer's logits, or None when it has no `logits` (optional in the contract)."""
        logits = getattr(self._trainer, "logits", None)
        return logits(images) if callable(logits) else None


class _Adapted(Backend):
    def __init__(self, backend: Any, name: str):
        self.wrapped = backend
        self.name = getattr(backend, "name", name)
        self.trains_groups = hasattr(backend, "group_trainer")
        for attribute in _OWN:
            if hasattr(backend, attribute):
                setattr(self, attribute, getattr(backend, attribute))

    def trainer(self, config: Config, splits: Splits) -> Trainer:
        return _Trainer(self.wrapped.trainer(config, splits))  # type: ignore[return-value]

    def group_trainer(self, configs: Sequence[Config], splits: Splits) -> GroupTrainer:
        if not self.trains_groups:
            return super().group_trainer(configs, splits)
        return _Trainer(self.wrapped.group_trainer(configs, splits))  # type: ignore[return-value]


def as_backend(backend: Any, name: str = "") -> Backend:
    """`backend` itself when it subclasses `Backend`; otherwise wrapped with the base class's defaults (named
    `name`, its registration, when it has no `name` of its own)."""
    return backend if isinstance(backend, Backend) else _Adapted(backend, name)
