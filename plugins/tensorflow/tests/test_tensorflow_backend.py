"""The TensorFlow backend: models, optimisers, parity with JAX, state, and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mlp_research.backends import registry as backends
from mlp_research.config import Config
from mlp_research.data import load_splits
from mlp_research.errors import ConfigError
from mlp_research.jax_backend.models import build_model as build_flax_model
from mlp_research.jax_backend import models as flax_mlp
from mlp_research.jax_backend.models import from_canonical
from mlp_research.jax_backend.optim import make_optimizer

REPO = Path(__file__).resolve().parents[3]
TF_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}


def small_config(**overrides) -> Config:
    values = dict(backend="tensorflow", dataset="synthetic", synthetic_train_size=1000, synthetic_test_size=300,
                  batch_size=64, max_epochs=2, progress=False, eval_batch_size=128)
    values.update(overrides)
    return Config().replace(**values)


def tf_trainer(config: Config):
    return backends.load("tensorflow").trainer(config, load_splits(config))


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=TF_ENV, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def metrics_rows(workdir: Path) -> list[dict]:
    timing = ("seconds", "examples_per_second")
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (workdir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------- registry and check()
def test_listing_and_checking_import_no_tensorflow():
    code = ("import sys; from mlp_research.backends import registry as backends; from mlp_research.config import Config; "
            "assert 'tensorflow' in backends.available(); b = backends.load('tensorflow'); "
            "b.check(Config(backend='tensorflow')); print('tensorflow' in sys.modules)")
    assert run_cli("-c", code).stdout.strip() == "False"


@pytest.mark.parametrize("flags, flag", [({"parallel": "pmap"}, "--parallel"), ({"parallel": "sharded"}, "--parallel"),
                                         ({"optimizer": "lamb"}, "--optimizer"),
                                         ({"matmul_precision": "tensorfloat32"}, "--matmul_precision")])
def test_check_refuses_unsupported_options_naming_the_flag(flags, flag):
    with pytest.raises(ConfigError) as error:
        backends.load("tensorflow").check(small_config(**flags))
    assert str(error.value).startswith(flag + ":") and "\n" not in str(error.value)
    backends.load("tensorflow").check(small_config(parallel="none"))  # accepted


def test_refusal_exits_2_from_the_command_line(tmp_path):
    done = run_cli("-m", "experiments.train", "--backend=tensorflow", "--dataset=synthetic", "--parallel=pmap",
                   f"--workdir={tmp_path / 'w'}", check=False)
    assert done.returncode == 2, done.stderr
    assert "--parallel" in done.stderr


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", flax_mlp.ACTIVATIONS)
def test_activations_match_jax(name):
    from mlp_research_tensorflow import models

    x = np.linspace(-6, 6, 101, dtype=np.float32)
    expected = np.asarray(flax_mlp.ACTIVATIONS[name](jnp.asarray(x)))
    np.testing.assert_allclose(models.ACTIVATIONS[name](x).numpy(), expected, atol=1e-6)
    if name == "relu":
        np.testing.assert_array_equal(models.relu(x).numpy(), expected)


@pytest.mark.parametrize("model", ["mlp_scratch", "mlp"])
@pytest.mark.parametrize("init", ["default", "normal", "xavier", "xavier_normal", "he", "he_uniform", "lecun", "zeros"])
def test_each_init_builds_with_the_variance_of_the_jax_model(model, init):
    from mlp_research_tensorflow.models import build_model

    config = small_config(model=model, init=init, num_hiddens="300,100", activation="tanh", sigma=0.05)
    spec = config.model
    tf_model = build_model(spec, seed=3)
    names = list(spec.canonical_shapes())
    assert [tuple(v.shape) for v in tf_model.variables] == list(spec.canonical_shapes().values())
    logits = tf_model(np.random.default_rng(0).random((5, 28, 28), np.float32)).numpy()
    assert logits.shape == (5, 10) and np.isfinite(logits).all()
    flax_init = flax_mlp.kernel_init(spec) or jax.nn.initializers.lecun_normal()  # None: Flax's Dense default
    canonical = {n: np.asarray(flax_init(jax.random.PRNGKey(i), shape)) if n.startswith("W") else np.zeros(shape)
                 for i, (n, shape) in enumerate(spec.canonical_shapes().items())}
    for name, variable in zip(names, tf_model.variables):
        ours, theirs = variable.numpy(), canonical[name]
        if name.startswith("b"):
            assert not ours.any()
            continue
        default_concise = init == "default" and model == "mlp"  # Keras's Glorot uniform vs Flax's LeCun normal
        if init == "zeros":
            assert not ours.any()
        elif not default_concise:
            assert abs(ours.std() / theirs.std() - 1) < 0.1, (name, ours.std(), theirs.std())
            assert abs(ours.mean()) < 0.1 * ours.std()
    if init == "default" and model == "mlp":  # Keras's own default: Glorot uniform
        w = tf_model.variables[0].numpy()
        assert abs(w.std() / np.sqrt(2 / (784 + 300)) - 1) < 0.1


@pytest.mark.parametrize("model, activation", [("mlp_scratch", "relu"), ("mlp", "relu")])
def test_both_models_learn_on_synthetic_data(tmp_path, model, activation):
    from mlp_research.run.driver import train_and_evaluate

    config = small_config(model=model, activation=activation, max_epochs=3, lr=0.3 if model == "mlp_scratch" else 0.1)
    summary = train_and_evaluate(config, str(tmp_path))
    assert summary["final"]["val_acc"] > 0.6, summary["final"]
    assert summary["final"]["train_loss"] < 2.0


# ---------------------------------------------------------------------- parity with JAX
@pytest.mark.parametrize("model, hiddens, activation", [("mlp_scratch", "256", "relu"), ("mlp", "256", "relu"),
                                                        ("mlp", "64,32", "gelu")])
def test_same_canonical_params_give_jax_logits_and_sgd_step(model, hiddens, activation):
    config = small_config(model=model, num_hiddens=hiddens, activation=activation, init="he", steps_per_call=1,
                          lr=0.1, optimizer="sgd")
    splits = load_splits(config)
    rng = np.random.default_rng(7)
    canonical = {n: (rng.normal(size=s) * 0.1).astype(np.float32) for n, s in config.model.canonical_shapes().items()}
    x = splits.train.images[:128]

    tf_side = tf_trainer(config)
    tf_side.set_params(canonical)
    tf_logits = tf_side.model(x).numpy()
    jax_logits = np.asarray(build_flax_model(config.model).apply({"params": from_canonical(config.model, canonical)},
                                                                 jnp.asarray(x)))
    logits_diff = np.abs(tf_logits - jax_logits).max()
    assert logits_diff < 1e-4

    jax_side = backends.load("jax").trainer(config.replace(backend="jax"), splits)
    jax_side.set_params(canonical)
    for trainer in (tf_side, jax_side):  # one SGD step on the same first batch of epoch 0
        trainer.start_epoch(0)
        trainer.train_chunk(0)
    ours, theirs = tf_side.get_params(), jax_side.get_params()
    step_diff = max(np.abs(ours[n] - theirs[n]).max() for n in canonical)
    moved = max(np.abs(ours[n] - canonical[n]).max() for n in canonical)
    assert step_diff < 1e-4 and moved > 1e-3, (step_diff, moved)
    a, b = tf_side.epoch_sums(), jax_side.epoch_sums()
    assert a.count == b.count == 64 and a.correct == b.correct and abs(a.loss_sum - b.loss_sum) < 1e-3
    print(f"{model} {hiddens} {activation}: logits {logits_diff:.2e}, after one SGD step {step_diff:.2e}")


@pytest.mark.parametrize("flags", [
    dict(optimizer="sgd", weight_decay=1e-2, schedule="cosine"),
    dict(optimizer="momentum", momentum=0.8, schedule="warmup_cosine", warmup_epochs=0.5),
    dict(optimizer="nesterov", weight_decay=1e-3),
    dict(optimizer="adam", lr=1e-2),
    dict(optimizer="adamw", lr=1e-2, weight_decay=0.1, schedule="cosine"),
    dict(optimizer="rmsprop", lr=1e-2, momentum=0.5),
    dict(optimizer="adagrad", lr=0.05),
])
def test_optimizer_rules_and_schedules_match_optax(flags):
    """Our TF-op updates against optax itself, on the same gradients, step by step."""
    import tensorflow as tf
    from mlp_research_tensorflow.optim import Optimizer

    config = small_config(max_epochs=1, **flags)
    steps = 6
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(5, 3)).astype(np.float32), "b1": rng.normal(size=(3,)).astype(np.float32)}
    grads = [{n: rng.normal(size=p.shape).astype(np.float32) for n, p in params.items()} for _ in range(steps)]
    variables = [tf.Variable(p) for p in params.values()]
    ours = Optimizer(config, steps_per_epoch=steps, params=variables, names=list(params))
    tx = make_optimizer(config, steps)
    theirs, opt_state = {n: jnp.asarray(p) for n, p in params.items()}, None
    opt_state = tx.init(theirs)
    for count, g in enumerate(grads):
        ours.apply([tf.constant(g[n]) for n in params], variables, tf.constant(count, tf.int32))
        updates, opt_state = tx.update({n: jnp.asarray(v) for n, v in g.items()}, opt_state, theirs)
        theirs = optax.apply_updates(theirs, updates)
        for n, v in zip(params, variables):
            np.testing.assert_allclose(v.numpy(), np.asarray(theirs[n]), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{flags} step {count} {n}")


# --------------------------------------------------------------------------- state
def test_state_dict_round_trip_continues_bit_identically():
    config = small_config(model="mlp", optimizer="adam", lr=1e-3, steps_per_call=4)
    first = tf_trainer(config)
    first.start_epoch(0)
    first.train_chunk(0)
    state = first.state_dict()
    abstract = first.abstract_state_dict()
    assert jax.tree.structure(state) == jax.tree.structure(abstract)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), state) == jax.tree.map(lambda a: (a.shape, a.dtype), abstract)
    assert int(state["step"]) == 4 and set(state["opt_state"]) == {"mu", "nu"}
    sums = first.epoch_sums()
    first.train_chunk(1)

    second = tf_trainer(config)
    second.load_state_dict(jax.tree.map(np.copy, state))
    second.start_epoch(0, sums)
    second.train_chunk(1)
    for name, value in first.get_params().items():
        np.testing.assert_array_equal(second.get_params()[name], value)
    assert second.epoch_sums() == first.epoch_sums()
    assert int(second.state_dict()["step"]) == 8


def test_uneven_chunks_count_every_example_once_and_flag_a_nonfinite_loss():
    # 1000 examples / 64 = 16 steps, the last one of 40 examples; 5 steps per call = 4 calls, the last padded.
    trainer = tf_trainer(small_config(steps_per_call=5))
    trainer.start_epoch(0)
    for chunk in range(trainer.layout.chunks_per_epoch):
        trainer.train_chunk(chunk)
    sums = trainer.epoch_sums()
    assert (sums.count, int(trainer.state_dict()["step"]), sums.first_nonfinite_step) == (1000, 16, -1)
    assert sums.correct <= 1000 and np.isfinite(sums.loss_sum)

    exploding = tf_trainer(small_config(lr=1e30, init="he", steps_per_call=4))
    exploding.start_epoch(1)
    exploding.train_chunk(0)
    bad = exploding.epoch_sums().first_nonfinite_step
    assert 0 <= bad < 4  # the global step of the first batch whose loss is inf/NaN


# ----------------------------------------------------------------------- end to end
def test_cli_outputs_and_stop_resume_equal_an_uninterrupted_run(tmp_path):
    """Epoch 1 from the command line, epoch 2 resumed by the same driver in-process (one TF start-up less)."""
    from mlp_research.run.driver import train_and_evaluate

    config = small_config(optimizer="momentum", max_epochs=2)
    resumed = tmp_path / "resumed"
    run_cli("-m", "experiments.train", "--backend=tensorflow", "--dataset=synthetic", "--synthetic_train_size=1000",
            "--synthetic_test_size=300", "--batch_size=64", "--eval_batch_size=128", "--optimizer=momentum",
            "--max_epochs=1", f"--workdir={resumed}")
    for name in ("metrics.jsonl", "summary.json", "curves.png", "checkpoints"):
        assert (resumed / name).exists(), name
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["backend"] == "tensorflow" and summary["framework_version"].startswith("2.")
    assert train_and_evaluate(config, str(resumed))["resumed_from_step"] == 16

    straight = tmp_path / "straight"
    train_and_evaluate(config, str(straight))
    assert len(metrics_rows(straight)) == 2
    assert metrics_rows(resumed) == metrics_rows(straight)


def test_a_jax_checkpoint_evaluates_the_same_in_tensorflow(tmp_path):
    """`experiments.evaluate --backend=B` is a thin wrapper of `evaluate_checkpoint(..., backend=B)`."""
    from mlp_research.run.evaluation import evaluate_checkpoint
    from mlp_research.run.driver import train_and_evaluate

    train_and_evaluate(small_config(backend="jax", model="mlp", max_epochs=1), str(tmp_path))
    in_jax = evaluate_checkpoint(str(tmp_path), backend="jax")
    in_tf = evaluate_checkpoint(str(tmp_path), backend="tensorflow")
    assert in_tf["backend"] == "tensorflow" and in_tf["written_by"] == "jax"
    assert in_tf["examples"] == in_jax["examples"] == 300
    assert abs(in_tf["test_acc"] - in_jax["test_acc"]) <= 1e-4
    assert abs(in_tf["test_loss"] - in_jax["test_loss"]) <= 1e-4
