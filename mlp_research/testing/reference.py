"""The model's mathematics as plain numpy: the executable form of docs/SPECIFICATION.md.

Backend authors compare their framework against these functions instead of
reverse-engineering the JAX code; `tests/test_reference.py` compares them
against the JAX backend, so neither the statement nor this file can drift from
what the core computes. Everything here favours being read over being fast.

Precision: the reference computes in float64 (inputs, parameters, gradients,
optimiser state), so it is the exact mathematics up to float64 rounding. A
float32 backend agrees with it to float32 rounding, not bit for bit; the tests
allow 1e-5 on logits and 1e-4 on parameters after two short epochs.

Parameters are dicts in the canonical layout of `ModelSpec.canonical_shapes()`:
`W1, b1, W2, b2, ...`, each W shaped (fan_in, fan_out), a layer computing
`x @ W + b`. Optimiser state ("slots") is a dict of the same names, each a dict
`{slot name: array}` as in `mlp_research.optimizers.STATE_SLOTS`.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from mlp_research import batching, optimizers, schedules
from mlp_research.backends.base import Sums
from mlp_research.config import Config
from mlp_research.spec import ModelSpec

Params = dict[str, np.ndarray]
Slots = dict[str, dict[str, np.ndarray]]
Activation = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]

# ----------------------------------------------------------------- activations
LEAKY_RELU_SLOPE = 0.01  # leaky_relu(x) = SLOPE * x for x < 0
ELU_ALPHA = 1.0  # elu(x) = ALPHA * (exp(x) - 1) for x <= 0
GELU_TANH_C = math.sqrt(2.0 / math.pi)  # gelu is the tanh approximation, not the erf form
GELU_CUBIC = 0.044715
# The derivative of relu at exactly 0 differs between the two models. `mlp` (and any library
# relu: jax.nn.relu, torch.relu, tf.nn.relu) takes 0. `mlp_scratch` uses the book's hand-written
# max(x, 0), and differentiating an elementwise max at a tie gives each side half: 0.5.
RELU_GRAD_AT_ZERO = 0.0
SCRATCH_RELU_GRAD_AT_ZERO = 0.5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _relu(grad_at_zero: float) -> Activation:
    return (lambda x: np.maximum(x, 0.0),
            lambda x: np.where(x > 0, 1.0, np.where(x == 0, grad_at_zero, 0.0)))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(GELU_TANH_C * (x + GELU_CUBIC * x**3)))


def _gelu_grad(x: np.ndarray) -> np.ndarray:
    t = np.tanh(GELU_TANH_C * (x + GELU_CUBIC * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_TANH_C * (1.0 + 3.0 * GELU_CUBIC * x * x)


def _silu_grad(x: np.ndarray) -> np.ndarray:
    s = _sigmoid(x)
    return s + x * s * (1.0 - s)


# name -> (f, f'), on float64 arrays. Branch points: leaky_relu and elu take their x >= 0 / x <= 0
# formulas at exactly 0 as written below, so leaky_relu'(0) = 1 and elu'(0) = ELU_ALPHA.
ACTIVATIONS: dict[str, Activation] = {
    "relu": _relu(RELU_GRAD_AT_ZERO),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x))),
    "tanh": (np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "gelu": (_gelu, _gelu_grad),
    "silu": (lambda x: x * _sigmoid(x), _silu_grad),
    "leaky_relu": (lambda x: np.where(x >= 0, x, LEAKY_RELU_SLOPE * x),
                   lambda x: np.where(x >= 0, 1.0, LEAKY_RELU_SLOPE)),
    "elu": (lambda x: np.where(x > 0, x, ELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
            lambda x: np.where(x > 0, 1.0, ELU_ALPHA * np.exp(np.minimum(x, 0.0)))),
    "softplus": (lambda x: np.logaddexp(x, 0.0), _sigmoid),
    "identity": (lambda x: x, np.ones_like),
}
SCRATCH_RELU: Activation = _relu(SCRATCH_RELU_GRAD_AT_ZERO)


def activation(spec: ModelSpec) -> Activation:
    """The hidden activation of a spec's model: the scratch model's relu is the hand-written one."""
    if spec.activation == "relu" and spec.model == "mlp_scratch":
        return SCRATCH_RELU
    return ACTIVATIONS[spec.activation]


# -------------------------------------------------------------- initialisation
# Standard deviation of a standard normal truncated to (-TRUNCATION, TRUNCATION). The truncated
# initialisers divide by it, so their samples have exactly the nominal standard deviation.
TRUNCATION = 2.0
TRUNCATED_NORMAL_STD = 0.87962566103423978
# init -> (scale, fan, distribution): the weight's variance is scale / fan, with fan "in" = fan_in
# and "avg" = (fan_in + fan_out) / 2 of the weight shaped (fan_in, fan_out).
VARIANCE_SCALING: dict[str, tuple[float, str, str]] = {
    "xavier": (1.0, "avg", "uniform"),
    "xavier_normal": (1.0, "avg", "truncated_normal"),
    "he": (2.0, "in", "truncated_normal"),
    "he_uniform": (2.0, "in", "uniform"),
    "lecun": (1.0, "in", "truncated_normal"),
}


def resolved_init(spec: ModelSpec) -> str:
    """What "default" means: N(0, sigma) for mlp_scratch; for mlp the core's (Flax's) LeCun normal."""
    if spec.init != "default":
        return spec.init
    return "normal" if spec.model == "mlp_scratch" else "lecun"


def weight_distribution(spec: ModelSpec, fan_in: int, fan_out: int) -> tuple[str, float]:
    """(distribution, scale) of one weight: scale is the standard deviation of "normal", the
    standard deviation before truncation of "truncated_normal", the bound of "uniform", 0 for "zeros"."""
    init = resolved_init(spec)
    if init in ("zeros", "normal"):
        return init, (0.0 if init == "zeros" else spec.sigma)
    scale, fan, distribution = VARIANCE_SCALING[init]
    variance = scale / (fan_in if fan == "in" else (fan_in + fan_out) / 2)
    if distribution == "uniform":
        return "uniform", math.sqrt(3.0 * variance)  # U(-a, a) has variance a^2 / 3
    return "truncated_normal", math.sqrt(variance) / TRUNCATED_NORMAL_STD


def init_statistics(spec: ModelSpec) -> dict[str, tuple[float, float, float]]:
    """Each parameter's (mean, standard deviation, bound on |value|) at initialisation.

    For comparing a backend's initial parameters statistically (a seed cannot be shared
    across frameworks). Biases start at exactly 0.
    """
    stats: dict[str, tuple[float, float, float]] = {}
    for name, shape in spec.canonical_shapes().items():
        if name.startswith("b"):
            stats[name] = (0.0, 0.0, 0.0)
            continue
        distribution, scale = weight_distribution(spec, *shape)
        std, bound = {
            "zeros": (0.0, 0.0),
            "normal": (scale, math.inf),
            "uniform": (scale / math.sqrt(3.0), scale),
            "truncated_normal": (scale * TRUNCATED_NORMAL_STD, TRUNCATION * scale),
        }[distribution]
        stats[name] = (0.0, std, bound)
    return stats


def _truncated_standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """N(0, 1) conditioned on |z| < TRUNCATION, by rejection: redraw every sample outside."""
    z = rng.standard_normal(shape)
    outside = np.abs(z) >= TRUNCATION
    while outside.any():
        z[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(z) >= TRUNCATION
    return z


def init_params(spec: ModelSpec, rng: np.random.Generator) -> Params:
    """Initial canonical parameters (float32) drawn exactly as the spec's init describes."""
    params: Params = {}
    for name, shape in spec.canonical_shapes().items():
        if name.startswith("b"):
            params[name] = np.zeros(shape, np.float32)
            continue
        params[name] = _draw(*weight_distribution(spec, *shape), shape, rng).astype(np.float32)
    return params


