"""The chapter's two models in mxnet, generalised by `ModelSpec`.

`ScratchMLP` is the book's from-scratch code: `W = np.random.normal(scale=sigma,
size=(num_inputs, num_hiddens))`, `W.attach_grad()`, a hand-written relu
`np.maximum(X, 0)` and `X.reshape((-1, num_inputs))`. `GluonMLP` is the concise
code: `nn.Dense(h, activation="relu")` layers and `nn.Dense(o)`, in a
`HybridSequential` so it can be hybridized (compiled to a cached graph).
Both map to and from the canonical layout (W (fan_in, fan_out), b (fan_out,)).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from mlp_research.spec import ModelSpec
from mlp_research_mxnet.framework import mxnet

GELU_C = math.sqrt(2 / math.pi)
# Dense's own fused activations (mxnet's names); the rest are separate blocks.
DENSE_ACTIVATIONS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softplus": "softrelu"}


def gelu_tanh(F: Any, x: Any) -> Any:
    """GELU with the tanh approximation (jax.nn.gelu's default; mxnet's own GELU is the erf form)."""
    return 0.5 * x * (1 + F.np.tanh(GELU_C * (x + 0.044715 * x * x * x)))


def activation_fn(name: str) -> Callable[[Any], Any]:
    """The scratch model's activation on mxnet.np arrays, matching jax.nn's definitions."""
    mx = mxnet()
    np_, npx = mx.np, mx.npx
    return {
        "relu": lambda x: np_.maximum(x, 0),  # the book's hand-written relu
        "sigmoid": npx.sigmoid,
        "tanh": np_.tanh,
        "gelu": lambda x: gelu_tanh(mx, x),
        "silu": lambda x: x * npx.sigmoid(x),
        "leaky_relu": lambda x: npx.leaky_relu(x, act_type="leaky", slope=0.01),
        # expm1 of min(x, 0): the unused branch must not overflow (its gradient would be inf * 0).
        "elu": lambda x: np_.where(x > 0, x, np_.expm1(np_.minimum(x, 0))),
        "softplus": lambda x: npx.activation(x, act_type="softrelu"),
        "identity": lambda x: x,
    }[name]


def init_weight(spec: ModelSpec, shape: tuple[int, int]) -> Any:
    """A canonical-layout weight drawn from mxnet's RNG as the spec's init names it.

    xavier_normal, he and lecun are normals truncated at two standard deviations
    and rescaled to the target variance (docs/SPECIFICATION.md); the others as written.
    """
    np_ = mxnet().np
    fan_in, fan_out = shape  # canonical (fan_in, fan_out)
    init = spec.init
    if init in ("default", "normal"):
        return np_.random.normal(scale=spec.sigma, size=shape)
    if init == "zeros":
        return np_.zeros(shape)
    variance = {"xavier": 2 / (fan_in + fan_out), "xavier_normal": 2 / (fan_in + fan_out), "he": 2 / fan_in,
                "he_uniform": 2 / fan_in, "lecun": 1 / fan_in}[init]
    if init in ("xavier", "he_uniform"):
        return np_.random.uniform(-math.sqrt(3 * variance), math.sqrt(3 * variance), size=shape)
    return truncated_normal(math.sqrt(variance) / TRUNCATED_NORMAL_STD, shape)


# The standard deviation of N(0, 1) truncated to [-2, 2]: dividing by it restores the target variance.
TRUNCATED_NORMAL_STD = 0.87962566103423978
TRUNCATED_INITS = ("xavier_normal", "he", "lecun")


def truncated_normal(scale: float, shape: tuple[int, ...]) -> Any:
    """N(0, scale^2) conditioned on |x| < 2 scale, by redrawing the samples outside (mxnet's RNG)."""
    np_ = mxnet().np
    z = np_.random.normal(size=shape)
    outside = np_.abs(z) >= 2.0
    while bool(outside.any()):
        z = np_.where(outside, np_.random.normal(size=shape), z)
        outside = np_.abs(z) >= 2.0
    return z * scale


class ScratchMLP:
    """Hand-written parameters with attached gradients, as the book's scratch model."""

    def __init__(self, spec: ModelSpec):
        np_ = mxnet().np
        self.spec = spec
        self.act = activation_fn(spec.activation)
        self.params: dict[str, Any] = {}
        for name, shape in spec.canonical_shapes().items():
            self.params[name] = init_weight(spec, shape) if name.startswith("W") else np_.zeros(shape)
        for p in self.params.values():
            p.attach_grad()

    def __call__(self, X: Any) -> Any:
        X = X.reshape((-1, self.spec.num_inputs))
        for i in range(1, self.spec.num_layers + 1):
            X = mxnet().np.dot(X, self.params[f"W{i}"]) + self.params[f"b{i}"]
            if i < self.spec.num_layers:
                X = self.act(X)
        return X

    def grads(self) -> dict[str, Any]:
        return {k: p.grad for k, p in self.params.items()}

    def state_params(self) -> dict[str, Any]:
        """The arrays the optimiser updates in place, by state-dict name."""
        return self.params

    def to_canonical(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, np.float32) for k, v in params.items()}

    def from_canonical(self, canonical: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.asarray(canonical[k], np.float32) for k in self.spec.canonical_shapes()}


