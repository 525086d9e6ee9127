"""The chapter's two models in PyTorch, generalised by `ModelSpec`.

`MLPScratch` follows the book's torch code: parameters are `nn.Parameter`s made
one by one (W ~ N(0, sigma) via `torch.randn(...) * sigma`, b = 0), the ReLU is
hand-written as `torch.max(X, zeros)`, and the input is reshaped to
(-1, num_inputs). `mlp_concise` is the book's `nn.Sequential(nn.Flatten(),
nn.LazyLinear(h), nn.ReLU(), nn.LazyLinear(o))`, deepened by `num_hiddens`.

Activations and initialisers mirror `mlp_research.jax_backend.models`, so the
same spec means the same network in both frameworks, and parameters convert
to and from the canonical layout (`W1, b1, ...`, W shaped (fan_in, fan_out)).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from mlp_research.spec import ModelSpec

# Standard deviation of a standard normal truncated to [-2, 2]: dividing by it gives a
# truncated normal the variance that JAX's variance-scaling initialisers give theirs.
_TRUNCATED_STD = 0.87962566103423978


def relu(X: torch.Tensor) -> torch.Tensor:
    """The book's hand-written ReLU."""
    a = torch.zeros_like(X)
    return torch.max(X, a)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": lambda x: F.gelu(x, approximate="tanh"),  # jax.nn.gelu defaults to the tanh approximation
    "silu": F.silu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "elu": F.elu,
    "softplus": F.softplus,
    "identity": lambda x: x,
}


def activation_module(name: str) -> nn.Module:
    """The `nn.Module` form of an activation, for the concise `nn.Sequential`."""
    return {
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "gelu": lambda: nn.GELU(approximate="tanh"),
        "silu": nn.SiLU,
        "leaky_relu": lambda: nn.LeakyReLU(0.01),
        "elu": nn.ELU,
        "softplus": nn.Softplus,
        "identity": nn.Identity,
    }[name]()


@torch.no_grad()
def init_weight_(weight_out_in: torch.Tensor, spec: ModelSpec) -> None:
    """Fill a weight viewed as (fan_out, fan_in) -- torch's own convention -- as `spec.init` asks.

    Only called for explicit inits: "default" keeps each model's own initialisation.
    He and LeCun normal are truncated normals like Flax's (same variance, same shape).
    """
    fan_out, fan_in = weight_out_in.shape
    init = spec.init

    def truncated(variance: float) -> None:
        std = math.sqrt(variance) / _TRUNCATED_STD
        nn.init.trunc_normal_(weight_out_in, 0.0, std, -2 * std, 2 * std)

    if init == "normal":
        nn.init.normal_(weight_out_in, 0.0, spec.sigma)
    elif init == "xavier":
        nn.init.xavier_uniform_(weight_out_in)
    elif init == "xavier_normal":
        truncated(2.0 / (fan_in + fan_out))  # Flax's glorot_normal is truncated too
    elif init == "he":
        truncated(2.0 / fan_in)
    elif init == "he_uniform":
        nn.init.kaiming_uniform_(weight_out_in, nonlinearity="relu")  # U(+-sqrt(6 / fan_in))
    elif init == "lecun":
        truncated(1.0 / fan_in)
    elif init == "zeros":
        nn.init.zeros_(weight_out_in)
    else:
        raise ValueError(f"no explicit initialiser for {init!r}")


class MLPScratch(nn.Module):
    """From-scratch MLP: explicit `W1, b1, W2, b2, ...` parameters, W shaped (fan_in, fan_out)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.num_inputs = spec.num_inputs
        self.act = relu if spec.activation == "relu" else ACTIVATIONS[spec.activation]
        for name, shape in spec.canonical_shapes().items():
            if name.startswith("W"):
                param = nn.Parameter(torch.randn(*shape) * spec.sigma)
                if spec.init != "default":
                    init_weight_(param.data.T, spec)
            else:
                param = nn.Parameter(torch.zeros(*shape))
            setattr(self, name, param)
        self.layers = [(getattr(self, f"W{i + 1}"), getattr(self, f"b{i + 1}")) for i in range(spec.num_layers)]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = X.reshape((-1, self.num_inputs))
        last = len(self.layers) - 1
        for i, (W, b) in enumerate(self.layers):
            X = X @ W + b
            if i < last:
                X = self.act(X)
        return X


def mlp_concise(spec: ModelSpec) -> nn.Sequential:
    """The concise model: Flatten, then LazyLinear + activation per hidden layer, then LazyLinear.

    Lazy layers have no parameters until they see an input, so the model is
    materialised here with a dummy batch before initialisers or optimisers touch it.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    for width in spec.num_hiddens:
        layers += [nn.LazyLinear(width), activation_module(spec.activation)]
    layers.append(nn.LazyLinear(spec.num_outputs))
    net = nn.Sequential(*layers)
    with torch.no_grad():
        net(torch.zeros(1, spec.num_inputs))
    if spec.init != "default":  # "default" is torch's own: kaiming-uniform weights, uniform biases
        for linear in linears(net):
            init_weight_(linear.weight.data, spec)
            nn.init.zeros_(linear.bias.data)
    return net


def linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def build_model(spec: ModelSpec) -> nn.Module:
    """The torch module for a spec, on the CPU; uses the global torch RNG (seed it first)."""
    return MLPScratch(spec) if spec.model == "mlp_scratch" else mlp_concise(spec)


def canonical_tensors(model: nn.Module, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The model's parameters keyed by canonical name, each viewed in the canonical layout."""
    if isinstance(model, MLPScratch):
        return {name: getattr(model, name) for name in spec.canonical_shapes()}
    out: dict[str, torch.Tensor] = {}
    for i, linear in enumerate(linears(model)):
        out[f"W{i + 1}"] = linear.weight.T  # nn.Linear stores (out, in)
        out[f"b{i + 1}"] = linear.bias
    return out
