"""The training configuration: every knob of a run, defined once.

`Config` nests the framework-neutral `ModelSpec` and adds data, optimiser and
run settings. Users see one flat namespace (`--lr`, `--num_hiddens`, or
`config.lr` in an experiment file); `Config.from_flat` maps it onto the nested
dataclasses and validates it, raising `ConfigError` (exit code 2) with the
offending flag named, before any data is touched.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from mlp_research.errors import ConfigError
from mlp_research.spec import ModelSpec, parse_widths

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "lamb")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
DATASETS = ("fashion_mnist", "synthetic")
DATA_SOURCES = ("auto", "idx", "tfds")
PARALLEL_MODES = ("auto", "none", "pmap", "sharded")
MATMUL_PRECISIONS = ("default", "float32", "tensorfloat32", "bfloat16")
# Sizes of Fashion-MNIST's splits, known without loading it (for flag checks).
FASHION_MNIST_SIZES = {"train": 60_000, "test": 10_000}
DATA_DIR_ENV = "MLP_RESEARCH_DATA_DIR"
COMPILATION_CACHE_ENV = "MLP_RESEARCH_COMPILATION_CACHE"


def _field(default: Any, help: str, **kwargs: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


@dataclasses.dataclass(frozen=True)
class Config:
    """One run: model, data, optimisation and execution settings."""

    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    backend: str = _field("jax", "Framework that trains the model (jax; plugins add more).")
    # Optimisation.
    optimizer: str = _field("sgd", f"optax optimiser by name: {', '.join(OPTIMIZERS)}.")
    lr: float = _field(0.1, "Learning rate (peak rate for schedules).")
    momentum: float = _field(0.9, "Momentum for momentum/nesterov/rmsprop.")
    weight_decay: float = _field(0.0, "Decoupled weight decay (adamw/lamb) or L2 added to gradients (others).")
    schedule: str = _field("constant", f"Learning-rate schedule: {', '.join(SCHEDULES)}.")
    warmup_epochs: float = _field(0.0, "Warm-up length for warmup_cosine, in epochs.")
    max_epochs: int = _field(10, "Number of passes over the training set.")
    batch_size: int = _field(256, "Global minibatch size.")
    eval_batch_size: int = _field(2048, "Batch size for evaluation (does not change results).")
    seed: int = _field(0, "Seed for initialisation and the per-epoch shuffle.")
    # Data.
    dataset: str = _field("fashion_mnist", f"Dataset: {', '.join(DATASETS)}.")
    data_source: str = _field(
        "auto", "Where Fashion-MNIST comes from: idx (the four original files), tfds, or auto (idx if present)."
    )
    data_dir: str = _field("", f"Directory with the IDX files or a tfds data dir (default: ${DATA_DIR_ENV}).")
    val_fraction: float = _field(
        0.0, "Fraction of the training set held out for validation; 0 evaluates the test split each epoch (as d2l)."
    )
    test_at_end: bool = _field(False, "With val_fraction > 0, also evaluate the test split once at the end.")
    synthetic_train_size: int = _field(60_000, "Training examples of --dataset=synthetic.")
    synthetic_test_size: int = _field(10_000, "Test examples of --dataset=synthetic.")
    # Execution.
    steps_per_call: int = _field(0, "Training steps per compiled call; 0 runs a whole epoch per call.")
    parallel: str = _field("auto", f"Data parallelism: {', '.join(PARALLEL_MODES)}.")
    progress: bool = _field(True, "Print a progress line per epoch.")
    matmul_precision: str = _field(
        "default",
        "Matmul precision (JAX backend): default (the platform's: TF32 on recent NVIDIA GPUs, float32 on CPU), "
        "float32 (full precision everywhere), tensorfloat32 (GPU/TPU; CPU computes float32), or bfloat16 "
        "(operands rounded to bfloat16, float32 accumulation, on every platform).",
    )
    compilation_cache_dir: str = _field(
        "", f"JAX's persistent compilation cache: a later run with the same program skips XLA compilation "
        f"(default: ${COMPILATION_CACHE_ENV}; empty: off)."
    )
    # Checkpoints.
    checkpoint_every_epochs: int = _field(1, "Save a checkpoint every N epochs (0: only at the end).")
    checkpoint_every_steps: int = _field(
        0, "Also save every N steps, at the first compiled-call boundary after it (see --steps_per_call); 0: off."
    )
    keep_checkpoints: int = _field(3, "How many recent checkpoints to keep (0: all).")
    checkpoint_min_seconds: float = _field(
        10.0, "Skip a periodic save when the last one is younger than this; the final save and a save on "
        "SIGTERM/SIGINT always happen (0: save at every due epoch/step)."
    )

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid flag."""
        self.model.validate()

        def check(ok: bool, flag: str, message: str) -> None:
            if not ok:
                raise ConfigError(f"--{flag}: {message}")

        check(self.backend != "", "backend", "must name a backend")
        check(self.optimizer in OPTIMIZERS, "optimizer", f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        check(self.schedule in SCHEDULES, "schedule", f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {self.warmup_epochs}")
        check(self.max_epochs >= 1, "max_epochs", f"must be >= 1, got {self.max_epochs}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.eval_batch_size >= 1, "eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        check(self.dataset in DATASETS, "dataset", f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        check(self.data_source in DATA_SOURCES, "data_source", f"unknown source {self.data_source!r}; choose one of {', '.join(DATA_SOURCES)}")
        check(0 <= self.val_fraction < 1, "val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        check(self.synthetic_train_size >= 1, "synthetic_train_size", "must be >= 1")
        check(self.synthetic_test_size >= 1, "synthetic_test_size", "must be >= 1")
        check(self.steps_per_call >= 0, "steps_per_call", f"must be >= 0, got {self.steps_per_call}")
        check(self.matmul_precision in MATMUL_PRECISIONS, "matmul_precision",
              f"unknown precision {self.matmul_precision!r}; choose one of {', '.join(MATMUL_PRECISIONS)}")
        check(self.parallel in PARALLEL_MODES, "parallel", f"unknown mode {self.parallel!r}; choose one of {', '.join(PARALLEL_MODES)}")
        check(self.checkpoint_every_epochs >= 0, "checkpoint_every_epochs", "must be >= 0")
        check(self.checkpoint_every_steps >= 0, "checkpoint_every_steps", "must be >= 0")
        check(self.keep_checkpoints >= 0, "keep_checkpoints", "must be >= 0")
        check(self.checkpoint_min_seconds >= 0, "checkpoint_min_seconds", "must be >= 0")
        n_train = self.num_train_examples()
        check(n_train >= 1, "val_fraction", f"leaves no training examples (val_fraction={self.val_fraction})")
        check(
            self.batch_size <= n_train,
            "batch_size",
            f"{self.batch_size} is larger than the training set ({n_train} examples)",
        )
        if self.model.num_inputs != 784 or self.model.num_outputs != 10:
            raise ConfigError("--num_inputs/--num_outputs: Fashion-MNIST needs 784 inputs and 10 outputs")

    def num_train_examples(self) -> int:
        """Training examples after the validation hold-out, known before loading."""
        total = FASHION_MNIST_SIZES["train"] if self.dataset == "fashion_mnist" else self.synthetic_train_size
        return total - validation_size(total, self.val_fraction)

    def resolved_data_dir(self) -> str:
        return self.data_dir or os.environ.get(DATA_DIR_ENV, "")

    def resolved_compilation_cache_dir(self) -> str:
        return os.path.expanduser(self.compilation_cache_dir or os.environ.get(COMPILATION_CACHE_ENV, ""))

    # ------------------------------------------------------ flat user view
    def to_flat(self) -> dict[str, Any]:
        """The flat namespace users see (flags, experiment files, summaries)."""
        flat = {f.name: getattr(self.model, f.name) for f in dataclasses.fields(ModelSpec)}
        flat["num_hiddens"] = list(self.model.num_hiddens)
        for f in dataclasses.fields(self):
            if f.name != "model":
                flat[f.name] = getattr(self, f.name)
        return flat

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "Config":
        """Build and validate from flat names; unknown names are an error."""
        model_names = {f.name for f in dataclasses.fields(ModelSpec)}
        run_names = {f.name for f in dataclasses.fields(cls)} - {"model"}
        unknown = sorted(set(values) - model_names - run_names)
        if unknown:
            raise ConfigError(f"--{unknown[0]}: unknown config field (known: {', '.join(sorted(model_names | run_names))})")
        model_kwargs = {k: _coerce(k, v) for k, v in values.items() if k in model_names}
        run_kwargs = {k: _coerce(k, v) for k, v in values.items() if k in run_names}
        return cls(model=ModelSpec(**model_kwargs), **run_kwargs)

    def replace(self, **flat: Any) -> "Config":
        """A copy with some flat fields changed (validated)."""
        return Config.from_flat({**self.to_flat(), **flat})


def validation_size(total: int, val_fraction: float) -> int:
    return int(round(total * val_fraction))


def _coerce(name: str, value: Any) -> Any:
    """Check a value against its field's annotated type (ints stay ints)."""
    kind = field_types()[name]
    if kind == "widths":
        return parse_widths(value)
    try:
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "str":
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"--{name}: expected {kind}, got {value!r}") from None
    return value


def flag_help() -> dict[str, str]:
    """Help text for every flat field, for the absl flag definitions."""
    helps = {
        "model": "Model: mlp_scratch (hand-written parameters) or mlp (concise Flax layers).",
        "num_inputs": "Input features (784 for Fashion-MNIST).",
        "num_hiddens": "Hidden layer widths, e.g. 256 or 512,256.",
        "num_outputs": "Classes (10 for Fashion-MNIST).",
        "activation": "Hidden activation: relu, sigmoid, tanh, gelu, silu, leaky_relu, elu, softplus, identity.",
        "init": "Weight init: default, normal (uses --sigma), xavier, xavier_normal, he, he_uniform, lecun, zeros.",
        "sigma": "Standard deviation of the normal init (the scratch model's default init).",
    }
    for f in dataclasses.fields(Config):
        if f.name != "model":
            helps[f.name] = f.metadata.get("help", "")
    return helps


def field_types() -> dict[str, str]:
    """Flat field name -> 'str' | 'int' | 'float' | 'bool' | 'widths'."""
    types = {f.name: f.type for f in dataclasses.fields(ModelSpec)}
    types.update({f.name: f.type for f in dataclasses.fields(Config) if f.name != "model"})
    types["num_hiddens"] = "widths"
    return types