def _initializer(spec: ModelSpec) -> Any:
    """mxnet's initializer for the spec; `default` is gluon's own (`net.initialize()`: Uniform(0.07)).

    Gluon weights are (fan_out, fan_in); mxnet's Xavier reads the fans that way round.
    For Xavier, a uniform U(-s, s) with s = sqrt(magnitude / fan) has variance magnitude / (3 fan).
    """
    init = mxnet().init
    if spec.init in TRUNCATED_INITS:
        return init.Zero()  # drawn afterwards by `init_weight` (mxnet's own normals are not truncated)
    return {
        "default": init.Uniform(),
        "normal": init.Normal(spec.sigma),
        "xavier": init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3),
        "he_uniform": init.Xavier(rnd_type="uniform", factor_type="in", magnitude=6),
        "zeros": init.Zero(),
    }[spec.init]


def _activation_block(name: str) -> Any:
    """A gluon block for activations `nn.Dense(activation=...)` cannot fuse."""
    mx = mxnet()
    nn = mx.gluon.nn
    return {"gelu": lambda: nn.HybridLambda(gelu_tanh), "silu": lambda: nn.Swish(beta=1.0),
            "leaky_relu": lambda: nn.LeakyReLU(0.01), "elu": lambda: nn.ELU(alpha=1.0)}[name]()


class GluonMLP:
    """The concise model: `nn.Dense(h, activation=...)` layers then `nn.Dense(o)`, hybridized."""

    def __init__(self, spec: ModelSpec):
        nn = mxnet().gluon.nn
        self.spec = spec
        self.net = nn.HybridSequential()
        self.dense = []
        for width in spec.num_hiddens:
            fused = DENSE_ACTIVATIONS.get(spec.activation)
            layer = nn.Dense(width, activation=fused, in_units=0)
            self.dense.append(layer)
            self.net.add(layer)
            if fused is None and spec.activation != "identity":
                self.net.add(_activation_block(spec.activation))
        out = nn.Dense(spec.num_outputs)
        self.dense.append(out)
        self.net.add(out)
        self.net.initialize(_initializer(spec))
        self.net(mxnet().np.zeros((1, spec.num_inputs)))  # materialise the deferred shapes
        if spec.init in TRUNCATED_INITS:
            for layer in self.dense:  # gluon's weight is (fan_out, fan_in)
                layer.weight.set_data(init_weight(spec, layer.weight.shape[::-1]).T)
        self.net.hybridize(static_alloc=True, static_shape=True)

    def __call__(self, X: Any) -> Any:
        return self.net(X)  # Dense flattens its input itself (flatten=True)

    def state_params(self) -> dict[str, Any]:
        return self._per_parameter(lambda parameter: parameter.data())

    def grads(self) -> dict[str, Any]:
        return self._per_parameter(lambda parameter: parameter.grad())

    def _per_parameter(self, get: Any) -> dict[str, Any]:
        out = {}
        for i, layer in enumerate(self.dense):
            out[f"dense{i}_weight"] = get(layer.weight)
            out[f"dense{i}_bias"] = get(layer.bias)
        return out

    def to_canonical(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for i in range(self.spec.num_layers):
            out[f"W{i + 1}"] = np.ascontiguousarray(np.asarray(params[f"dense{i}_weight"], np.float32).T)
            out[f"b{i + 1}"] = np.asarray(params[f"dense{i}_bias"], np.float32)
        return out

    def from_canonical(self, canonical: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for i in range(self.spec.num_layers):
            out[f"dense{i}_weight"] = np.ascontiguousarray(np.asarray(canonical[f"W{i + 1}"], np.float32).T)
            out[f"dense{i}_bias"] = np.asarray(canonical[f"b{i + 1}"], np.float32)
        return out


def build_model(spec: ModelSpec) -> ScratchMLP | GluonMLP:
    return ScratchMLP(spec) if spec.model == "mlp_scratch" else GluonMLP(spec)