def _draw(distribution: str, scale: float, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if distribution == "zeros":
        return np.zeros(shape)
    if distribution == "normal":
        return scale * rng.standard_normal(shape)
    if distribution == "uniform":
        return rng.uniform(-scale, scale, shape)
    return scale * _truncated_standard_normal(rng, shape)


# ------------------------------------------------------------- forward, loss
def _flatten(spec: ModelSpec, images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) or (N, 784) -> (N, num_inputs) float64: images enter the network flattened row by row."""
    images = np.asarray(images)
    return images.reshape(images.shape[0], spec.num_inputs).astype(np.float64)


def _affine(params: Mapping[str, np.ndarray], layer: int, a: np.ndarray) -> np.ndarray:
    return a @ np.asarray(params[f"W{layer}"], np.float64) + np.asarray(params[f"b{layer}"], np.float64)


def _forward_trace(spec: ModelSpec, params: Mapping[str, np.ndarray], images: np.ndarray):
    """(logits, each layer's input, each hidden layer's pre-activation): what backpropagation needs."""
    f, _ = activation(spec)
    a = _flatten(spec, images)
    inputs, pre_activations = [a], []
    for layer in range(1, spec.num_layers):
        pre_activations.append(_affine(params, layer, a))
        a = f(pre_activations[-1])
        inputs.append(a)
    return _affine(params, spec.num_layers, a), inputs, pre_activations  # no activation after the last layer


def forward(spec: ModelSpec, params: Mapping[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Logits (N, num_outputs), float64: h_0 = flatten(x), h_l = act(h_{l-1} W_l + b_l), logits = h_{L-1} W_L + b_L."""
    return _forward_trace(spec, params, images)[0]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example softmax cross-entropy with integer labels: logsumexp(z) - z[label]."""
    top = np.max(logits, axis=1, keepdims=True)
    logsumexp = top[:, 0] + np.log(np.sum(np.exp(logits - top), axis=1))
    return logsumexp - logits[np.arange(len(labels)), labels]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - np.max(logits, axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _loss_logits_grads(spec: ModelSpec, params: Mapping[str, np.ndarray], images: np.ndarray,
                       labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, Params]:
    """Per-example losses, logits, and the gradients of the mean loss by explicit backpropagation."""
    labels = np.asarray(labels)
    logits, inputs, pre = _forward_trace(spec, params, images)
    _, df = activation(spec)
    dz = _softmax(logits)
    dz[np.arange(len(labels)), labels] -= 1.0
    dz /= len(labels)  # d(mean loss) / d(logits)
    grads: Params = {}
    for layer in range(spec.num_layers, 0, -1):
        grads[f"W{layer}"] = inputs[layer - 1].T @ dz
        grads[f"b{layer}"] = dz.sum(axis=0)
        if layer > 1:
            dz = (dz @ np.asarray(params[f"W{layer}"], np.float64).T) * df(pre[layer - 2])
    ordered = {name: grads[name] for name in spec.canonical_shapes()}
    return cross_entropy(logits, labels), logits, ordered


def loss_and_grads(spec: ModelSpec, params: Mapping[str, np.ndarray], images: np.ndarray,
                   labels: np.ndarray) -> tuple[float, Params]:
    """(mean loss over the batch's examples, float64 gradients of it in the canonical layout)."""
    losses, _, grads = _loss_logits_grads(spec, params, images, labels)
    return float(losses.mean()), grads


def evaluate(spec: ModelSpec, params: Mapping[str, np.ndarray], images: np.ndarray, labels: np.ndarray) -> Sums:
    """Sums over every example: cross-entropy, and correct = argmax(logits) == label (ties: lowest index)."""
    labels = np.asarray(labels)
    with np.errstate(all="ignore"):  # diverged parameters give NaN sums, not warnings
        logits = forward(spec, params, images)
        loss_sum = float(cross_entropy(logits, labels).sum())
    return Sums(loss_sum, int(np.sum(np.argmax(logits, axis=1) == labels)), len(labels))


# -------------------------------------------------------------------- training
def initial_slots(config: Config) -> Slots:
    """Fresh optimiser state (float64) for every canonical parameter of `config.spec`."""
    return {name: optimizers.initial_slots(config.optimizer, shape, np.float64)
            for name, shape in config.canonical_shapes().items()}


def train_step(config: Config, params: Mapping[str, np.ndarray], slots: Slots, images: np.ndarray,
               labels: np.ndarray, count: int, steps_per_epoch: int) -> tuple[Params, Slots, float, int]:
    """One update on one batch -> (params, slots, the batch's loss sum, its correct count).

    `count` is the number of updates made before this one in the whole run: it sets the
    learning rate (`schedules.learning_rate`) and Adam's bias correction.
    """
    losses, logits, grads = _loss_logits_grads(config.spec, params, images, labels)
    lr = schedules.learning_rate(config, steps_per_epoch, count)
    hyper = optimizers.Hyper(config.optimizer, config.momentum, config.weight_decay)
    new_params: Params = {}
    new_slots: Slots = {}
    for name, param in params.items():
        param = np.asarray(param, np.float64)
        delta, new_slots[name] = optimizers.update(hyper, grads[name], param, slots[name], count, lr,
                                                   optimizers.NUMPY_OPS)
        new_params[name] = param + delta
    correct = int(np.sum(np.argmax(logits, axis=1) == np.asarray(labels)))
    return new_params, new_slots, float(losses.sum()), correct


def train_epoch(config: Config, params: Mapping[str, np.ndarray], slots: Slots | None, images: np.ndarray,
                labels: np.ndarray, epoch: int, start_count: int) -> tuple[Params, Slots, Sums]:
    """Epoch `epoch` (0-based) of a run that has made `start_count` updates before it.

    Batches follow `batching.epoch_order(config.seed, epoch, layout, config.data_order)`: step s
    takes the indices [s * batch_size, (s + 1) * batch_size) of it that are not -1 (the padding of
    the short batch, which `data_order=batches` may place at any step). Returns float32
    parameters, float64 slots (None starts fresh ones), and the epoch's sums over examples;
    `first_nonfinite_step` is the run-wide index of the first update whose batch loss was
    NaN or infinite (-1 if none); that update is applied like any other.
    """
    labels = np.asarray(labels)
    layout = batching.make_layout(len(labels), config.batch_size, 0)
    batches = batching.step_batches(batching.epoch_order(config.seed, epoch, layout, config.data_order), layout)
    state = {name: np.asarray(value, np.float64) for name, value in params.items()}
    slots = initial_slots(config) if slots is None else slots
    loss_sum, correct, first_nonfinite = 0.0, 0, -1
    with np.errstate(all="ignore"):  # a diverging run is reported through first_nonfinite_step
        for step, idx in enumerate(batches):
            count = start_count + step
            state, slots, batch_loss, batch_correct = train_step(
                config, state, slots, images[idx], labels[idx], count, layout.steps_per_epoch)
            if first_nonfinite < 0 and not math.isfinite(batch_loss):
                first_nonfinite = count
            loss_sum += batch_loss
            correct += batch_correct
    new_params = {name: value.astype(np.float32) for name, value in state.items()}
    return new_params, slots, Sums(loss_sum, correct, layout.num_train, first_nonfinite)
