"""What a backend provides: the contract between the shared run driver and one framework.

The driver (`mlp_research.run.driver`) owns everything a user sees the same way
in every framework: flags, the data order, metrics rows, checkpoints and resume,
signals, plots and summaries. A backend owns the framework: it builds the model
from the `ModelSpec`, trains chunks of steps, evaluates, and converts its state
to plain numpy (for checkpoints) and its parameters to the canonical layout.
The mathematics it must compute is stated in docs/SPECIFICATION.md and
executable in `mlp_research.testing.reference`; `python -m
mlp_research.testing.check_backend NAME` checks a backend against it.

To add a backend: subclass `Backend` and `Trainer` (the base classes own what
every framework does the same way: epoch sums, the first non-finite step, the
state layout, parameter checks, evaluation in batches; a subclass supplies its
framework's step, evaluation batch, state and parameter conversion), register
the backend class under the entry-point group `mlp_research.backends`
(WORKSPACE.md, "A backend"). Nothing in the core changes. A backend may also
implement the same methods from scratch without subclassing (the kit checks it
the same way); the registry gives it the base class's defaults. A complete example,
in numpy and protocols only, that passes the kit: mlp_research.testing.example_backend.

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
- Minibatches follow `batching.epoch_order(config.seed, epoch, layout,
  config.data_order)` (`Trainer.epoch_order`): step s of an epoch takes the
  entries `order[s * batch_size:(s + 1) * batch_size]` that are not -1 (the
  padding of the short batch, which `data_order=batches` places at any step).
- The training loss of a batch is the mean of softmax cross-entropy over its
  examples (a short batch: over its real examples), and one optimiser update
  follows every batch. The epoch's training sums are taken from each batch's
  loss and predictions *before* that batch's update, summed over examples.
- `Sums.first_nonfinite_step` is part of an epoch's sums (`start_epoch` without sums
  starts it at -1): the trainer's step counter before the update
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

import contextlib
import dataclasses
from typing import Any, ContextManager, Protocol, Sequence

import numpy as np

from mlp_research import batching
from mlp_research.backends.sums import EpochSums, Sums
from mlp_research.batching import EpochLayout
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.errors import ConfigError
from mlp_research.launchers import Launch
from mlp_research.optimizers import SUPPORTED as OPTIMIZERS
from mlp_research.spec import ModelSpec

__all__ = ["Backend", "EpochSums", "GroupTrainer", "Sums", "Trainer", "check_canonical", "check_config",
           "evaluation_config"]

PROTOCOL_VERSION = 2


def is_static(field: dataclasses.Field) -> bool:
    """A dataclass field that is no pytree node (flax's `pytree_node=False`): kept as it is, no leaf."""
    return field.metadata.get("pytree_node", True) is False


def tree_map(fn: Any, tree: Any) -> Any:
    """`fn` on every leaf of a state tree: nested dicts, lists, tuples, named tuples and dataclasses (static
    fields kept as they are); `None` is an empty node."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(tree_map(fn, v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, v) for v in tree)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return dataclasses.replace(tree, **{f.name: tree_map(fn, getattr(tree, f.name))
                                            for f in dataclasses.fields(tree) if f.init and not is_static(f)})
    return None if tree is None else fn(tree)


def check_canonical(spec: ModelSpec, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical parameters (`W1, b1, ...`) checked against the spec, as float32 copies; ValueError naming a fault."""
    checked = {}
    for name, shape in spec.canonical_shapes().items():
        if name not in params:
            raise ValueError(f"canonical parameters lack {name}")
        value = np.asarray(params[name])
        if tuple(value.shape) != shape:
            raise ValueError(f"canonical {name} has shape {tuple(value.shape)}, spec needs {shape}")
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"canonical {name} has dtype {value.dtype}, not a float")
        checked[name] = np.array(value, np.float32)
    return checked


