"""Tests of the Flax models, their initialisation and the canonical parameter layout."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlp_research.jax_backend import models as flax_mlp
from mlp_research.jax_backend.models import build_model, from_canonical, to_canonical
from mlp_research.spec import ACTIVATIONS, INITS, ModelSpec

MODELS = ("mlp_scratch", "mlp")
DEFAULT_PARAMS = 784 * 256 + 256 + 256 * 10 + 10  # 203,530


# XLA compiles each random initialiser once per shape (about a second each on a
# small CPU), so the tests that really initialise use the default widths (256,)
# and cache the result; other depths are checked with `jax.eval_shape` (no
# compilation) or with random canonical parameters loaded by `from_canonical`.
@functools.lru_cache(maxsize=None)
def _init_cached(spec: ModelSpec, seed: int):
    model = build_model(spec)
    return model, model.init(jax.random.PRNGKey(seed), jnp.zeros((2, 28, 28), jnp.float32))


def init_params(spec: ModelSpec, seed: int = 0):
    model, variables = _init_cached(spec, seed)
    return model, jax.tree_util.tree_map(lambda a: a, variables)  # a fresh container for each test


def abstract_params(spec: ModelSpec):
    """Parameter shapes of `spec` without running (or compiling) the initialisers."""
    model = build_model(spec)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((2, 28, 28), jnp.float32))


def random_canonical(spec: ModelSpec, seed: int = 0, w_std: float = 0.1, b_std: float = 0.1) -> dict:
    rng = np.random.default_rng(seed)
    return {
        name: rng.normal(0, w_std if name.startswith("W") else b_std, size=shape).astype(np.float32)
        for name, shape in spec.canonical_shapes().items()
    }


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def images(batch: int = 8, seed: int = 0) -> jnp.ndarray:
    return jax.random.uniform(jax.random.PRNGKey(seed), (batch, 28, 28), jnp.float32)


def shapes(tree) -> dict:
    return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


# ------------------------------------------------------------ parameter counts


def test_default_spec_counts_203530():
    assert DEFAULT_PARAMS == 203_530
    assert ModelSpec().num_params() == 203_530


@pytest.mark.parametrize("model_name", MODELS)
def test_default_model_has_203530_parameters(model_name):
    _, variables = init_params(ModelSpec(model=model_name))
    assert set(variables) == {"params"}
    assert count(variables["params"]) == 203_530


def test_scratch_parameter_names_and_shapes():
    _, variables = init_params(ModelSpec(model="mlp_scratch"))
    assert shapes(variables["params"]) == {"W1": (784, 256), "b1": (256,), "W2": (256, 10), "b2": (10,)}


def test_mlp_parameter_names_and_shapes():
    _, variables = init_params(ModelSpec(model="mlp"))
    assert shapes(variables["params"]) == {
        "Dense_0": {"kernel": (784, 256), "bias": (256,)},
        "Dense_1": {"kernel": (256, 10), "bias": (10,)},
    }


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize(
    "widths, expected",
    [
        ((512, 256), 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10),  # 535,818
        ((64, 32, 16), 784 * 64 + 64 + 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10),
        ((1,), 784 * 1 + 1 + 1 * 10 + 10),
    ],
)
def test_deeper_specs_count_right(model_name, widths, expected):
    spec = ModelSpec(model=model_name, num_hiddens=widths)
    assert spec.num_params() == expected
    assert spec.num_layers == len(widths) + 1
    params = abstract_params(spec)["params"]
    assert count(params) == expected
    sizes = (784, *widths, 10)
    canonical_shapes = spec.canonical_shapes()
    assert canonical_shapes == {
        name: shape
        for i in range(len(widths) + 1)
        for name, shape in ((f"W{i + 1}", (sizes[i], sizes[i + 1])), (f"b{i + 1}", (sizes[i + 1],)))
    }
    if model_name == "mlp":
        assert shapes(params) == {
            f"Dense_{i}": {"kernel": canonical_shapes[f"W{i + 1}"], "bias": canonical_shapes[f"b{i + 1}"]}
            for i in range(len(widths) + 1)
        }
    else:
        assert shapes(params) == canonical_shapes


# ------------------------------------------------------------------ activation


def test_handwritten_relu_matches_jax_relu():
    x = jax.random.normal(jax.random.PRNGKey(3), (1000,), jnp.float32)
    x = jnp.concatenate([x, jnp.zeros((10,)), -jnp.zeros((5,)), jnp.array([-1e30, 1e30, -1e-38])])
    assert bool((x < 0).any()) and bool((x > 0).any()) and bool((x == 0).any())
    got = flax_mlp.relu(x)
    want = jax.nn.relu(x)
    assert got.dtype == want.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert float(got.min()) == 0.0


# ------------------------------------------------------------- initialisation


@pytest.mark.parametrize("sigma", [0.01, 0.1])
def test_scratch_default_init_is_normal_sigma_with_zero_biases(sigma):
    spec = ModelSpec(model="mlp_scratch", sigma=sigma)
    _, variables = init_params(spec, seed=1)
    p = variables["params"]
    for name in ("W1", "W2"):
        w = np.asarray(p[name], np.float64)
        assert abs(w.std() - sigma) < 0.05 * sigma, (name, w.std())
        assert abs(w.mean()) < 0.1 * sigma, (name, w.mean())
    for name in ("b1", "b2"):
        assert not np.any(np.asarray(p[name]))


@pytest.mark.parametrize("model_name", MODELS)
def test_zeros_init_gives_zero_weights(model_name):
    spec = ModelSpec(model=model_name, init="zeros")
    model, variables = init_params(spec)
    canonical = to_canonical(spec, variables)
    for name, value in canonical.items():
        assert not np.any(value), name
    np.testing.assert_array_equal(np.asarray(model.apply(variables, images(3))), np.zeros((3, 10), np.float32))


def _expected_weight_std(init: str, model: str, fan_in: int, fan_out: int, sigma: float) -> float:
    if init == "default":
        init = "normal" if model == "mlp_scratch" else "lecun"  # Flax Dense default is LeCun normal
    return {
        "normal": sigma,
        "xavier": np.sqrt(2.0 / (fan_in + fan_out)),
        "xavier_normal": np.sqrt(2.0 / (fan_in + fan_out)),
        "he": np.sqrt(2.0 / fan_in),
        "he_uniform": np.sqrt(2.0 / fan_in),
        "lecun": np.sqrt(1.0 / fan_in),
        "zeros": 0.0,
    }[init]


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("init", INITS)
def test_each_init_builds_with_the_right_scale(model_name, init):
    spec = ModelSpec(model=model_name, init=init, sigma=0.05)
    model, variables = init_params(spec, seed=2)
    logits = model.apply(variables, images(5))
    assert logits.shape == (5, 10)
    assert bool(jnp.isfinite(logits).all())
    w1 = to_canonical(spec, variables)["W1"].astype(np.float64)  # 784 x 256 = 200,704 samples
    expected = _expected_weight_std(init, model_name, 784, 256, spec.sigma)
    if expected == 0:
        assert not np.any(w1)
    else:
        assert abs(w1.std() - expected) < 0.05 * expected, (init, w1.std(), expected)
    if init in ("xavier", "he_uniform"):  # uniform: bounded by sqrt(3) * std
        assert np.abs(w1).max() <= np.sqrt(3) * expected * (1 + 1e-6)


# Reference activations written independently of the library (NumPy, float64).
def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


REFERENCE_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    # jax.nn.gelu's default is the tanh approximation.
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    "silu": lambda x: x * _sigmoid(x),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "softplus": lambda x: np.logaddexp(0, x),
    "identity": lambda x: x,
}


def test_reference_covers_every_activation():
    assert set(REFERENCE_ACTIVATIONS) == set(ACTIVATIONS)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_builds_and_is_applied(model_name, activation):
    spec = ModelSpec(model=model_name, num_hiddens=(32, 16), activation=activation)
    model = build_model(spec)
    variables = {"params": from_canonical(spec, random_canonical(spec, seed=4, w_std=0.15))}
    x = images(6, seed=5) * 4 - 2  # pre-activations of both signs and order 1, so activations differ
    logits = np.asarray(model.apply(variables, x))
    assert logits.shape == (6, 10)
    assert np.isfinite(logits).all()
    p = {k: v.astype(np.float64) for k, v in to_canonical(spec, variables).items()}
    act = REFERENCE_ACTIVATIONS[activation]
    h = np.asarray(x, np.float64).reshape(6, 784)
    h = act(h @ p["W1"] + p["b1"])
    h = act(h @ p["W2"] + p["b2"])
    want = h @ p["W3"] + p["b3"]
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ inputs


@pytest.mark.parametrize("model_name", MODELS)
def test_flat_and_image_inputs_give_the_same_logits(model_name):
    spec = ModelSpec(model=model_name)
    model, variables = init_params(spec)
    x = images(7)
    a = model.apply(variables, x)
    b = model.apply(variables, x.reshape(7, 784))
    assert a.shape == b.shape == (7, 10)
    assert bool(jnp.isfinite(a).all())
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("model_name", MODELS)
def test_batch_of_one(model_name):
    model, variables = init_params(ModelSpec(model=model_name))
    assert model.apply(variables, images(1)).shape == (1, 10)
    assert model.apply(variables, images(1).reshape(1, 784)).shape == (1, 10)


# ---------------------------------------------------------------- canonical


@pytest.mark.parametrize("model_name", MODELS)
def test_canonical_round_trip_of_initialised_params(model_name):
    spec = ModelSpec(model=model_name, init="xavier")
    model, variables = init_params(spec, seed=6)
    canonical = to_canonical(spec, variables)
    assert list(canonical) == list(spec.canonical_shapes())
    for name, value in canonical.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.float32, name
        assert value.shape == spec.canonical_shapes()[name]
    # Accepts both the variables dict and the bare params.
    bare = to_canonical(spec, variables["params"])
    for name in canonical:
        np.testing.assert_array_equal(bare[name], canonical[name])
    restored = from_canonical(spec, canonical)
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(dict(variables["params"]))
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(variables["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = images(4)
    np.testing.assert_array_equal(
        np.asarray(model.apply({"params": restored}, x)), np.asarray(model.apply(variables, x))
    )


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("widths", [(256,), (64, 32)])
def test_canonical_round_trip_from_canonical_side(model_name, widths):
    spec = ModelSpec(model=model_name, num_hiddens=widths)
    canonical = random_canonical(spec, seed=1)
    params = from_canonical(spec, canonical)
    assert shapes(params) == shapes(abstract_params(spec)["params"])
    back = to_canonical(spec, {"params": params})
    assert list(back) == list(canonical)
    for name in canonical:
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], canonical[name])


@pytest.mark.parametrize("widths", [(256,), (64, 32)])
def test_scratch_and_mlp_agree_on_the_same_canonical_params(widths):
    scratch_spec = ModelSpec(model="mlp_scratch", num_hiddens=widths)
    mlp_spec = ModelSpec(model="mlp", num_hiddens=widths)
    canonical = random_canonical(scratch_spec, seed=7)  # non-zero biases exercise the bias layout too
    x = images(9, seed=8)
    a = np.asarray(build_model(scratch_spec).apply({"params": from_canonical(scratch_spec, canonical)}, x))
    b = np.asarray(build_model(mlp_spec).apply({"params": from_canonical(mlp_spec, canonical)}, x))
    assert a.shape == (9, 10)
    assert np.isfinite(a).all() and np.abs(a).max() > 0.1
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("model_name", MODELS)
def test_from_canonical_rejects_wrong_shape(model_name):
    spec = ModelSpec(model=model_name)
    canonical = {name: np.zeros(shape, np.float32) for name, shape in spec.canonical_shapes().items()}
    from_canonical(spec, canonical)  # the right shapes are accepted
    bad = dict(canonical, W1=np.zeros((256, 784), np.float32))  # transposed
    with pytest.raises(ValueError, match="W1"):
        from_canonical(spec, bad)
    bad = dict(canonical, b2=np.zeros((11,), np.float32))
    with pytest.raises(ValueError, match="b2"):
        from_canonical(spec, bad)
    deeper = ModelSpec(model=model_name, num_hiddens=(256, 128))
    with pytest.raises(ValueError, match="W2"):  # a one-hidden-layer checkpoint into a deeper spec
        from_canonical(deeper, canonical)


@pytest.mark.parametrize("model_name", MODELS)
def test_from_canonical_rejects_missing_parameter(model_name):
    spec = ModelSpec(model=model_name)
    canonical = {name: np.zeros(shape, np.float32) for name, shape in spec.canonical_shapes().items()}
    del canonical["b1"]
    with pytest.raises(ValueError, match="b1"):
        from_canonical(spec, canonical)
