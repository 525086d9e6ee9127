"""The training configuration: every knob of a run, defined once.

`Config` extends the framework-neutral `ModelSpec` with data, optimiser and run
settings, so one flat object holds every setting under the name users see
(`--lr`, `--num_hiddens`, `config.lr`, `config.num_hiddens`); `config.spec` is
the model alone, what a backend builds. Building or `replace`-ing a Config
checks each value against its field's type and validates the whole, raising
`ConfigError` (exit code 2) with the offending flag named, before any data is
touched. Each field's type comes from its annotation (`typing.get_type_hints`),
its help, group and choices from its metadata: the command line, `--help` and
the checks all read them here. `as_dict`/`from_dict` are the JSON form stored
in summaries and checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import typing
from typing import Any, Mapping

from mlp_research.errors import ConfigError
from mlp_research.optimizers import SUPPORTED as OPTIMIZERS
from mlp_research.spec import ModelSpec, parse_widths

SCHEDULES = ("constant", "cosine", "warmup_cosine")
DATASETS = ("fashion_mnist", "synthetic")
DATA_SOURCES = ("auto", "idx", "tfds")
DATA_ORDERS = ("batches", "examples")
PARALLEL_MODES = ("auto", "none", "pmap", "sharded")
MATMUL_PRECISIONS = ("default", "float32", "tensorfloat32", "bfloat16")
# Sizes of Fashion-MNIST's splits, known without loading it (for flag checks).
FASHION_MNIST_SIZES = {"train": 60_000, "test": 10_000}
MAX_SYNTHETIC = 1_000_000  # synthetic examples per split (about 3 GB while generating)
MAX_SEED = (1 << 31) - 1  # every framework's seed type holds it
DATA_DIR_ENV = "MLP_RESEARCH_DATA_DIR"
COMPILATION_CACHE_ENV = "MLP_RESEARCH_COMPILATION_CACHE"
# Flag groups, in the order `--help` lists them.
GROUPS = ("model", "optimisation", "data", "run", "checkpoints", "parallel")
# Settings that change neither a run's numbers nor its length: a stored trial (of a sweep, or a search's study)
# that differs only in these is the same trial (the data directory may be named by another relative path).
RESULT_NEUTRAL_FIELDS = frozenset({
    "progress", "plot", "compilation_cache_dir", "data_dir", "eval_batch_size", "checkpoint_every_epochs",
    "checkpoint_every_steps", "keep_checkpoints", "keep_best", "checkpoint_min_seconds",
})
# Names older releases stored in checkpoints and summaries, and the field each became.
LEGACY_NAMES = {"steps_per_call": "steps_per_chunk"}
# What a stored config that lacks a field was computed with, where that is not today's default: data_order came
# with the book's order as the default, and every run before it shuffled examples.
LEGACY_VALUES = {"data_order": "examples"}


def _field(default: Any, group: str, help: str, choices: tuple[str, ...] = ()) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, "group": group, "choices": choices})


@dataclasses.dataclass(frozen=True)
class Config(ModelSpec):
    """One run: the model's fields (inherited from `ModelSpec`), then data, optimisation and execution settings."""

    backend: str = _field("jax", "run", "Framework that trains the model (jax; plugins add more: "
                          "python -m experiments.backends lists them).")
    optimizer: str = _field("sgd", "optimisation", "Optimiser (optax's update rules in every backend).", OPTIMIZERS)
    lr: float = _field(0.1, "optimisation", "Learning rate (the peak rate of a schedule).")
    momentum: float = _field(0.9, "optimisation", "Momentum of momentum, nesterov and rmsprop.")
    weight_decay: float = _field(0.0, "optimisation", "Decoupled weight decay (adamw, lamb) or L2 added to the "
                                 "gradient (the others).")
    schedule: str = _field("constant", "optimisation", "Learning-rate schedule.", SCHEDULES)
    warmup_epochs: float = _field(0.0, "optimisation", "Warm-up length of warmup_cosine, in epochs.")
    max_epochs: int = _field(10, "optimisation", "Passes over the training set.")
    batch_size: int = _field(256, "optimisation", "Global minibatch size.")
    seed: int = _field(0, "optimisation", f"Seed of the initialisation and the per-epoch shuffle (0..{MAX_SEED}).")
    dataset: str = _field("fashion_mnist", "data", "Dataset (synthetic: deterministic data of the same shape).",
                          DATASETS)
    data_source: str = _field("auto", "data", "Where Fashion-MNIST comes from: idx (the four original files), "
                              "tfds, or auto (idx when --data_dir holds them).", DATA_SOURCES)
    data_dir: str = _field("", "data", f"Directory with the IDX files or a tfds data dir (default: ${DATA_DIR_ENV}).")
    val_fraction: float = _field(0.0, "data", "Fraction of the training set held out for validation (a fixed "
                                 "split); 0 evaluates the test split each epoch, as d2l does.")
    test_at_end: bool = _field(False, "data", "With --val_fraction > 0, also evaluate the test split once at the end.")
    train_subset: int = _field(0, "data", "Train on a fixed random subset of this many training examples "
                               "(the same for every seed; 0: all).")
    data_order: str = _field("batches", "data", "How each epoch draws its minibatches: batches (the book's JAX "
                             "loader: the training set cut once into contiguous batches, visited in a new random "
                             "order every epoch, so the short batch falls anywhere) or examples (the examples "
                             "reshuffled every epoch, the book's PyTorch loader: the short batch always comes "
                             "last, and its full-rate update right before the evaluation costs ~0.011 accuracy "
                             "on average; benchmarks/book/README.md).", DATA_ORDERS)
    synthetic_train_size: int = _field(60_000, "data", "Training examples of --dataset=synthetic.")
    synthetic_test_size: int = _field(10_000, "data", "Test examples of --dataset=synthetic.")
    eval_batch_size: int = _field(2048, "run", "Batch size of evaluation (does not change results).")
    steps_per_chunk: int = _field(0, "run", "Training steps per chunk, the steps one backend call trains; a "
                                  "stop request takes effect between chunks (0: a whole epoch).")
    progress: bool = _field(True, "run", "Print a line per epoch.")
    plot: bool = _field(True, "run", "Write curves.png at the end (metrics.jsonl holds every value either way; "
                        "sweeps of many runs save ~1 s per run without it).")
    vmap_batched: bool = _field(False, "run", "Train a --vmap group with batched kernels (jax.vmap): faster on "
                                "accelerators, equal to single runs only to float rounding; default: members one "
                                "after another in one compiled program, bit-identical to single runs.")
    matmul_precision: str = _field(
        "default", "run", "Matmul precision: default (the platform's: TF32 on recent NVIDIA GPUs), float32, "
        "tensorfloat32 (GPU/TPU; CPUs compute float32), or bfloat16 (operands rounded to bfloat16, float32 "
        "accumulation; JAX, torch and TensorFlow): ~0.5x the float32 epoch on a CPU with AMX; its accuracy cost, "
        "measured on the chapter's models over 5 paired seeds, is within +-0.0012 of float32's test accuracy "
        "(WORKSPACE.md, 'When to use bfloat16'); slower on CPUs without a bfloat16 unit.", MATMUL_PRECISIONS)
    compilation_cache_dir: str = _field("", "run", "JAX's persistent compilation cache: a later run of the same "
                                        "program skips XLA compilation "
                                        f"(default: ${COMPILATION_CACHE_ENV}; empty: off).")
    checkpoint_every_epochs: int = _field(1, "checkpoints", "Save a checkpoint every N epochs (0: only at the end).")
    checkpoint_every_steps: int = _field(0, "checkpoints", "Also save every N steps, at the first chunk boundary "
                                         "after it (see --steps_per_chunk); 0: off.")
    keep_checkpoints: int = _field(3, "checkpoints", "How many recent checkpoints to keep (0: all).")
    keep_best: bool = _field(False, "checkpoints", "Also keep the checkpoint with the best val_acc "
                             "(evaluate it with --checkpoint=best).")
    checkpoint_min_seconds: float = _field(10.0, "checkpoints", "Skip a periodic save while the last one is "
                                           "younger than this; final and stop saves always happen (0: every due save).")
    parallel: str = _field("auto", "parallel", "Data parallelism: none (one device), pmap, sharded (jit over a "
                           "mesh, spans processes), auto (none on one device, else sharded).", PARALLEL_MODES)

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid flag (run by `ModelSpec.__post_init__`)."""
        super().validate()
        _check_choices(self)
        _check_numbers(self)
        _check_sizes(self)

    @property
    def spec(self) -> ModelSpec:
        """The model alone: what a backend builds and a checkpoint's canonical layout follows."""
        return ModelSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelSpec)})

    def num_train_examples(self) -> int:
        """Training examples after the validation hold-out and the subset, known before loading."""
        total = FASHION_MNIST_SIZES["train"] if self.dataset == "fashion_mnist" else self.synthetic_train_size
        left = total - validation_size(total, self.val_fraction)
        return min(left, self.train_subset) if self.train_subset else left

    def resolved_data_dir(self) -> str:
        return self.data_dir or os.environ.get(DATA_DIR_ENV, "")

    def resolved_compilation_cache_dir(self) -> str:
        return os.path.expanduser(self.compilation_cache_dir or os.environ.get(COMPILATION_CACHE_ENV, ""))

    # ------------------------------------------------------ the stored form
    def as_dict(self) -> dict[str, Any]:
        """Every field by its flag name, JSON-ready (widths as a list): summaries, checkpoints, experiment files."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["num_hiddens"] = list(self.num_hiddens)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        """Build and validate from flag names (a stored config, flags, an experiment file); unknown names are an
        error, old stored names are renamed."""
        return cls(**_checked_values(values))

    def replace(self, **changes: Any) -> "Config":
        """A copy with some fields changed, each checked against its type, the whole validated."""
        return dataclasses.replace(self, **_checked_values(changes))


def _checked_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` by today's field names, each coerced to its field's type; ConfigError for an unknown name."""
    values = {LEGACY_NAMES.get(k, k): v for k, v in values.items()}
    kinds = field_types()
    unknown = sorted(set(values) - set(kinds))
    if unknown:
        raise ConfigError(f"--{unknown[0]}: unknown config field (known: {', '.join(sorted(kinds))})")
    return {k: _coerce(k, kinds[k], v) for k, v in values.items()}


