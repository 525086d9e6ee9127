"""The TensorFlow backend: the conformance kit, then what only TensorFlow has.

The contract (model statistics, logits, every optimiser and schedule against
the specification, state round trips, mid-epoch resume, non-finite losses,
refusals, the driver, cross-backend evaluation) is the kit's:
`mlp_research.testing`.
What stays here is TensorFlow's own: lazy import, Keras' default initialiser,
checks that need the model's logits (the trainer has no `logits()`), the
optimiser slots on identical gradients, the state layout, and the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from mlp_research import optimizers, schedules
from mlp_research.backends import registry
from mlp_research.config import Config
from mlp_research.data import load_splits
from mlp_research.spec import ACTIVATIONS
from mlp_research.testing import reference
from mlp_research.testing.checks_training import train_epochs
from mlp_research.testing.kit import Case, Kit, assert_case, case_names, pytest_cases, random_canonical

REPO = Path(__file__).resolve().parents[3]
TF_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}
# What TensorFlow may be skipped on: the concise model's default is Keras' own (checked below), zeros are
# exact, and without group_trainer the group cases.
MAY_SKIP = {"init[mlp,default]", "init shape[mlp,default]", "init shape[mlp_scratch,zeros]",
            "init shape[mlp,zeros]", *case_names("group[")}


@pytest.fixture(scope="module")
def kit() -> Iterator[Kit]:
    kit = Kit("tensorflow")
    yield kit
    kit.close()


@pytest.mark.parametrize("case", pytest_cases())
def test_conformance(case: Case, kit: Kit) -> None:
    """Every kit case, cross-evaluations of JAX's sgd, adam and lamb checkpoints included, runs and passes."""
    assert_case(case, kit, allowed_skips=MAY_SKIP)


def small_config(**overrides) -> Config:
    values = dict(backend="tensorflow", dataset="synthetic", synthetic_train_size=1000, synthetic_test_size=300,
                  batch_size=64, max_epochs=2, progress=False, eval_batch_size=128)
    values.update(overrides)
    return Config().replace(**values)


def tf_trainer(config: Config) -> Any:
    return registry.load("tensorflow").trainer(config, load_splits(config))


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=TF_ENV, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def metrics_rows(workdir: Path) -> list[dict]:
    timing = ("seconds", "examples_per_second")
    return [{k: v for k, v in json.loads(line).items() if k not in timing}
            for line in (workdir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------- registry
def test_listing_and_checking_import_no_tensorflow() -> None:
    code = ("import sys; from mlp_research.backends import registry as backends; "
            "from mlp_research.config import Config; "
            "assert 'tensorflow' in backends.available(); b = backends.load('tensorflow'); "
            "b.check(Config(backend='tensorflow')); print('tensorflow' in sys.modules)")
    assert run_cli("-c", code).stdout.strip() == "False"


# ------------------------------------------------------------------- models
def test_the_concise_models_default_is_keras_glorot_uniform() -> None:
    """The one initialisation the specification leaves to the framework."""
    params = tf_trainer(small_config(model="mlp", num_hiddens="300,100", synthetic_train_size=64)).get_params()
    assert abs(params["W1"].std() / np.sqrt(2 / (784 + 300)) - 1) < 0.1
    assert np.abs(params["W1"]).max() <= np.sqrt(6 / (784 + 300)) and not params["b1"].any()


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_equal_the_spec(name) -> None:
    """What the kit's activation-value cases check through logits(), which this trainer does not have."""
    from mlp_research_tensorflow import models

    x = np.linspace(-6, 6, 101, dtype=np.float32)
    expected = reference.ACTIVATIONS[name][0](x.astype(np.float64))
    np.testing.assert_allclose(models.ACTIVATIONS[name](x).numpy(), expected, atol=1e-6)
    if name == "relu":  # the scratch model's hand-written relu
        np.testing.assert_array_equal(models.relu(x).numpy(), np.maximum(x, 0))


@pytest.mark.parametrize("model, hiddens, activation", [("mlp_scratch", "256", "relu"), ("mlp", "256", "relu"),
                                                        ("mlp", "64,32", "gelu")])
def test_logits_equal_the_spec(model, hiddens, activation) -> None:
    """Per logit; the kit compares evaluate()'s sums when a trainer has no logits()."""
    config = small_config(model=model, num_hiddens=hiddens, activation=activation)
    trainer = tf_trainer(config)
    params = random_canonical(config, seed=7)
    trainer.set_params(params)
    x = load_splits(config).train.images[:128]
    assert np.abs(trainer.model(x).numpy() - reference.forward(config.spec, params, x)).max() < 1e-4


# -------------------------------------------------------------- optimisers
@pytest.mark.parametrize("flags", [
    dict(optimizer="sgd", weight_decay=1e-2, schedule="cosine"),
    dict(optimizer="momentum", momentum=0.8, schedule="warmup_cosine", warmup_epochs=0.5),
    dict(optimizer="nesterov", weight_decay=1e-3),
    dict(optimizer="adam", lr=1e-2),
    dict(optimizer="adamw", lr=1e-2, weight_decay=0.1, schedule="cosine"),
    dict(optimizer="rmsprop", lr=1e-2, momentum=0.5),
    dict(optimizer="adagrad", lr=0.05),
    dict(optimizer="lamb", lr=1e-2, weight_decay=0.01, schedule="cosine"),
])
def test_optimizer_slots_and_rates_follow_the_spec_on_identical_gradients(flags) -> None:
    """The TF-op update, step by step, against the specification's rule in float64 (section 9) on the same gradients."""
    import tensorflow as tf
    from mlp_research_tensorflow.optim import Optimizer

    config, steps = small_config(max_epochs=1, **flags), 6
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(5, 3)).astype(np.float32), "b1": rng.normal(size=(3,)).astype(np.float32)}
    grads = [{n: rng.normal(size=p.shape).astype(np.float32) for n, p in params.items()} for _ in range(steps)]
    variables = [tf.Variable(p) for p in params.values()]
    ours = Optimizer(config, steps_per_epoch=steps, params=variables, names=list(params))
    hyper = optimizers.Hyper(config.optimizer, config.momentum, config.weight_decay)
    spec = {n: p.astype(np.float64) for n, p in params.items()}
    slots = {n: optimizers.initial_slots(config.optimizer, p.shape, np.float64) for n, p in params.items()}
    for count, g in enumerate(grads):
        ours.apply([tf.constant(g[n]) for n in params], variables, tf.constant(count, tf.int32))
        lr = schedules.learning_rate(config, steps, count)
        for n in params:
            delta, slots[n] = optimizers.update(hyper, g[n].astype(np.float64), spec[n], slots[n], count, lr,
                                                optimizers.NUMPY_OPS)
            spec[n] = spec[n] + delta
        for n, v in zip(params, variables):
            np.testing.assert_allclose(v.numpy(), spec[n], rtol=1e-5, atol=1e-6, err_msg=f"{flags} step {count} {n}")
    assert set(ours.state()) == set(optimizers.STATE_SLOTS[config.optimizer])


