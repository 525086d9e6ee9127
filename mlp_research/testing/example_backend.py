"""An example backend in plain numpy, written from the documentation alone: what a third party writes.

A `Backend` class with its declarations, a trainer that holds parameters,
optimiser state and a step counter, and a group trainer for `--vmap`. It
follows `mlp_research/backends/base.py` (the contract) and
docs/SPECIFICATION.md (the mathematics), implements its own activations,
initialisers, forward pass, backpropagation and update rules, and subclasses
nothing: the contract is a protocol. It calls only what the specification says
every backend calls: the data order (`mlp_research.batching`) and the learning
rate (`mlp_research.schedules`). It does not use `mlp_research.testing.reference`
or `mlp_research.optimizers`: the kit compares against those, and a backend
built from them would agree with the kit by construction.

Float32 throughout (the specification's precision), one CPU "device", and the
optimisers sgd and momentum. It passes the kit:

    python -m mlp_research.testing.check_backend mlp_research.testing.example_backend:NumpyBackend

A plugin would register it as `numpy = "my_package.backend:NumpyBackend"`
under the entry-point group `mlp_research.backends` (WORKSPACE.md, "A backend").
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from mlp_research import batching, schedules
from mlp_research.backends.base import Sums
from mlp_research.config import Config
from mlp_research.data import Splits
from mlp_research.spec import ModelSpec

Params = dict[str, np.ndarray]
Function = Callable[[np.ndarray], np.ndarray]

# Standard deviation of a standard normal conditioned on |z| < 2 (section 4), from its density
# phi and erf: var = 1 - 2 * 2 phi(2) / (Phi(2) - Phi(-2)).
TRUNCATED_STD = math.sqrt(1 - 4 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(math.sqrt(2)))
GELU_C, GELU_K = math.sqrt(2 / math.pi), 0.044715


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the same function, with no exp to overflow


def activation_pairs(leaky_slope: float, elu_alpha: float,
                     relu_grad_at_zero: float) -> dict[str, tuple[Function, Function]]:
    """Each activation of the specification's section 3 and its derivative, as float32 -> float32 functions."""

    def gelu_tanh(x: np.ndarray) -> np.ndarray:
        return np.tanh(GELU_C * (x + GELU_K * x**3))

    def gelu_grad(x: np.ndarray) -> np.ndarray:
        t = gelu_tanh(x)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * GELU_K * x * x)

    pairs: dict[str, tuple[Function, Function]] = {
        "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0) + relu_grad_at_zero * (x == 0)),
        "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
        "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
        "gelu": (lambda x: 0.5 * x * (1 + gelu_tanh(x)), gelu_grad),
        "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),
        "leaky_relu": (lambda x: np.where(x >= 0, x, leaky_slope * x), lambda x: np.where(x >= 0, 1, leaky_slope)),
        "elu": (lambda x: np.where(x > 0, x, elu_alpha * np.expm1(np.minimum(x, 0))),
                lambda x: np.where(x > 0, 1, elu_alpha * np.exp(np.minimum(x, 0)))),
        "softplus": (lambda x: np.logaddexp(x, 0), _sigmoid),
        "identity": (lambda x: x, np.ones_like),
    }
    # Python constants must not widen float32 arrays to float64.
    return {name: (_same_dtype(f), _same_dtype(df)) for name, (f, df) in pairs.items()}


def _same_dtype(f: Function) -> Function:
    return lambda x: np.asarray(f(x), x.dtype)


