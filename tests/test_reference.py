"""The executable specification (`mlp_research.testing.reference`) against the JAX core.

docs/SPECIFICATION.md states the mathematics; the reference is that statement in
numpy; these tests fail as soon as either parts from what the core computes:
activations and their derivatives, the forward pass, gradients, initial
distributions, the learning-rate schedules, the optimiser rules, and whole
training epochs (data order, short last batch, metric sums).

The core's models run with matmul precision "float32" here rather than the
platform default, which is lower (TF32) on recent GPUs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from mlp_research import batching, optimizers, schedules
from mlp_research.backends import registry
from mlp_research.data import Split, Splits, load_splits
from mlp_research.jax_backend import models, optim, step
from mlp_research.spec import ACTIVATIONS, INITS, MODELS, ModelSpec
from mlp_research.testing import reference

OPTIMIZERS = optimizers.SUPPORTED

WIDTHS = ((16,), (16, 16))


def test_reference_imports_no_framework():
    frameworks = ("jax", "flax", "optax", "torch", "tensorflow", "mxnet")
    code = ("import sys, mlp_research.testing.reference; "
            f"bad = [m for m in sys.modules if m.split('.')[0] in {frameworks!r}]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------- activations


def _grid() -> np.ndarray:
    dense = np.linspace(-12, 12, 2401, dtype=np.float32)
    edges = [0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 20, -20, 50, -50, 100, -100, 1e4, -1e4]
    return np.concatenate([dense, np.array(edges, np.float32)])


def _compiled(fn, *args):
    """`jax.jit(fn)(*args)` with XLA's backend optimisations off: these one-off programs compile
    several times faster so (the values are the same up to float32 rounding)."""
    return jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})(*args)


@functools.lru_cache(maxsize=None)
def _jax_activations() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each activation of the core and the scratch model's relu on `_grid()`: values and derivatives."""
    functions = {**models.ACTIVATIONS, "scratch_relu": models.relu}

    def evaluate(x):
        return {name: (f(x), jax.vmap(jax.grad(f))(x)) for name, f in functions.items()}

    return jax.tree.map(np.asarray, _compiled(evaluate, jnp.asarray(_grid())))


def test_activation_names_match_the_spec_and_the_core():
    assert set(reference.ACTIVATIONS) == set(ACTIVATIONS) == set(models.ACTIVATIONS)


def _assert_close(x: np.ndarray, got: np.ndarray, want: np.ndarray, atol: np.ndarray, what: str) -> None:
    bad = ~(np.abs(got - want) <= atol + 2e-6 * np.abs(want))
    assert not bad.any(), f"{what} differs at x={x[bad][:5]}: core {got[bad][:5]}, reference {want[bad][:5]}"


@pytest.mark.parametrize("name", [*ACTIVATIONS, "scratch_relu"])
def test_activation_and_derivative_match_jax(name):
    f, df = reference.SCRATCH_RELU if name == "scratch_relu" else reference.ACTIVATIONS[name]
    x = _grid()
    value, grad = _jax_activations()[name]
    x64 = x.astype(np.float64)
    # float32 against float64. tanh and exp round to about 1e-7 near +-1; gelu multiplies that
    # by |x| in its value and by ~|x|^3 in its derivative, hence tolerances growing with |x|.
    scale = np.minimum(1 + np.abs(x64), 16)
    _assert_close(x, value, f(x64), atol=5e-7 * scale, what="value")
    _assert_close(x, grad, df(x64), atol=5e-7 * scale**3, what="derivative")
    zero = x == 0  # +0 and -0: the derivative there is stated exactly
    np.testing.assert_array_equal(grad[zero], df(x64[zero]))