class Trainer:
    """One run's model, optimiser state and resident data: the host-side work every framework shares.

    The driver calls `start_epoch`, `train_chunk` for each chunk in order,
    `epoch_sums`, `evaluate_eval_split`, and saves `state_dict()` with
    `get_params()`. A subclass supplies the framework:

    - `_start_epoch(epoch, order)`: place the epoch's example order (`epoch_order`; -1 marks padding);
    - `_train_steps(first, end)`: train steps [first, end) of the epoch; return every step's loss sum
      and correct count (framework arrays, not yet fetched);
    - `_fetch(values)`: framework arrays -> numpy, in one transfer;
    - `_put_batch(images, labels)` and `_evaluate_batch(x, y)`: an evaluation batch on the device and
      its (loss sum, correct count);
    - `_framework_state()` -> (params, optimiser state or None) as numpy trees, and
      `_load_framework_state(params, opt_state)`; the step counter is the base class's (`self.step`);
    - `_get_canonical()` / `_set_canonical(params)`: the canonical layout `W1, b1, ...`;
    - `describe()`.
    """

    def __init__(self, config: Config, splits: Splits):
        self.config, self.spec = config, config.spec
        self.layout: EpochLayout = batching.make_layout(len(splits.train), config.batch_size, config.steps_per_chunk)
        self.eval_batch = max(1, min(config.eval_batch_size, len(splits.eval)))
        self.compile_seconds = 0.0  # building, compiling or tracing before the first epoch
        self.step = 0  # optimiser updates so far, over the whole run
        self.epoch = 0
        self._sums = EpochSums(np.zeros(self.layout.steps_per_epoch, np.int64), None, self._fetch)

    # ------------------------------------------------------------ the epoch
    def start_epoch(self, epoch: int, sums: Sums | None = None) -> None:
        """Prepare epoch `epoch` (0-based); `sums` continue a partly trained epoch after a resume."""
        self.epoch = epoch
        order = self.epoch_order(epoch)
        self._sums = EpochSums(batching.step_counts(order, self.layout), sums, self._fetch)
        self._start_epoch(epoch, order)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s example indices step by step (`batching.epoch_order`, the same in every backend):
        step s takes the entries [s * batch_size, (s + 1) * batch_size) that are not -1 (padding)."""
        return batching.epoch_order(self.config.seed, epoch, self.layout, self.config.data_order)

    def train_chunk(self, chunk: int) -> None:
        """Train the steps of chunk `chunk` of the current epoch (may return before the device finishes)."""
        first, end = chunk * self.layout.steps_per_chunk, self.layout.steps_done(chunk)
        losses, correct = self._train_steps(first, end)
        self._sums.add(self.step, first, end, losses, correct)
        self.step += end - first

    def epoch_sums(self) -> Sums:
        """Training sums of the current epoch so far, carried sums included (waits for the device)."""
        return self._sums.total()

    # ---------------------------------------------------------- evaluation
    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> Sums:
        """Sums over every given example (float32 images, int labels) with the current parameters."""
        return self._evaluate(self._put_batches(images, labels), len(labels))

    def logits(self, images: np.ndarray) -> np.ndarray | None:
        """The logits of `images` (float32, any count) with the current parameters; None where the backend
        does not expose them (optional: the kit then compares evaluation sums instead)."""
        return None

    def evaluate_eval_split(self) -> Sums:
        """`evaluate` on the split evaluated every epoch, kept resident after its first use."""
        return self._evaluate(self._eval_split, self._eval_count)

    def keep_eval_split(self, splits: Splits) -> None:
        """Place the evaluated split once (subclasses call it when their framework is ready)."""
        self._eval_split = self._put_batches(splits.eval.images, splits.eval.labels)
        self._eval_count = len(splits.eval)

    def _put_batches(self, images: np.ndarray, labels: np.ndarray) -> list[tuple[Any, Any]]:
        b = self.eval_batch
        return [self._put_batch(images[i:i + b], labels[i:i + b]) for i in range(0, len(labels), b)]

    def _evaluate(self, batches: list[tuple[Any, Any]], count: int) -> Sums:
        parts = [self._evaluate_batch(x, y) for x, y in batches]
        values = self._fetch([v for part in parts for v in part])
        loss_sum = float(np.sum([np.asarray(v, np.float64) for v in values[0::2]]))
        return Sums(loss_sum, int(np.sum([np.asarray(v) for v in values[1::2]])), count)

    # --------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """{"step", "params", "opt_state"} as numpy; "opt_state" left out when the optimiser keeps none (SGD)."""
        params, opt_state = self._framework_state()
        state: dict[str, Any] = {"step": np.asarray(self.step, np.int32), "params": params}
        if opt_state is not None:
            state["opt_state"] = opt_state
        return state

    def abstract_state_dict(self) -> dict[str, Any]:
        """Zeros of the state's structure, shapes and dtypes: the restore target (fixed from construction on)."""
        return tree_map(lambda a: np.zeros(np.shape(a), np.asarray(a).dtype), self.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state` was taken: step counter, parameters, optimiser state."""
        self.step = int(np.asarray(state["step"]))
        self._load_framework_state(state["params"], state.get("opt_state"))

    def get_params(self) -> dict[str, np.ndarray]:
        """Parameters in the canonical layout (`W1, b1, ...`, float32, W shaped (fan_in, fan_out))."""
        return check_canonical(self.spec, self._get_canonical())

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        """Load canonical parameters (checked against the spec; the optimiser state is left as it is)."""
        self._set_canonical(check_canonical(self.spec, params))

    def compile(self) -> None:
        """Ahead-of-time compilation, before the first epoch (add its time to `compile_seconds`); optional."""

    def describe(self) -> dict[str, Any]:
        """For summary.json: at least `parallel`, `num_devices`, `device` (the device kind) and `platform`."""
        raise NotImplementedError

    # ---------------------------------------------------- the framework's part
    def _start_epoch(self, epoch: int, order: np.ndarray) -> None:
        raise NotImplementedError

    def _train_steps(self, first: int, end: int) -> tuple[Any, Any]:
        raise NotImplementedError

    def _fetch(self, values: list[Any]) -> Sequence[Any]:
        raise NotImplementedError

    def _put_batch(self, images: np.ndarray, labels: np.ndarray) -> tuple[Any, Any]:
        raise NotImplementedError

    def _evaluate_batch(self, x: Any, y: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def _framework_state(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _load_framework_state(self, params: Any, opt_state: Any) -> None:
        raise NotImplementedError

    def _get_canonical(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_canonical(self, params: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


class GroupTrainer(Protocol):
    """Several configurations that differ only in per-member fields, trained together (`--vmap`).

    The same calls as `Trainer`, each taking or returning one value per member,
    in member order. Member k equals a single run of its config: bit for bit
    unless `config.vmap_batched`, then to float rounding. `state_dicts()` gives
    each member's state in the form of a single run of that member's config, so
    each member's checkpoint is an ordinary single-run checkpoint.
    """

    members: int
    layout: EpochLayout
    compile_seconds: float

    def describe(self) -> dict[str, Any]: ...
    def compile(self) -> None: ...
    def start_epoch(self, epoch: int, sums: Sequence[Sums] | None = None) -> None: ...
    def train_chunk(self, chunk: int) -> None: ...
    def epoch_sums(self) -> list[Sums]: ...
    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> list[Sums]: ...
    def evaluate_eval_split(self) -> list[Sums]: ...
    def state_dicts(self) -> list[Any]: ...
    def abstract_state_dict(self) -> Any: ...
    def load_state_dicts(self, states: Sequence[Any]) -> None: ...
    def get_params(self) -> list[dict[str, np.ndarray]]: ...


class Backend:
    """A framework that trains the models of a `ModelSpec`; registered by entry point, built with no arguments.

    Declarations (class attributes) list what the backend trains; the driver
    refuses any other value with the flag named, so `check` only needs what
    these cannot say. The process hooks default to one process, one device,
    nothing to prepare; a backend overrides what it does differently.
    """

    name: str = ""
    optimizers: tuple[str, ...] = OPTIMIZERS
    parallel_modes: tuple[str, ...] = ("auto", "none")
    matmul_precisions: tuple[str, ...] = ("default",)
    trains_groups: bool = False  # True when `group_trainer` trains --vmap groups

    def version(self) -> str:
        """The framework's version (for listings and summaries); keep it free of the framework's start-up."""
        raise NotImplementedError

    def check(self, config: Config) -> None:
        """Raise `ConfigError` naming any option the declarations cannot refuse; often nothing."""

    def trainer(self, config: Config, splits: Splits) -> Trainer:
        """Build, initialise (from `config.seed`) and place a run's model, optimiser and data."""
        raise NotImplementedError

    def group_trainer(self, configs: Sequence[Config], splits: Splits) -> GroupTrainer:
        """A --vmap group trained together (backends with `trains_groups`)."""
        raise ConfigError(f"--vmap: the {self.name} backend trains one configuration at a time")

    # ------------------------------------------------------------ the process
    def prepare(self, config: Config) -> None:
        """Set up the process before the framework starts (flags, caches); called once per run."""

    def join_processes(self, launch: Launch) -> Launch:
        """Join a multi-process runtime; returns the launch completed by it. One process by default."""
        raise ConfigError(f"--distributed: this process was started by {launch.describe()}, but the {self.name} "
                          "backend trains in one process; give --distributed=off")

    def guard(self) -> ContextManager[None]:
        """Around a joined process's work (JAX: a lost peer ends it in one line)."""
        return contextlib.nullcontext()

    def process_index(self) -> int:
        return 0

    def process_count(self) -> int:
        return 1

    def agree(self, stop: bool, save_due: bool) -> tuple[bool, bool]:
        """(stop asked by any process, the primary's save decision); the identity for one process."""
        return stop, save_due


# Declared capabilities and the flag each one is about.
DECLARATIONS = {"optimizers": "optimizer", "parallel_modes": "parallel", "matmul_precisions": "matmul_precision"}


def check_config(backend: Backend, config: Config) -> None:
    """Everything a run asks of a backend: its declarations (refused naming the flag), then its own `check`."""
    for attribute, flag in DECLARATIONS.items():
        supported, value = getattr(backend, attribute), getattr(config, flag)
        if value not in supported:
            raise ConfigError(f"--{flag}: {value!r} is not available in the {backend.name} backend; "
                              f"choose one of {', '.join(supported)}")
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
