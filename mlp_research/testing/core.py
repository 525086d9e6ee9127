"""What every kit case is built from: `Case`, `Outcome`, `Kit` and the small helpers the checks share.

The check modules (`checks_*.py`) import this module and nothing of `kit.py`, which assembles them
into the case list: imports run one way, core <- checks <- kit.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import tempfile
from typing import Any, Callable

import numpy as np

from mlp_research.backends import registry
from mlp_research.backends.adapter import as_backend
from mlp_research.backends.base import check_config
from mlp_research.config import Config
from mlp_research.data import Splits, load_splits
from mlp_research.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str  # "pass", "fail" or "skip"
    figure: str = ""  # what was measured, e.g. "max |logit diff| 2.1e-06"
    detail: str = ""  # for a failure or a skip: what is wrong, or why it does not apply


def passed(figure: str = "") -> Outcome:
    return Outcome("pass", figure)


def failed(detail: str, figure: str = "") -> Outcome:
    return Outcome("fail", figure, detail)


def skipped(reason: str) -> Outcome:
    return Outcome("skip", "", reason)


def expect(ok: bool, figure: str, detail: str) -> Outcome:
    return passed(figure) if ok else failed(detail, figure)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    run: Callable[["Kit"], Outcome]


def load_backend(spec: str) -> Any:
    """A registered backend by name, or `module:Class` constructed with no arguments (a backend not yet installed)."""
    module_name, colon, attribute = spec.partition(":")
    if not colon:
        return registry.load(spec)
    try:
        return getattr(importlib.import_module(module_name), attribute)()
    except Exception as e:  # noqa: BLE001 -- whatever the module raises, the kit reports it in one line
        message = " ".join(str(e).split())
        raise ConfigError(f"--backend: cannot load {spec!r}: {type(e).__name__}: {message}") from None


class Kit:
    """What every case needs: the backend, small fixed data, configs, and a scratch directory."""

    def __init__(self, backend: Any):
        # Seen through the interface the driver uses: a backend written without the base class is adapted.
        self.backend = as_backend(load_backend(backend) if isinstance(backend, str) else backend)
        self.name = self.backend.name
        self._tmp = tempfile.TemporaryDirectory(prefix=f"kit-{self.name}-")
        self.workdir = self._tmp.name

    def config(self, **overrides: Any) -> Config:
        """A small synthetic run of this backend: 200 training examples (4 batches, the last short)."""
        values = dict(backend=self.name, dataset="synthetic", synthetic_train_size=200, synthetic_test_size=64,
                      batch_size=64, eval_batch_size=64, max_epochs=2, progress=False, checkpoint_min_seconds=0)
        values.update(overrides)
        return Config().replace(**values)

    def splits(self, config: Config) -> Splits:
        return load_splits(config)

    def trainer(self, config: Config) -> Any:
        """A trainer after the run's checks, as the driver builds it."""
        check_config(self.backend, config)
        return self.backend.trainer(config, self.splits(config))

    def group_trainer(self, configs: list[Config]) -> Any:
        """A group trainer of `configs` (members in order) after each member's checks, as the driver builds it."""
        for config in configs:
            check_config(self.backend, config)
        return self.backend.group_trainer(configs, self.splits(configs[0]))

    def supports(self, **flat: Any) -> str | None:
        """None if the backend accepts these settings, else why not (its ConfigError)."""
        try:
            check_config(self.backend, self.config(**flat))
        except ConfigError as e:
            return str(e)
        return None

    def close(self) -> None:
        self._tmp.cleanup()


def random_canonical(config: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Parameters with non-zero biases, so parity checks see every term."""
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * (0.1 if name.startswith("W") else 0.05)).astype(np.float32)
            for name, shape in config.canonical_shapes().items()}


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) for k in a)


def train_epochs(trainer: Any, epochs: range) -> list[Any]:
    """Drive a trainer (or a group trainer) as the driver does: every chunk of every epoch, then the epoch's sums."""
    sums = []
    for epoch in epochs:
        trainer.start_epoch(epoch)
        for chunk in range(trainer.layout.chunks_per_epoch):
            trainer.train_chunk(chunk)
        sums.append(trainer.epoch_sums())
    return sums


def metrics_rows(workdir: str) -> list[dict[str, Any]]:
    """A run's metrics.jsonl without its timings: what two runs of the same computation share exactly."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "examples_per_second")}
                for line in f]