def test_relu_derivative_at_zero_is_stated_per_model():
    assert reference.ACTIVATIONS["relu"][1](np.zeros(1))[0] == reference.RELU_GRAD_AT_ZERO
    assert reference.SCRATCH_RELU[1](np.zeros(1))[0] == reference.SCRATCH_RELU_GRAD_AT_ZERO
    assert reference.activation(ModelSpec(model="mlp_scratch")) is reference.SCRATCH_RELU
    assert reference.activation(ModelSpec(model="mlp")) is reference.ACTIVATIONS["relu"]
    assert float(jax.grad(models.relu)(0.0)) == reference.SCRATCH_RELU_GRAD_AT_ZERO
    assert float(jax.grad(jax.nn.relu)(0.0)) == reference.RELU_GRAD_AT_ZERO


# ---------------------------------------------------------- forward, gradients


def _random_params(spec: ModelSpec, seed: int, bias_std: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = reference.init_params(dataclasses.replace(spec, init="he"), rng)
    for name, value in params.items():
        if name.startswith("b"):
            params[name] = (bias_std * rng.standard_normal(value.shape)).astype(np.float32)
    return params


def _images(n: int, seed: int) -> np.ndarray:
    images = np.random.default_rng(seed).uniform(0, 1, (n, 28, 28)).astype(np.float32)
    images[0] = 0.0  # an all-black image: its first pre-activations are the biases exactly
    return images


def _case(model: str, widths: tuple[int, ...], bias_std: float = 0.1):
    """Canonical parameters, images and labels of one comparison (the same for every activation)."""
    spec = ModelSpec(model=model, num_hiddens=widths)
    return _random_params(spec, len(widths), bias_std), _images(12, seed=3), np.arange(12, dtype=np.int32) % 10


@functools.lru_cache(maxsize=None)
def _core_logits_and_grads(model: str, widths: tuple[int, ...], activations: tuple[str, ...],
                           bias_std: float = 0.1):
    """{activation: (logits, canonical gradients of the mean loss)} from the Flax model and the core's loss."""
    params, images, labels = _case(model, widths, bias_std)
    specs = {a: ModelSpec(model=model, num_hiddens=widths, activation=a) for a in activations}
    weights = jnp.ones(len(labels), jnp.float32)

    def evaluate(flax_params, x, y):
        out = {}
        for name, spec in specs.items():
            apply = models.build_model(spec, "float32").apply
            grads = jax.grad(lambda p, apply=apply: step.weighted_loss(apply, p, x, y, weights)[0] / len(labels))(
                flax_params)
            out[name] = (apply({"params": flax_params}, x), grads)
        return out

    flax_params = models.from_canonical(specs[activations[0]], params)
    out = _compiled(evaluate, flax_params, jnp.asarray(images), jnp.asarray(labels))
    return {name: (np.asarray(logits), models.to_canonical(specs[name], grads))
            for name, (logits, grads) in out.items()}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("widths", WIDTHS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_and_gradients_match_the_core(model, widths, activation):
    spec = ModelSpec(model=model, num_hiddens=widths, activation=activation)
    params, images, labels = _case(model, widths)
    logits, grads = _core_logits_and_grads(model, widths, tuple(ACTIVATIONS))[activation]
    np.testing.assert_allclose(logits, reference.forward(spec, params, images), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reference.forward(spec, params, images.reshape(12, 784)),
                               reference.forward(spec, params, images))
    loss, want = reference.loss_and_grads(spec, params, images, labels)
    assert math.isclose(loss, reference.cross_entropy(logits.astype(np.float64), labels).mean(), rel_tol=1e-5)
    assert list(want) == list(spec.canonical_shapes())
    for name in want:
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_relu_gradient_at_exactly_zero_pre_activations():
    # Zero biases and an all-black image make every pre-activation of that image exactly 0, so
    # the bias gradients depend on relu'(0), which the two models define differently.
    got = {}
    for model in MODELS:
        spec = ModelSpec(model=model, num_hiddens=WIDTHS[1], activation="relu")
        params, images, labels = _case(model, WIDTHS[1], bias_std=0.0)
        _, got[model] = _core_logits_and_grads(model, WIDTHS[1], ("relu",), 0.0)["relu"]
        _, want = reference.loss_and_grads(spec, params, images, labels)
        for name in want:
            np.testing.assert_allclose(got[model][name], want[name], rtol=1e-4, atol=1e-6, err_msg=f"{model} {name}")
    assert not np.allclose(got["mlp_scratch"]["b1"], got["mlp"]["b1"], rtol=1e-3, atol=0)


def test_ties_in_accuracy_go_to_the_lowest_class():
    spec = ModelSpec(model="mlp", num_hiddens=(8,))
    zeros = {name: np.zeros(shape, np.float32) for name, shape in spec.canonical_shapes().items()}
    images, labels = _images(20, seed=6), np.concatenate([np.zeros(4), np.arange(16) % 10]).astype(np.int32)
    counts = np.bincount(labels, minlength=10)
    assert counts[0] > counts[1:].max()  # so a tie broken towards any other class is caught
    totals = step.make_evaluate(models.build_model(spec).apply)(
        models.from_canonical(spec, zeros), *batching.pad_eval(images, labels, 8))
    sums = reference.evaluate(spec, zeros, images, labels)
    assert sums.correct == int(totals.correct) == int(np.sum(labels == 0))
    assert sums.count == int(totals.count) == 20
    assert math.isclose(sums.loss_sum, float(totals.loss_sum), rel_tol=1e-6)
    assert math.isclose(sums.loss_sum, 20 * math.log(10), rel_tol=1e-12)


# -------------------------------------------------------------- initialisation


def test_truncated_normal_constant_is_the_std_of_a_standard_normal_truncated_at_2():
    c = reference.TRUNCATION
    density = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(c / math.sqrt(2))
    assert math.isclose(reference.TRUNCATED_NORMAL_STD, math.sqrt(1 - 2 * c * density / mass), rel_tol=1e-14)


def _ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(a.ravel()), np.sort(b.ravel())
    points = np.concatenate([a, b])
    gap = np.searchsorted(a, points, side="right") / a.size - np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(gap)))