def _truncated_normal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Standard normal draws conditioned on |z| < 2: draw a surplus and keep the ones inside."""
    kept = np.empty(0)
    while kept.size < size:
        z = rng.standard_normal(2 * (size - kept.size) + 16)
        kept = np.concatenate([kept, z[np.abs(z) < 2]])
    return kept[:size]


def init_weight(spec: ModelSpec, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """One weight (fan_in, fan_out) drawn as section 4 says for `spec.init`."""
    init = spec.init
    if init == "default":  # the book's N(0, sigma) for the scratch model; numpy has no layer default of
        init = "normal" if spec.model == "mlp_scratch" else "lecun"  # its own, so the concise model takes LeCun's
    shape = (fan_in, fan_out)
    if init == "zeros":
        return np.zeros(shape, np.float32)
    if init == "normal":
        return (spec.sigma * rng.standard_normal(shape)).astype(np.float32)
    variance = {"xavier": 2 / (fan_in + fan_out), "xavier_normal": 2 / (fan_in + fan_out), "he": 2 / fan_in,
                "he_uniform": 2 / fan_in, "lecun": 1 / fan_in}[init]
    if init in ("xavier", "he_uniform"):
        bound = math.sqrt(3 * variance)
        return rng.uniform(-bound, bound, shape).astype(np.float32)
    z = _truncated_normal(rng, fan_in * fan_out).reshape(shape)
    return (math.sqrt(variance) / TRUNCATED_STD * z).astype(np.float32)


def init_params(spec: ModelSpec, rng: np.random.Generator) -> Params:
    """Canonical parameters W1, b1, W2, ...: weights by `init_weight`, biases at exactly 0."""
    params: Params = {}
    sizes = spec.layer_sizes
    for layer in range(1, spec.num_layers + 1):
        params[f"W{layer}"] = init_weight(spec, sizes[layer - 1], sizes[layer], rng)
        params[f"b{layer}"] = np.zeros(sizes[layer], np.float32)
    return params


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example softmax cross-entropy, shifted by the row maximum so exp never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(labels)), labels]


def _flat(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    return images.reshape(images.shape[0], -1)


def _zeros_like(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _zeros_like(value) for key, value in tree.items()}
    return np.zeros_like(tree)


class NumpyTrainer:
    """One run's parameters, momentum trace, step counter and training data, as host numpy arrays.

    The class constants, `_epoch_order` and `_rng` are separate so that the
    kit's own tests can break one thing at a time (tests/kit_backends/broken.py).
    """

    LEAKY_SLOPE = 0.01
    ELU_ALPHA = 1.0

    def __init__(self, config: Config, splits: Splits):
        start = time.perf_counter()
        self.config, self.spec = config, config.spec
        self.layout = batching.make_layout(len(splits.train), config.batch_size, config.steps_per_chunk)
        self.images, self.labels = _flat(splits.train.images), np.asarray(splits.train.labels)
        self.eval_split = splits.eval
        relu_at_zero = 0.5 if self.spec.model == "mlp_scratch" else 0.0  # max(x, 0) splits a tie (section 3)
        pairs = activation_pairs(self.LEAKY_SLOPE, self.ELU_ALPHA, relu_at_zero)
        self.act, self.act_grad = pairs[self.spec.activation]
        self.params = init_params(self.spec, self._rng())
        momentum = config.optimizer == "momentum"
        self.trace = {name: np.zeros_like(p) for name, p in self.params.items()} if momentum else {}
        self.step = 0  # updates made in the whole run
        self.order = np.zeros(0, np.int32)
        self.start_epoch(0)
        self.compile_seconds = time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        return {"parallel": "none", "num_devices": 1, "device": "cpu", "platform": "cpu"}

    def _rng(self) -> np.random.Generator:
        """The initialisation's random stream: the seed fixes this backend's own draw (section 4)."""
        return np.random.default_rng(self.config.seed)

    # ------------------------------------------------------------------ model
    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """(logits, the input of every layer, the pre-activation of every hidden layer)."""
        inputs, pre = [x], []
        last = self.spec.num_layers
        for layer in range(1, last):
            pre.append(inputs[-1] @ self.params[f"W{layer}"] + self.params[f"b{layer}"])
            inputs.append(self.act(pre[-1]))
        return inputs[-1] @ self.params[f"W{last}"] + self.params[f"b{last}"], inputs, pre

    def _gradients(self, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, Params]:
        """Per-example losses, logits, and the gradients of the batch's mean loss by backpropagation."""
        logits, inputs, pre = self._forward(x)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        delta = shifted / shifted.sum(axis=1, keepdims=True)
        delta[np.arange(len(labels)), labels] -= 1
        delta /= np.float32(len(labels))
        grads: Params = {}
        for layer in range(self.spec.num_layers, 0, -1):
            grads[f"W{layer}"] = inputs[layer - 1].T @ delta
            grads[f"b{layer}"] = delta.sum(axis=0)
            if layer > 1:
                delta = (delta @ self.params[f"W{layer}"].T) * self.act_grad(pre[layer - 2])
        return cross_entropy(logits, labels), logits, grads

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self._forward(_flat(images))[0]

    # --------------------------------------------------------------- training
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return batching.epoch_order(self.config.seed, epoch, self.layout, self.config.data_order)

    def start_epoch(self, epoch: int, sums: Sums | None = None) -> None:
        self.order = self._epoch_order(epoch)
        carried = sums or Sums(0.0, 0, 0)
        self.loss_sum, self.correct, self.count = float(carried.loss_sum), int(carried.correct), int(carried.count)
        self.first_nonfinite = int(carried.first_nonfinite_step)

    def train_chunk(self, chunk: int) -> None:
        per_chunk, batch = self.layout.steps_per_chunk, self.config.batch_size
        for step in range(chunk * per_chunk, min((chunk + 1) * per_chunk, self.layout.steps_per_epoch)):
            indices = self.order[step * batch:(step + 1) * batch]
            self._train_step(indices[indices >= 0])  # -1 marks the padding of the short batch

    def _train_step(self, batch: np.ndarray) -> None:
        images, labels = self.images[batch], self.labels[batch]
        with np.errstate(all="ignore"):  # a diverging run is reported through first_nonfinite_step
            losses, logits, grads = self._gradients(images, labels)
            loss = float(losses.sum(dtype=np.float64))
            if self.first_nonfinite < 0 and not math.isfinite(loss):
                self.first_nonfinite = self.step
            self.loss_sum += loss
            self.correct += int(np.sum(logits.argmax(axis=1) == labels))
            self.count += len(batch)
            self._update(grads)
        self.step += 1

    def _update(self, grads: Params) -> None:
        """sgd or momentum (section 9) with L2 weight decay, at the schedule's rate for this step."""
        config = self.config
        lr = np.float32(schedules.learning_rate(config, self.layout.steps_per_epoch, self.step))
        for name, param in self.params.items():
            g = grads[name] + np.float32(config.weight_decay) * param if config.weight_decay else grads[name]
            if self.trace:
                self.trace[name] = g + np.float32(config.momentum) * self.trace[name]
                g = self.trace[name]
            self.params[name] = param - lr * g

    def epoch_sums(self) -> Sums:
        return Sums(self.loss_sum, self.correct, self.count, self.first_nonfinite)

    # ------------------------------------------------------------- evaluation
    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> Sums:
        x, y = _flat(images), np.asarray(labels)
        loss, correct, size = 0.0, 0, self.config.eval_batch_size
        with np.errstate(all="ignore"):
            for start in range(0, len(y), size):
                logits = self._forward(x[start:start + size])[0]
                loss += float(cross_entropy(logits, y[start:start + size]).sum(dtype=np.float64))
                correct += int(np.sum(logits.argmax(axis=1) == y[start:start + size]))
        return Sums(loss, correct, len(y))

    def evaluate_eval_split(self) -> Sums:
        return self.evaluate(self.eval_split.images, self.eval_split.labels)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """{"params", "step", and "opt": {"trace": ...} with momentum}: sgd keeps no optimiser state."""
        state: dict[str, Any] = {"params": {n: p.copy() for n, p in self.params.items()},
                                 "step": np.asarray(self.step, np.int64)}
        if self.trace:
            state["opt"] = {"trace": {n: t.copy() for n, t in self.trace.items()}}
        return state

    def abstract_state_dict(self) -> dict[str, Any]:
        return _zeros_like(self.state_dict())

    def load_state_dict(self, state: Any) -> None:
        self.params = {n: np.array(state["params"][n], np.float32) for n in self.params}
        self.step = int(np.asarray(state["step"]))
        if self.trace:
            self.trace = {n: np.array(state["opt"]["trace"][n], np.float32) for n in self.trace}

    def get_params(self) -> Params:
        return {name: p.copy() for name, p in self.params.items()}

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        for name, current in self.params.items():
            if np.shape(params[name]) != current.shape:
                raise ValueError(f"{name}: shape {np.shape(params[name])}, this model has {current.shape}")
        self.params = {name: np.array(params[name], np.float32) for name in self.params}


