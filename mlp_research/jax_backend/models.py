"""The chapter's two models in Flax linen, generalised by `ModelSpec`.

`MLPScratch` follows the book's from-scratch code: parameters created one by one
with `self.param` (W ~ N(0, sigma), b = 0), a hand-written relu, and an input
reshaped to (-1, num_inputs). `MLP` is the concise version built from
`nn.Dense` layers with Flax's default initialisation. Both accept any depth,
activation and initialisation, so the chapter's exercises need no new code.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.layout import Layout, with_layout_constraint

from mlp_research.backends.base import check_canonical
from mlp_research.data import PIXEL_VALUES
from mlp_research.spec import ModelSpec

Array = jax.Array
Initializer = Callable[..., Array]


def relu(x: Array) -> Array:
    """The book's hand-written ReLU: max(X, 0)."""
    return jnp.maximum(x, 0)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "leaky_relu": jax.nn.leaky_relu,
    "elu": jax.nn.elu,
    "softplus": jax.nn.softplus,
    "identity": lambda x: x,
}


def kernel_init(spec: ModelSpec) -> Initializer | None:
    """The weight initialiser a spec asks for; None means the layer's own default."""
    init = spec.init
    if init == "default":
        return nn.initializers.normal(spec.sigma) if spec.model == "mlp_scratch" else None
    return {
        "normal": nn.initializers.normal(spec.sigma),
        "xavier": nn.initializers.xavier_uniform(),
        "xavier_normal": nn.initializers.xavier_normal(),
        "he": nn.initializers.he_normal(),
        "he_uniform": nn.initializers.he_uniform(),
        "lecun": nn.initializers.lecun_normal(),
        "zeros": nn.initializers.zeros_init(),
    }[init]


DotGeneral = Callable[..., Array]


def _standard_layout(a: Array) -> Array:
    """`a` stored row-major, as a real copy where `a` is a transpose: on CPUs only.

    XLA:CPU runs a bfloat16 matmul on its fast library kernel (YNNPACK, on AMX
    or AVX512-BF16 where the CPU has them) only when both operands are row-major
    and contract the left's last axis with the right's first. A transpose in
    XLA is a relabelled layout, so `x.T @ g` and `g @ w.T` fail that test and
    are computed in float32 by a slower path (~6x slower here). Copying the
    small transposed operand costs a few percent of the matmul. GPUs' matmul
    libraries take transposed operands at full speed, so the copy is CPU-only.
    """
    row_major = Layout(major_to_minor=tuple(range(a.ndim)))
    return jax.lax.platform_dependent(a, cpu=lambda v: with_layout_constraint(v, row_major), default=lambda v: v)


def _bf16_dot(a: Array, b: Array) -> Array:
    """a @ b for bfloat16 operands, the products summed in float32."""
    return jnp.dot(a, b, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _bfloat16_matmul(x: Array, w: Array, x_dtype: str) -> Array:
    return _bf16_dot(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))


def _bfloat16_matmul_fwd(x: Array, w: Array, x_dtype: str) -> tuple[Array, tuple[Array, Array]]:
    x, w = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    return _bf16_dot(x, w), (x, w)