def _check_sample(sample: np.ndarray, mean: float, std: float, bound: float, label: str) -> None:
    n = sample.size
    x = sample.astype(np.float64)
    if std == 0:
        assert not np.any(x), label
        return
    assert abs(x.mean() - mean) <= 6 * std / math.sqrt(n), (label, x.mean())
    assert abs(x.std() / std - 1) <= 6 / math.sqrt(2 * n), (label, x.std(), std)
    assert np.abs(x).max() <= bound * (1 + 1e-6), (label, np.abs(x).max(), bound)
    if n >= 10_000:  # the tails reach the stated bound (or pass 3 std when unbounded)
        assert np.abs(x).max() >= (0.99 * bound if math.isfinite(bound) else 3 * std), label


def _init_spec(model: str, init: str) -> ModelSpec:
    return ModelSpec(model=model, num_hiddens=(64,), init=init, sigma=0.05)


@functools.lru_cache(maxsize=None)
def _flax_initial_params() -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Canonical initial parameters of the Flax models for every (model, init), in one compiled call."""
    specs = {(model, init): _init_spec(model, init) for model in MODELS for init in INITS}

    def init_all(key):
        images = jnp.zeros((1, 784), jnp.float32)
        return {f"{m}/{i}": models.build_model(s).init(key, images) for (m, i), s in specs.items()}

    out = _compiled(init_all, jax.random.PRNGKey(11))
    return {key: models.to_canonical(spec, out["/".join(key)]) for key, spec in specs.items()}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("init", INITS)
def test_initial_distributions_match_flax(model, init):
    spec = _init_spec(model, init)
    flax = _flax_initial_params()[model, init]
    ours = reference.init_params(spec, np.random.default_rng(11))
    stats = reference.init_statistics(spec)
    assert list(stats) == list(ours) == list(flax) == list(spec.canonical_shapes())
    for name, (mean, std, bound) in stats.items():
        assert ours[name].dtype == np.float32 and ours[name].shape == flax[name].shape
        _check_sample(flax[name], mean, std, bound, f"flax {name}")
        _check_sample(ours[name], mean, std, bound, f"reference {name}")
        if std > 0:  # same distribution, not only the same moments (alpha ~ 1e-4)
            assert _ks_distance(flax[name], ours[name]) <= 2.2 * math.sqrt(2 / flax[name].size), name


# ------------------------------------------------ learning rate and optimisers


SCHEDULE_CASES = [("constant", 2, 5, 0.0), ("cosine", 3, 7, 0.0), ("cosine", 1, 1, 0.0),
                  ("warmup_cosine", 3, 7, 0.0), ("warmup_cosine", 3, 7, 0.5), ("warmup_cosine", 2, 5, 0.5),
                  ("warmup_cosine", 2, 5, 1.3), ("warmup_cosine", 2, 5, 2.0), ("warmup_cosine", 1, 4, 3.0)]


@pytest.mark.parametrize("schedule,max_epochs,steps,warmup_epochs", SCHEDULE_CASES)
def test_learning_rate_matches_optax(schedule, max_epochs, steps, warmup_epochs):
    config = tiny_config(schedule=schedule, max_epochs=max_epochs, warmup_epochs=warmup_epochs, lr=0.3)
    total, warmup = max_epochs * steps, round(warmup_epochs * steps)  # round: halves to even
    if schedule == "constant":
        optax_schedule = optax.constant_schedule(0.3)
    elif schedule == "cosine":
        optax_schedule = optax.cosine_decay_schedule(0.3, total)
    else:
        optax_schedule = optax.warmup_cosine_decay_schedule(0.0, 0.3, warmup, max(total, warmup + 1))
    assert schedules.warmup_steps(config, steps) == (warmup if schedule == "warmup_cosine" else 0)
    core = optim.learning_rate(config, steps)  # what the JAX backend hands optax
    counts = np.arange(total + 4)  # past the end too, where optax's formulas still apply
    ours = schedules.learning_rate(config, steps, counts)
    for count in counts:
        want = float(optax_schedule(count))
        assert math.isclose(ours[count], want, rel_tol=1e-6, abs_tol=1e-7), (count, ours[count], want)
        assert schedules.learning_rate(config, steps, int(count)) == ours[count]
        if count <= total:  # a run makes `total` updates; the core's table ends there
            got = float(core(jnp.int32(count))) if callable(core) else core
            assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-7), (count, got, want)
    np.testing.assert_array_equal(schedules.rate_table(config, steps, 0.3), ours[:total + 1].astype(np.float32))


def _optax_slots(state) -> dict[str, list]:
    """optax's per-parameter state by field name (mu, nu, trace, sum_of_squares) from a state tree."""
    found: dict[str, list] = {}

    def walk(node):
        if hasattr(node, "_fields"):
            for field in node._fields:
                value = getattr(node, field)
                if isinstance(value, dict):
                    found.setdefault(field, []).append(value)
                else:
                    walk(value)
        elif isinstance(node, (tuple, list)):
            for child in node:
                walk(child)

    walk(state)
    return found