# -------------------------------------------------------------------- state
def test_state_dict_layout_and_step_counter_over_uneven_chunks() -> None:
    adam = tf_trainer(small_config(model="mlp", optimizer="adam", lr=1e-3, steps_per_chunk=4))
    adam.start_epoch(0)
    adam.train_chunk(0)
    state = adam.state_dict()
    assert int(state["step"]) == 4 and set(state["opt_state"]) == {"mu", "nu"}
    adam.train_chunk(1)
    assert int(adam.state_dict()["step"]) == 8
    # 1000 examples / 64 = 16 steps, the last one of 40 examples; 5 steps per call = 4 calls, the last padded.
    sgd = tf_trainer(small_config(steps_per_chunk=5))
    sums = train_epochs(sgd, range(1))[0]
    assert "opt_state" not in sgd.state_dict() and int(sgd.state_dict()["step"]) == 16
    assert (sums.count, sums.first_nonfinite_step) == (1000, -1) and np.isfinite(sums.loss_sum)


# ------------------------------------------------------------- command line
def test_cli_outputs_and_stop_resume_equal_an_uninterrupted_run(tmp_path) -> None:
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
    assert summary["device"]["platform"] in ("cpu", "gpu")
    final = train_and_evaluate(config, str(resumed))
    assert final["resumed_from_step"] == 16 and final["final"]["val_acc"] > 0.6 and final["final"]["train_loss"] < 2.0

    straight = tmp_path / "straight"
    train_and_evaluate(config, str(straight))
    assert len(metrics_rows(straight)) == 2
    assert metrics_rows(resumed) == metrics_rows(straight)


def test_cli_refuses_an_undeclared_option_in_one_line(tmp_path) -> None:
    done = run_cli("-m", "experiments.train", "--backend=tensorflow", "--dataset=synthetic", "--parallel=pmap",
                   f"--workdir={tmp_path / 'w'}", check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(
        "--parallel: 'pmap' is not available in the tensorflow backend; choose one of auto, none")


@pytest.mark.parametrize("optimizer", ["adam", "lamb"])
def test_a_jax_checkpoint_trained_with_adam_or_lamb_evaluates_in_tensorflow_as_in_jax(tmp_path, optimizer) -> None:
    """`experiments.evaluate --backend=B` is a thin wrapper of `evaluate_checkpoint(..., backend=B)`."""
    from mlp_research.run.driver import train_and_evaluate
    from mlp_research.run.evaluation import evaluate_checkpoint

    train_and_evaluate(small_config(backend="jax", model="mlp", optimizer=optimizer, lr=0.01, max_epochs=1),
                       str(tmp_path))
    in_jax = evaluate_checkpoint(str(tmp_path), backend="jax")
    in_tf = evaluate_checkpoint(str(tmp_path), backend="tensorflow")
    assert in_tf["backend"] == "tensorflow" and in_tf["written_by"] == "jax"
    assert in_tf["examples"] == in_jax["examples"] == 300
    assert abs(in_tf["test_acc"] - in_jax["test_acc"]) <= 1e-4
    assert abs(in_tf["test_loss"] - in_jax["test_loss"]) <= 1e-4
