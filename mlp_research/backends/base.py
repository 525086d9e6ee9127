"""What a backend provides: the interface between the shared run driver and one framework.

The driver (`mlp_research.training.loop`) owns everything a user sees the same
way in every framework: flags, the data order, metrics rows, checkpoints and
resume, preemption, plots and summaries. A backend owns the framework: it
builds the model from the `ModelSpec`, trains chunks of steps, evaluates, and
converts its state to plain numpy (for checkpoints) and its parameters to the
canonical layout (`W1, b1, ...`, weights (fan_in, fan_out)).

To add a backend: implement `Backend` and `Trainer`, and register the backend
class under the entry-point group `mlp_research.backends` in your package's
pyproject.toml. Nothing in the core changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

import numpy as np

from mlp_research.batching import EpochLayout
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Sums:
    """Metric sums over examples: what an epoch or an evaluation reports."""

    loss_sum: float
    correct: int
    count: int
    # Global step of the first batch whose loss was NaN/inf, -1 if none.
    first_nonfinite_step: int = -1

    def means(self) -> tuple[float, float]:
        """(mean loss, accuracy) over the counted examples."""
        count = max(self.count, 1)
        return self.loss_sum / count, self.correct / count


class Trainer(Protocol):
    """One run's model, optimiser state and resident data in one framework.

    Semantics every backend keeps: minibatches follow `batching.epoch_order(seed, epoch,
    layout)` (the last batch may be short; its loss is the mean over its examples);
    the loss is softmax cross-entropy on integer labels; metric sums are over
    examples; evaluation covers every example of the split.
    """

    layout: EpochLayout
    compile_seconds: float  # time spent compiling/tracing before the first epoch

    def describe(self) -> dict[str, Any]:
        """For summary.json: at least `parallel`, `num_devices`, `device` (the device kind)."""

    def start_epoch(self, epoch: int, sums: Sums | None = None) -> None:
        """Prepare epoch `epoch` (0-based); `sums` continue a partly trained epoch after a resume."""

    def train_chunk(self, chunk: int) -> None:
        """Train the steps of chunk `chunk` of the current epoch (may return before they finish)."""

    def epoch_sums(self) -> Sums:
        """Training sums of the current epoch so far (waits for the device)."""

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> Sums:
        """Sums over every given example with the current parameters."""

    def evaluate_eval_split(self) -> Sums:
        """`evaluate` on the split evaluated every epoch (backends may keep it resident)."""

    def state_dict(self) -> Any:
        """Parameters, optimiser state and step as a tree of numpy arrays (for checkpoints)."""

    def abstract_state_dict(self) -> Any:
        """A tree of the same structure, shapes and dtypes: the restore target."""

    def load_state_dict(self, state: Any) -> None:
        """Replace parameters, optimiser state and step by a restored `state_dict()` tree."""

    def get_params(self) -> dict[str, np.ndarray]:
        """Parameters in the canonical layout."""

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        """Load canonical parameters (the optimiser state is left as it is)."""


class Backend(Protocol):
    """A framework that can train the models of a `ModelSpec`; registered by entry point."""

    name: str

    def version(self) -> str:
        """The framework's version (for listings and summaries)."""

    def check(self, config: Config) -> None:
        """Raise `ConfigError` naming any option this backend does not support."""

    def trainer(self, config: Config, splits: Splits) -> Trainer:
        """Build, initialise (from `config.seed`) and place a run's model, optimiser and data."""


def check_single_device(config: Config, backend: str, optimizers: Sequence[str]) -> None:
    """The checks every one-device backend makes: no JAX-only placement or precision, a supported optimiser."""
    if config.parallel not in ("auto", "none"):
        raise ConfigError(
            f"--parallel: the {backend} backend trains on one device; {config.parallel!r} is JAX-only "
            "(use auto or none)"
        )
    if config.matmul_precision != "default":
        raise ConfigError(
            f"--matmul_precision: {config.matmul_precision!r} is JAX-only; the {backend} backend computes with "
            "its framework's default precision (use default)"
        )
    if config.optimizer not in optimizers:
        raise ConfigError(
            f"--optimizer: {config.optimizer!r} is not available in the {backend} backend; "
            f"choose one of {', '.join(optimizers)}"
        )