@functools.lru_cache(maxsize=None)
def _update_trajectories(name: str, weight_decay: float):
    """Eight updates of three parameters by the core's optax transformation and by `optimizers.update`.

    Returns per step (optax's updates, optax's slots, our deltas, our slots), then both final
    parameters. A cosine over 6 steps is run for 8: past its end the rate is 0.
    """
    steps_per_epoch = 3
    config = tiny_config(optimizer=name, weight_decay=weight_decay, lr=0.05, momentum=0.8, schedule="cosine",
                         max_epochs=2)
    tx, hyper = optim.make_optimizer(config, steps_per_epoch), optimizers.Hyper(name, config.momentum, weight_decay)
    rng = np.random.default_rng(12)
    # "b" starts at zero and "z" never gets a gradient: lamb's zero-norm cases.
    params = {"W": rng.standard_normal((5, 3)).astype(np.float32), "b": np.zeros(3, np.float32),
              "z": np.zeros(2, np.float32)}
    jax_params = jax.tree.map(jnp.asarray, params)
    state = tx.init(jax_params)
    ours = {k: v.astype(np.float64) for k, v in params.items()}
    slots = {k: optimizers.initial_slots(name, v.shape, np.float64) for k, v in params.items()}
    steps = []
    for count in range(8):
        grads = {k: v * 0 if k == "z" else rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state, jax_params)
        jax_params = optax.apply_updates(jax_params, updates)
        lr = schedules.learning_rate(config, steps_per_epoch, count)
        deltas = {}
        for k in params:
            deltas[k], slots[k] = optimizers.update(hyper, grads[k].astype(np.float64), ours[k], slots[k], count,
                                                    lr, optimizers.NUMPY_OPS)
            ours[k] = ours[k] + deltas[k]
        steps.append((jax.tree.map(np.asarray, updates), jax.tree.map(np.asarray, _optax_slots(state)), deltas,
                      dict(slots)))
    return steps, jax.tree.map(np.asarray, jax_params), ours


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.02])
def test_update_rules_match_optax(name, weight_decay):
    steps, jax_params, ours = _update_trajectories(name, weight_decay)
    for count, (updates, _, deltas, _) in enumerate(steps):
        for k, delta in deltas.items():
            # optax keeps Adam's bias correction 1 - b2^k in float32: ~1e-5 relative at small k.
            np.testing.assert_allclose(updates[k], delta, rtol=3e-5, atol=1e-7, err_msg=f"step {count} {k}")
    for k, value in ours.items():
        np.testing.assert_allclose(jax_params[k], value, rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.02])