def validation_size(total: int, val_fraction: float) -> int:
    return int(round(total * val_fraction))


def _check(ok: bool, flag: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"--{flag}: {message}")


def _check_choices(c: Config) -> None:
    _check(c.backend != "", "backend", "must name a backend")
    for f in dataclasses.fields(Config):
        choices = f.metadata.get("choices") if f.metadata else None
        if choices and getattr(c, f.name) not in choices:
            _check(False, f.name, f"unknown value {getattr(c, f.name)!r}; choose one of {', '.join(choices)}")


def _check_numbers(c: Config) -> None:
    for name in ("lr", "momentum", "weight_decay", "warmup_epochs", "checkpoint_min_seconds", "val_fraction"):
        _check(math.isfinite(getattr(c, name)), name, f"must be a finite number, got {getattr(c, name)}")
    _check(c.lr > 0, "lr", f"must be > 0, got {c.lr}")
    _check(0 <= c.momentum < 1, "momentum", f"must be in [0, 1), got {c.momentum}")
    _check(c.weight_decay >= 0, "weight_decay", f"must be >= 0, got {c.weight_decay}")
    _check(c.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {c.warmup_epochs}")
    _check(0 <= c.seed <= MAX_SEED, "seed", f"must be in 0..{MAX_SEED}, got {c.seed}")
    for name in ("max_epochs", "batch_size", "eval_batch_size"):
        _check(getattr(c, name) >= 1, name, f"must be >= 1, got {getattr(c, name)}")
    for name in ("steps_per_chunk", "checkpoint_every_epochs", "checkpoint_every_steps", "keep_checkpoints",
                 "checkpoint_min_seconds", "train_subset"):
        _check(getattr(c, name) >= 0, name, f"must be >= 0, got {getattr(c, name)}")


def _check_sizes(c: Config) -> None:
    for name in ("synthetic_train_size", "synthetic_test_size"):
        _check(1 <= getattr(c, name) <= MAX_SYNTHETIC, name, f"must be in 1..{MAX_SYNTHETIC:,}, got {getattr(c, name)}")
    _check(0 <= c.val_fraction < 1, "val_fraction", f"must be in [0, 1), got {c.val_fraction}")
    total = FASHION_MNIST_SIZES["train"] if c.dataset == "fashion_mnist" else c.synthetic_train_size
    held_out = validation_size(total, c.val_fraction)
    _check(c.val_fraction == 0 or held_out >= 1, "val_fraction",
           f"{c.val_fraction} of {total:,} training examples holds out none; use 0 to evaluate the test split")
    _check(total - held_out >= 1, "val_fraction", f"leaves no training examples (val_fraction={c.val_fraction})")
    n_train = c.num_train_examples()
    _check(c.batch_size <= n_train, "batch_size",
           f"{c.batch_size} is larger than the training set ({n_train} examples)")
    if c.num_inputs != 784 or c.num_outputs != 10:
        raise ConfigError("--num_inputs/--num_outputs: Fashion-MNIST needs 784 inputs and 10 outputs")


# ------------------------------------------------------------------ field types
KINDS = {str: "str", int: "int", float: "float", bool: "bool", tuple[int, ...]: "widths"}


@functools.cache
def field_types() -> dict[str, str]:
    """Flat field name -> 'str' | 'int' | 'float' | 'bool' | 'widths', from the annotations.

    An annotation outside `KINDS` is a programming error, raised at once (a
    field the command line could not parse must not pass silently).
    """
    kinds = {}
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if hints[f.name] not in KINDS:
            raise TypeError(f"Config.{f.name}: no parser for type {hints[f.name]!r}")
        kinds[f.name] = KINDS[hints[f.name]]
    return kinds


def field_metadata() -> dict[str, dict[str, Any]]:
    """Flat field name -> {"help", "group", "choices", "default"}: what `--help` shows."""
    defaults = Config().as_dict()
    return {f.name: {**dict(f.metadata), "default": defaults[f.name]} for f in dataclasses.fields(Config)}


def _coerce(name: str, kind: str, value: Any) -> Any:
    """Check a value against its field's type (ints stay ints, whole floats become ints, bools are words)."""
    if kind == "widths":
        return parse_widths(value)
    try:
        if kind == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if isinstance(value, (bool, int)) and value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"--{name}: expected {kind}, got {value!r}") from None
