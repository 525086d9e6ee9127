"""What a backend provides: the contract between the shared run driver and one framework.

The driver (`mlp_research.run.driver`) owns everything a user sees the same way
in every framework: flags, the data order, metrics rows, checkpoints and resume,
signals, plots and summaries. A backend owns the framework: it builds the model
from the `ModelSpec`, trains chunks of steps, evaluates, and converts its state
to plain numpy (for checkpoints) and its parameters to the canonical layout.
The mathematics it must compute is stated in docs/SPECIFICATION.md and
executable in `mlp_research.testing.reference`; `python -m
mlp_research.testing.check_backend NAME` checks a backend against it.

To add a backend: implement `Backend` and `Trainer`, register the backend class
under the entry-point group `mlp_research.backends` (WORKSPACE.md, "A backend").
Nothing in the core changes.

The contract, beyond the method signatures:
- The backend class is constructed with no arguments, once per process, when a
  run selects it; importing its module should be cheap (import the framework in
  `trainer`), so that listing backends stays fast and a broken framework install
  is reported against the plugin.
- `Trainer.layout` is `mlp_research.batching.make_layout(len(splits.train),
  config.batch_size, config.steps_per_chunk)`. An epoch has
  `layout.steps_per_epoch` steps in `layout.chunks_per_epoch` chunks of
  `layout.steps_per_chunk` steps (the last chunk may be shorter); the driver
  calls `train_chunk(c)` for c = first, ..., last chunk of an epoch, in order.
- Minibatches follow `batching.epoch_order(config.seed, epoch, layout)`: step s
  of an epoch takes the examples `order[s * batch_size:(s + 1) * batch_size]`
  whose position is below `layout.num_train` (the last batch may be short).
- The training loss of a batch is the mean of softmax cross-entropy over its
  examples (a short batch: over its real examples), and one optimiser update
  follows every batch. The epoch's training sums are taken from each batch's
  loss and predictions *before* that batch's update, summed over examples.
- `Sums.first_nonfinite_step` is the trainer's step counter before the update
  whose batch loss was NaN or infinite (0-based, counted from the start of the
  run, i.e. `epoch * steps_per_epoch + step_in_epoch` when the training set never
  changed size), or -1 while every loss was finite.
- `state_dict()` returns a tree of nested `dict`s (string keys) or objects with
  the same structure every call (e.g. a dataclass the framework registers as a
  pytree), whose leaves are numpy arrays or numpy scalars; empty sub-trees are not
  allowed (leave the key out). `abstract_state_dict()` returns the same structure
  with the same shapes and dtypes, available before the first step (a restore
  target). A restored `state_dict()` passed to `load_state_dict` must continue
  training bit for bit like the trainer that produced it, including the step
  counter and the optimiser's state.
- Checkpoints hold, beside `state_dict()`, the canonical parameters from
  `get_params()` (`W1, b1, ...`, float32, W shaped (fan_in, fan_out)): that is
  how any backend evaluates a checkpoint written by another.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

import numpy as np

from mlp_research.batching import EpochLayout
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.errors import ConfigError

PROTOCOL_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Sums:
    """Running sums over examples: what an epoch, a chunk or an evaluation reports.

    The JAX backend registers this class as a pytree, so the same class holds
    device arrays inside compiled code and Python numbers on the host.
    """

    loss_sum: Any
    correct: Any
    count: Any
    first_nonfinite_step: Any = -1

    def means(self) -> tuple[float, float]:
        """(mean loss, accuracy) over the counted examples."""
        count = max(int(self.count), 1)
        return float(self.loss_sum) / count, int(self.correct) / count

    def to_host(self) -> "Sums":
        return Sums(float(self.loss_sum), int(self.correct), int(self.count), int(self.first_nonfinite_step))


class Trainer(Protocol):
    """One run's model, optimiser state and resident data in one framework (see the module docstring)."""

    layout: EpochLayout
    compile_seconds: float  # time spent building, compiling or tracing before the first epoch

    def describe(self) -> dict[str, Any]:
        """For summary.json: at least `parallel`, `num_devices`, `device` (the device kind) and `platform`."""

    def start_epoch(self, epoch: int, sums: Sums | None = None) -> None:
        """Prepare epoch `epoch` (0-based); `sums` continue a partly trained epoch after a resume."""

    def train_chunk(self, chunk: int) -> None:
        """Train the steps of chunk `chunk` of the current epoch (may return before the device finishes)."""

    def epoch_sums(self) -> Sums:
        """Training sums of the current epoch so far, carried sums included (waits for the device)."""

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> Sums:
        """Sums over every given example with the current parameters."""

    def evaluate_eval_split(self) -> Sums:
        """`evaluate` on the split evaluated every epoch (backends may keep it resident)."""

    def state_dict(self) -> Any:
        """Parameters, optimiser state and step counter as a tree of numpy arrays (for checkpoints)."""

    def abstract_state_dict(self) -> Any:
        """A tree of the same structure, shapes and dtypes: the restore target."""

    def load_state_dict(self, state: Any) -> None:
        """Replace parameters, optimiser state and step counter by a restored `state_dict()` tree."""

    def get_params(self) -> dict[str, np.ndarray]:
        """Parameters in the canonical layout."""

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        """Load canonical parameters (the optimiser state is left as it is)."""

    # Optional: `logits(images) -> np.ndarray` with the current parameters (the kit's parity checks use it
    # when present, and compare `evaluate` sums otherwise); `compile()`: ahead-of-time compilation, which the
    # driver calls before the first epoch so that epoch times exclude it (add its time to `compile_seconds`).