def test_optimizer_state_matches_optax(name, weight_decay):
    """The slots are optax's state by name and value, so checkpoints move between backends."""
    steps, _, _ = _update_trajectories(name, weight_decay)
    for count, (_, optax_slots, _, slots) in enumerate(steps):
        assert sorted(optax_slots) == sorted(optimizers.STATE_SLOTS[name])
        for slot, (tree,) in optax_slots.items():
            for k in slots:
                np.testing.assert_allclose(tree[k], slots[k][slot], rtol=3e-5, atol=1e-7,
                                           err_msg=f"step {count} {k} {slot}")


def test_initial_slots_match_optax_init():
    for name in OPTIMIZERS:
        state = optim.make_optimizer(tiny_config(optimizer=name, weight_decay=0.01), 4).init({"W": jnp.zeros((2, 3))})
        found = _optax_slots(state)
        assert sorted(found) == sorted(optimizers.STATE_SLOTS[name]), name
        for slot, (tree,) in found.items():
            np.testing.assert_array_equal(np.asarray(tree["W"]), optimizers.initial_slots(name, (2, 3))[slot])


# ------------------------------------------------------------- training epochs


TRAINING_CASES = [  # every optimiser; weight decay, schedules, depths, activations and inits spread over them
    dict(optimizer="sgd", model="mlp_scratch", activation="relu", init="default", lr=0.1),
    dict(optimizer="momentum", model="mlp", num_hiddens="16,8", activation="tanh", init="xavier",
         schedule="cosine", weight_decay=1e-2, lr=0.05, steps_per_chunk=3),
    dict(optimizer="nesterov", model="mlp_scratch", activation="gelu", init="he", schedule="warmup_cosine",
         warmup_epochs=0.5, lr=0.05),
    dict(optimizer="adam", model="mlp", activation="silu", init="default", lr=2e-3),
    dict(optimizer="adamw", model="mlp_scratch", num_hiddens="16,8", activation="elu", init="lecun",
         schedule="cosine", weight_decay=0.05, lr=3e-3, steps_per_chunk=3),
    dict(optimizer="rmsprop", model="mlp", activation="leaky_relu", init="he_uniform", schedule="warmup_cosine",
         warmup_epochs=1.0, momentum=0.5, lr=1e-3),
    dict(optimizer="adagrad", model="mlp_scratch", activation="softplus", init="xavier_normal",
         weight_decay=1e-2, lr=0.05),
    dict(optimizer="lamb", model="mlp", activation="sigmoid", init="default", schedule="cosine",
         weight_decay=0.05, lr=0.01),
]


