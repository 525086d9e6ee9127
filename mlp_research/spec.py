"""The framework-neutral description of a model.

A `ModelSpec` is all a backend needs to build the same network: JAX/Flax here,
torch, TensorFlow or mxnet in the plugins. It also fixes the canonical parameter
layout (`W1, b1, W2, b2, ...`, weights shaped (fan_in, fan_out)) that checkpoints
export and every backend can load, so parameters move between frameworks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from mlp_research.errors import ConfigError

MODELS = ("mlp_scratch", "mlp")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "gelu", "silu", "leaky_relu", "elu", "softplus", "identity")
# "default" is each model's own initialisation as in the book: N(0, sigma) for
# the scratch model, the framework's default (LeCun normal in Flax) for `mlp`.
INITS = ("default", "normal", "xavier", "xavier_normal", "he", "he_uniform", "lecun", "zeros")
# Bounds that keep every framework's indexing and memory sane; checked before anything is loaded.
MAX_WIDTH = 1 << 20
MAX_PARAMS = (1 << 31) - 1


def _field(default: Any, help: str, choices: Sequence[str] = ()) -> Any:
    """A spec field with its flag help and allowed values (the command line and --help read them)."""
    return dataclasses.field(default=default, metadata={"help": help, "group": "model", "choices": tuple(choices)})


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A multilayer perceptron: `num_inputs -> num_hiddens... -> num_outputs`."""

    model: str = _field("mlp_scratch", "mlp_scratch (hand-written parameters) or mlp (concise framework layers).",
                        MODELS)
    num_inputs: int = _field(784, "Input features (784 for Fashion-MNIST).")
    num_hiddens: tuple[int, ...] = _field((256,), "Hidden layer widths, e.g. 256 or 512,256.")
    num_outputs: int = _field(10, "Classes (10 for Fashion-MNIST).")
    activation: str = _field("relu", "Activation between layers.", ACTIVATIONS)
    init: str = _field("default", "Weight initialisation (default: the model's own; normal uses --sigma).", INITS)
    sigma: float = _field(0.01, "Standard deviation of the normal init (the scratch model's default).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_hiddens", tuple(int(h) for h in self.num_hiddens))
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid field."""
        if self.model not in MODELS:
            raise ConfigError(f"--model: unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"--activation: unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        if self.init not in INITS:
            raise ConfigError(f"--init: unknown initialisation {self.init!r}; choose one of {', '.join(INITS)}")
        if not self.num_hiddens:
            raise ConfigError("--num_hiddens: at least one hidden layer is required")
        if any(not 1 <= h <= MAX_WIDTH for h in self.num_hiddens):
            raise ConfigError(
                f"--num_hiddens: every layer width must be in 1..{MAX_WIDTH:,}, got {list(self.num_hiddens)}")
        if self.num_inputs < 1 or self.num_outputs < 1:
            raise ConfigError("--num_inputs/--num_outputs must be >= 1")
        if self.num_params() > MAX_PARAMS:
            raise ConfigError(f"--num_hiddens: {list(self.num_hiddens)} gives {self.num_params():,} parameters, "
                              f"more than the {MAX_PARAMS:,} any backend can index")
        if not math.isfinite(self.sigma) or (not self.sigma > 0 and self.uses_sigma):
            raise ConfigError(f"--sigma: must be a finite number > 0, got {self.sigma}")

    @property
    def uses_sigma(self) -> bool:
        return self.init == "normal" or (self.init == "default" and self.model == "mlp_scratch")

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """All widths, input and output included: (784, 256, 10) for the default."""
        return (self.num_inputs, *self.num_hiddens, self.num_outputs)

    @property
    def num_layers(self) -> int:
        """Number of affine layers (hidden layers + output layer)."""
        return len(self.num_hiddens) + 1

    def canonical_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical parameter names and shapes, in layer order."""
        shapes: dict[str, tuple[int, ...]] = {}
        sizes = self.layer_sizes
        for i in range(self.num_layers):
            shapes[f"W{i + 1}"] = (sizes[i], sizes[i + 1])
            shapes[f"b{i + 1}"] = (sizes[i + 1],)
        return shapes

    def num_params(self) -> int:
        total = 0
        for shape in self.canonical_shapes().values():
            size = 1
            for dim in shape:
                size *= dim
            total += size
        return total

    def flops_per_example(self) -> int:
        """Multiply-adds x 2 of one forward pass (training is ~3x this)."""
        sizes = self.layer_sizes
        return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))

    def step_matmuls(self, batch: int) -> list[tuple[str, int, int, int]]:
        """The matmuls of one training step as (name, m, k, n), each `m x k @ k x n`: per layer the
        forward pass and the weight gradient, and the input gradient of every layer but the first
        (nothing needs the gradient of the images)."""
        matmuls = []
        for i, (fan_in, fan_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:]), start=1):
            matmuls.append((f"forward {i}", batch, fan_in, fan_out))
            matmuls.append((f"weight gradient {i}", fan_in, batch, fan_out))
            if i > 1:
                matmuls.append((f"input gradient {i}", batch, fan_out, fan_in))
        return matmuls

    def train_flops_per_example(self) -> int:
        """FLOPs of one training example as computed (a multiply-add is 2): `step_matmuls` per example."""
        return sum(2 * m * k * n for _, m, k, n in self.step_matmuls(1))


def parse_widths(value: Any) -> tuple[int, ...]:
    """Parse `--num_hiddens`: `256`, `"512,256"` or a sequence of whole numbers; anything else is refused."""
    if isinstance(value, str):
        bare = value.translate(str.maketrans("", "", "()[]"))
        parts = [p.strip() for p in bare.split(",")]
        if parts and parts[-1] == "" and len(parts) > 1:  # a trailing comma, as in "(256,)"
            parts = parts[:-1]
        if not parts or any(not p.lstrip("+").isdigit() for p in parts):
            raise ConfigError(f"--num_hiddens: expected comma-separated whole numbers like 512,256, got {value!r}")
        return tuple(int(p) for p in parts)
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    widths = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise ConfigError(f"--num_hiddens: expected whole numbers, got {value!r}")
        if isinstance(item, float) and not item.is_integer():
            raise ConfigError(f"--num_hiddens: widths are whole numbers, got {item!r}")
        if isinstance(item, str) and not item.strip().lstrip("+").isdigit():
            raise ConfigError(f"--num_hiddens: expected whole numbers, got {value!r}")
        widths.append(int(item))
    if not widths:
        raise ConfigError("--num_hiddens: at least one hidden layer is required")
    return tuple(widths)