class NumpyGroupTrainer:
    """A `--vmap` group (base.py's `GroupTrainer`): one `NumpyTrainer` per member, trained one after another.

    Each member is exactly a single run of its config, so its rows, sums,
    parameters and state are bit-identical to that run's, and its state is an
    ordinary single-run state. A framework would batch the members in one
    program instead; the group's calls stay these.
    """

    def __init__(self, configs: Sequence[Config], splits: Splits, trainer_class: type[NumpyTrainer]):
        self.trainers = [trainer_class(config, splits) for config in configs]
        self.members = len(self.trainers)
        self.layout = self.trainers[0].layout  # members differ only in fields that keep the layout
        self.compile_seconds = sum(t.compile_seconds for t in self.trainers)

    def describe(self) -> dict[str, Any]:
        return {**self.trainers[0].describe(), "members": self.members}

    def start_epoch(self, epoch: int, sums: Sequence[Sums] | None = None) -> None:
        for k, trainer in enumerate(self.trainers):  # member k carries its own sums, sums[k]
            trainer.start_epoch(epoch, sums[k] if sums else None)

    def train_chunk(self, chunk: int) -> None:
        for trainer in self.trainers:
            trainer.train_chunk(chunk)

    def epoch_sums(self) -> list[Sums]:
        return [t.epoch_sums() for t in self.trainers]

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> list[Sums]:
        return [t.evaluate(images, labels) for t in self.trainers]

    def evaluate_eval_split(self) -> list[Sums]:
        return [t.evaluate_eval_split() for t in self.trainers]

    def state_dicts(self) -> list[dict[str, Any]]:
        return [t.state_dict() for t in self.trainers]

    def abstract_state_dict(self) -> dict[str, Any]:
        return self.trainers[0].abstract_state_dict()  # one member's structure: every member's is the same

    def load_state_dicts(self, states: Sequence[Any]) -> None:
        for trainer, state in zip(self.trainers, states, strict=True):
            trainer.load_state_dict(state)

    def get_params(self) -> list[Params]:
        return [t.get_params() for t in self.trainers]


class NumpyBackend:
    """The backend class a plugin registers under the entry-point group `mlp_research.backends`."""

    name = "numpy"
    optimizers = ("sgd", "momentum")
    parallel_modes = ("auto", "none")  # one device
    matmul_precisions = ("default",)  # numpy's float32
    trainer_class: type[NumpyTrainer] = NumpyTrainer
    group_class: type[NumpyGroupTrainer] = NumpyGroupTrainer

    def version(self) -> str:
        return np.__version__

    def check(self, config: Config) -> None:
        """Nothing beyond the declarations: every model, activation, init and schedule is supported."""

    def trainer(self, config: Config, splits: Splits) -> NumpyTrainer:
        return self.trainer_class(config, splits)

    def group_trainer(self, configs: Sequence[Config], splits: Splits) -> NumpyGroupTrainer:
        """Optional: with it, `--vmap` groups train; the driver has checked that only per-member fields differ."""
        return self.group_class(configs, splits, self.trainer_class)