def _training_config(**overrides):
    # 200 examples in batches of 64: three full batches and a short one of 8.
    values = dict(synthetic_train_size=200, synthetic_test_size=30, batch_size=64, eval_batch_size=16,
                  max_epochs=2, num_hiddens="16", matmul_precision="float32")
    return tiny_config(**{**values, **overrides})


def _train_both(config, splits, epochs: int = 2):
    """Train the core and the reference from the same initial parameters; yield both after each epoch."""
    trainer = registry.load("jax").trainer(config, splits)
    params = reference.init_params(config.spec, np.random.default_rng(config.seed))
    trainer.set_params(params)
    slots, steps = None, trainer.layout.steps_per_epoch
    assert steps == 4
    for epoch in range(epochs):
        trainer.start_epoch(epoch)
        for chunk in range(trainer.layout.chunks_per_epoch):
            trainer.train_chunk(chunk)
        params, slots, sums = reference.train_epoch(config, params, slots, splits.train.images,
                                                    splits.train.labels, epoch, epoch * steps)
        yield trainer, trainer.epoch_sums(), sums, trainer.get_params(), params


@pytest.mark.parametrize("case", TRAINING_CASES, ids=[c["optimizer"] for c in TRAINING_CASES])
def test_training_epochs_match_the_core(case):
    config = _training_config(**case)
    splits = load_splits(config)
    epochs = list(_train_both(config, splits))
    trainer = epochs[-1][0]
    for _, got, want, got_params, want_params in epochs:
        assert got.count == want.count == 200
        assert got.correct == want.correct
        assert got.first_nonfinite_step == want.first_nonfinite_step == -1
        assert math.isclose(got.loss_sum, want.loss_sum, rel_tol=1e-5)
        for name, value in want_params.items():
            np.testing.assert_allclose(got_params[name], value, rtol=0, atol=1e-4, err_msg=name)
    got, want = trainer.evaluate(splits.test.images, splits.test.labels), reference.evaluate(
        config.spec, want_params, splits.test.images, splits.test.labels)
    assert got.count == want.count == 30
    assert got.correct == want.correct
    assert math.isclose(got.loss_sum, want.loss_sum, rel_tol=1e-5)


def test_first_nonfinite_step_is_the_run_wide_index_of_the_first_bad_batch():
    config = _training_config(optimizer="sgd", model="mlp_scratch")
    splits = load_splits(config)
    images, bad = splits.train.images.copy(), 37
    images[bad, 5, 5] = np.nan  # from that batch on, the loss and then every parameter is NaN
    train = Split("train", images, splits.train.labels)
    splits = Splits(train=train, eval=splits.eval, test=splits.test, source="synthetic with a NaN pixel")
    layout = batching.make_layout(200, 64, 0)
    position = int(np.flatnonzero(batching.epoch_order(config.seed, 0, layout) == bad)[0])
    expected = [position // 64, layout.steps_per_epoch]  # epoch 1 fails at its first step
    assert 0 < expected[0] < layout.steps_per_epoch - 1  # neither the first nor the short last batch
    for epoch, (_, got, want, _, _) in enumerate(_train_both(config, splits)):
        assert got.first_nonfinite_step == want.first_nonfinite_step == expected[epoch]
        assert (got.count, got.correct) == (want.count, want.correct)
        assert not math.isfinite(got.loss_sum) and not math.isfinite(want.loss_sum)