def _bfloat16_matmul_bwd(x_dtype: str, saved: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    # The backward matmuls (2/3 of the FLOPs) in bfloat16 too: autodiff alone would multiply the
    # float32 gradient at full (or TF32) precision. Each is written as a plain row-major product
    # (`_standard_layout`), the form the CPU's bfloat16 kernels take; the unused input gradient of
    # the first layer is dropped by XLA. The weight gradient stays float32.
    x, w = saved
    g = g.astype(jnp.bfloat16)
    return _bf16_dot(g, _standard_layout(w.T)).astype(x_dtype), _bf16_weight_gradient(x, g)


def _bf16_weight_gradient(x: Array, g: Array) -> Array:
    """x.T @ g in bfloat16 with float32 products, as a row-major product (the fast kernel's form).

    One operand must be copied transposed. Where g is the narrower (the first layer's 784 inputs
    against 256 units, or the 10-class output layer), g.T is copied and (g.T @ x).T computed: a
    smaller copy, and the result's transpose is folded into the update that reads it. The barrier
    keeps XLA from folding that transpose into the dot, which its runtime refuses in bfloat16. GPUs
    take x.T @ g as it is.
    """
    if g.shape[-1] >= x.shape[-1]:
        return _bf16_dot(_standard_layout(x.T), g)
    return jax.lax.platform_dependent(
        x, g, cpu=lambda x, g: jax.lax.optimization_barrier(_bf16_dot(_standard_layout(g.T), x)).T,
        default=lambda x, g: _bf16_dot(x.T, g))


_bfloat16_matmul.defvjp(_bfloat16_matmul_fwd, _bfloat16_matmul_bwd)


def _bfloat16_dot_general(lhs: Array, rhs: Array, dimension_numbers, precision=None, preferred_element_type=None):
    """`lax.dot_general` for 2-D `x @ w` with bfloat16 operands and float32 accumulation, both ways."""
    del precision, preferred_element_type
    if not _is_matmul(lhs, rhs, dimension_numbers):
        raise NotImplementedError(f"bfloat16 matmul supports x @ w only, got dimension numbers {dimension_numbers}")
    return _bfloat16_matmul(lhs, rhs, str(lhs.dtype))


# Below this many output columns a weight gradient x.T @ g is computed as (g.T @ x).T. XLA:CPU hands
# the x.T @ g form (contracting the batch, dimension 0, of both operands) to Eigen, which is slow when
# g is narrow: for the 10-class output layer it took ~130 us per step, 9% of an epoch, against ~35 us
# as a standard-layout matmul (YNNPACK). The optimisation barriers keep XLA from folding the two
# transposes back into the slow form; they cost nothing on any device.
NARROW_OUTPUT = 16


def _is_matmul(lhs: Array, rhs: Array, dimension_numbers) -> bool:
    return lhs.ndim == 2 and rhs.ndim == 2 and tuple(map(tuple, dimension_numbers[0])) == ((1,), (0,))


def weight_gradient(x: Array, g: Array, precision: jax.lax.Precision | None = None) -> Array:
    """d(x @ w)/dw applied to the cotangent g: x.T @ g, in the form XLA runs fastest for g's width."""
    if g.shape[-1] >= NARROW_OUTPUT:
        return jnp.matmul(x.T, g, precision=precision)
    g_t = jax.lax.optimization_barrier(g.T)
    return jax.lax.optimization_barrier(jnp.matmul(g_t, x, precision=precision)).T


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _float32_matmul(x: Array, w: Array, precision: jax.lax.Precision | None) -> Array:
    return jnp.matmul(x, w, precision=precision)


def _float32_matmul_fwd(x: Array, w: Array, precision: jax.lax.Precision | None) -> tuple[Array, tuple[Array, Array]]:
    return jnp.matmul(x, w, precision=precision), (x, w)


def _float32_matmul_bwd(precision: jax.lax.Precision | None, saved: tuple[Array, Array], g: Array):
    x, w = saved  # the input's gradient is dropped by XLA where nothing uses it (the first layer)
    return jnp.matmul(g, w.T, precision=precision), weight_gradient(x, g, precision)


_float32_matmul.defvjp(_float32_matmul_fwd, _float32_matmul_bwd)


def make_dot_general(precision: str = "default") -> DotGeneral:
    """The matmul of `--matmul_precision`. Parameters, gradients and optimiser state stay float32."""
    if precision == "bfloat16":
        return _bfloat16_dot_general
    run_precision = {"default": None, "float32": jax.lax.Precision.HIGHEST,
                     "tensorfloat32": jax.lax.Precision.HIGH}[precision]

    def dot_general(lhs: Array, rhs: Array, dimension_numbers, precision=None, preferred_element_type=None) -> Array:
        """`lax.dot_general`, with `weight_gradient` as the backward pass of a 2-D `x @ w`."""
        # nn.Dense passes its own `precision` (None unless set): the run's applies then.
        precision = run_precision if precision is None else precision
        if preferred_element_type is not None or not _is_matmul(lhs, rhs, dimension_numbers):
            return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
        return _float32_matmul(lhs, rhs, precision)

    return dot_general


# 1/255 in float32: uint8 pixels times this, rounded to bfloat16, equal PIXEL_VALUES rounded to bfloat16
# for every one of the 256 values (tests/test_performance.py checks all of them on the device).
_PIXEL_SCALE = np.float32(1 / 255)


def model_inputs(x: Array, precision: str = "default") -> Array:
    """Images as the first matmul takes them.

    uint8 pixels (how the JAX core keeps the training data on the device) become
    float32 through the exact table `PIXEL_VALUES` (numpy's pixel / 255, bit for
    bit; XLA's own division is not correctly rounded). With bfloat16 matmuls the
    operand is rounded to bfloat16 anyway, and there a multiplication gives the
    same bfloat16 values as the table; it vectorises, where the table's per-element
    gather took a quarter of a bfloat16 step. Float images pass through.
    """
    if x.dtype != jnp.uint8:
        return x
    if precision == "bfloat16":
        return (x.astype(jnp.float32) * _PIXEL_SCALE).astype(jnp.bfloat16)
    return jnp.asarray(PIXEL_VALUES)[x]


class MLPScratch(nn.Module):
    """From-scratch MLP: explicit W1, b1, W2, b2, ... parameters."""

    spec: ModelSpec
    precision: str = "default"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        spec = self.spec
        act = relu if spec.activation == "relu" else ACTIVATIONS[spec.activation]
        w_init = kernel_init(spec)
        dot_general = make_dot_general(self.precision)
        shapes = spec.canonical_shapes()
        x = model_inputs(x, self.precision).reshape((-1, spec.num_inputs))
        for i in range(spec.num_layers):
            w = self.param(f"W{i + 1}", w_init, shapes[f"W{i + 1}"])
            b = self.param(f"b{i + 1}", nn.initializers.zeros_init(), shapes[f"b{i + 1}"])
            x = dot_general(x, w, (((1,), (0,)), ((), ()))) + b
            if i < spec.num_layers - 1:
                x = act(x)
        return x


class MLP(nn.Module):
    """Concise MLP: Dense -> activation -> ... -> Dense."""

    spec: ModelSpec
    precision: str = "default"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        spec = self.spec
        w_init = kernel_init(spec)
        extra = {"dot_general": make_dot_general(self.precision)}
        if w_init is not None:
            extra["kernel_init"] = w_init
        x = model_inputs(x, self.precision).reshape((x.shape[0], -1))
        for width in spec.num_hiddens:
            x = ACTIVATIONS[spec.activation](nn.Dense(width, **extra)(x))
        return nn.Dense(spec.num_outputs, **extra)(x)


def build_model(spec: ModelSpec, precision: str = "default") -> nn.Module:
    """The Flax module for a spec, its matmuls at `precision` (see `make_dot_general`)."""
    return (MLPScratch if spec.model == "mlp_scratch" else MLP)(spec, precision)


def to_canonical(spec: ModelSpec, params: Mapping) -> dict[str, np.ndarray]:
    """Flax parameters -> {'W1': (in, out), 'b1': (out,), ...} as numpy float32."""
    params = params.get("params", params)
    out: dict[str, np.ndarray] = {}
    for i in range(spec.num_layers):
        if spec.model == "mlp_scratch":
            w, b = params[f"W{i + 1}"], params[f"b{i + 1}"]
        else:
            layer = params[f"Dense_{i}"]
            w, b = layer["kernel"], layer["bias"]
        out[f"W{i + 1}"] = np.asarray(w, dtype=np.float32)
        out[f"b{i + 1}"] = np.asarray(b, dtype=np.float32)
    return out


def from_canonical(spec: ModelSpec, canonical: Mapping[str, np.ndarray]) -> dict:
    """The inverse of `to_canonical`; checked against the spec first (`check_canonical`: names, shapes, floats)."""
    canonical = check_canonical(spec, canonical)
    if spec.model == "mlp_scratch":
        return {name: jnp.asarray(canonical[name], jnp.float32) for name in spec.canonical_shapes()}
    return {
        f"Dense_{i}": {
            "kernel": jnp.asarray(canonical[f"W{i + 1}"], jnp.float32),
            "bias": jnp.asarray(canonical[f"b{i + 1}"], jnp.float32),
        }
        for i in range(spec.num_layers)
    }