class GroupTrainer(Protocol):
    """Several configurations that differ only in per-member fields, trained together (`--vmap`).

    The same calls as `Trainer`, each taking or returning one value per member,
    in member order. `state_dicts()` gives each member's state in the form of a
    single run of that member's config, so each member's checkpoint is an
    ordinary single-run checkpoint.
    """

    members: int
    layout: EpochLayout
    compile_seconds: float

    def describe(self) -> dict[str, Any]: ...
    def start_epoch(self, epoch: int, sums: Sequence[Sums] | None = None) -> None: ...
    def train_chunk(self, chunk: int) -> None: ...
    def epoch_sums(self) -> list[Sums]: ...
    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> list[Sums]: ...
    def evaluate_eval_split(self) -> list[Sums]: ...
    def state_dicts(self) -> list[Any]: ...
    def abstract_state_dict(self) -> Any: ...
    def load_state_dicts(self, states: Sequence[Any]) -> None: ...
    def get_params(self) -> list[dict[str, np.ndarray]]: ...


class Backend(Protocol):
    """A framework that trains the models of a `ModelSpec`; registered by entry point.

    Declarations (class attributes, optional): `optimizers`, `parallel_modes` and
    `matmul_precisions` list what the backend trains; the driver refuses any other
    value with the flag named, so `check` only needs what these cannot say.

    Optional methods, used when present: `group_trainer(configs, splits)` trains
    vmapped groups (without it `--vmap` is refused); `prepare(config)` sets up the
    process before the framework starts; `process_index()`, `process_count()` and
    `agree(stop, save_due)` for runs that span several processes.
    """

    name: str

    def version(self) -> str:
        """The framework's version (for listings and summaries)."""

    def check(self, config: Config) -> None:
        """Raise `ConfigError` naming any option this backend does not support."""

    def trainer(self, config: Config, splits: Splits) -> Trainer:
        """Build, initialise (from `config.seed`) and place a run's model, optimiser and data."""


# Declared capabilities and the flag each one is about.
DECLARATIONS = {"optimizers": ("optimizer", "optimizer"), "parallel_modes": ("parallel", "parallel"),
                "matmul_precisions": ("matmul_precision", "matmul_precision")}


def check_declared(backend: Any, config: Config) -> None:
    """Refuse, naming the flag, a value outside what the backend declares it supports."""
    for attribute, (flag, field) in DECLARATIONS.items():
        supported = getattr(backend, attribute, None)
        if supported is None:
            continue
        value = getattr(config, field)
        if value not in supported:
            raise ConfigError(f"--{flag}: {value!r} is not available in the {backend.name} backend; "
                              f"choose one of {', '.join(supported)}")


def check_config(backend: Any, config: Config) -> None:
    """Everything a run asks of a backend: its declarations, then its own `check`."""
    check_declared(backend, config)
    backend.check(config)


# Options that only training uses: evaluation must never refuse a checkpoint because of them.
TRAINING_ONLY_DEFAULTS = {"optimizer": "sgd", "schedule": "constant", "weight_decay": 0.0, "momentum": 0.9,
                          "warmup_epochs": 0.0, "parallel": "none", "steps_per_chunk": 0}


def evaluation_config(config: Config, same_backend: bool) -> Config:
    """The config a backend evaluates a checkpoint with: training-only options at their defaults.

    `matmul_precision` is part of what a model computes, kept when the backend
    that wrote the checkpoint evaluates it, and the framework's own elsewhere.
    """
    values = dict(TRAINING_ONLY_DEFAULTS, progress=False)
    if not same_backend:
        values["matmul_precision"] = "default"
    return config.replace(**values)


def process_index(backend: Any) -> int:
    return int(backend.process_index()) if hasattr(backend, "process_index") else 0


def process_count(backend: Any) -> int:
    return int(backend.process_count()) if hasattr(backend, "process_count") else 1


def agree(backend: Any, stop: bool, save_due: bool) -> tuple[bool, bool]:
    """(stop asked by any process, the primary's save decision); the identity for one process."""
    if process_count(backend) > 1 and hasattr(backend, "agree"):
        return backend.agree(stop, save_due)
    return stop, save_due

