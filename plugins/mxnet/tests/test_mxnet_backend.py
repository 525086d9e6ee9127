"""The mxnet backend: models, optimisers, parity with JAX, state, and the command-line paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mlp_research_mxnet import optim
from mlp_research_mxnet.backend import MXNetBackend

from mlp_research.backends import registry as backends
from mlp_research.config import Config
from mlp_research.data import Splits, load_splits
from mlp_research.errors import ConfigError
from mlp_research.jax_backend.models import ACTIVATIONS as JAX_ACTIVATIONS
from mlp_research.spec import ACTIVATIONS, INITS
from mlp_research.run.driver import train_and_evaluate
from mlp_research.jax_backend.optim import make_schedule as optax_schedule

MODELS = ("mlp_scratch", "mlp")
REPO = Path(__file__).resolve().parents[3]


def tiny_config(**overrides) -> Config:
    """Synthetic data, small enough that a run takes about a second."""
    values = dict(backend="mxnet", dataset="synthetic", synthetic_train_size=1000, synthetic_test_size=300,
                  batch_size=64, max_epochs=2, progress=False, eval_batch_size=128)
    values.update(overrides)
    return Config().replace(**values)


def splits_for(config: Config) -> Splits:
    return load_splits(config)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


def _random_canonical(spec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.normal(size=s) * (0.1 if k.startswith("W") else 0.05)).astype(np.float32)
            for k, s in spec.canonical_shapes().items()}


def _reference_logits(spec, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The MLP's forward pass in JAX with jax.nn's activations (what both Flax models compute)."""
    h = jnp.asarray(x.reshape(len(x), -1))
    for i in range(1, spec.num_layers + 1):
        h = h @ params[f"W{i}"] + params[f"b{i}"]
        if i < spec.num_layers:
            h = JAX_ACTIVATIONS[spec.activation](h)
    return np.asarray(h)


# ------------------------------------------------------------------ learning
@pytest.mark.parametrize("model", MODELS)
def test_both_models_learn_on_synthetic_data(model: str, tmp_path) -> None:
    summary = train_and_evaluate(tiny_config(model=model, max_epochs=3), str(tmp_path))
    assert summary["final"]["val_acc"] > 0.6, summary["final"]  # chance is 0.1
    assert summary["final"]["train_loss"] < 2.0


# ------------------------------------------------- activations and inits
@pytest.mark.parametrize("model", MODELS)
def test_every_activation_matches_jax_nn(model: str) -> None:
    config = tiny_config(model=model, synthetic_train_size=64, synthetic_test_size=16)
    splits = splits_for(config)
    x = splits.test.images[:16]
    for activation in ACTIVATIONS:
        cfg = config.replace(activation=activation, num_hiddens="32,16")
        trainer = MXNetBackend().trainer(cfg, splits)
        params = _random_canonical(cfg.model, seed=1)
        params = {k: v * 10 for k, v in params.items()}  # large pre-activations reach every branch
        trainer.set_params(params)
        reference = _reference_logits(cfg.model, params, x)
        diff = np.abs(trainer.logits(x) - reference).max()
        assert diff < 1e-6 * max(np.abs(reference).max(), 100), (activation, diff)  # float32 rounding only


@pytest.mark.parametrize("model", MODELS)
def test_every_init_has_its_variance_and_zero_biases(model: str) -> None:
    config = tiny_config(model=model, synthetic_train_size=64, synthetic_test_size=16)
    splits = splits_for(config)
    fan_in, fan_out = 784, 256
    expected = {
        "default": 0.01**2 if model == "mlp_scratch" else 0.07**2 / 3,  # gluon's own default: Uniform(0.07)
        "normal": 0.01**2, "xavier": 2 / (fan_in + fan_out), "xavier_normal": 2 / (fan_in + fan_out),
        "he": 2 / fan_in, "he_uniform": 2 / fan_in, "lecun": 1 / fan_in, "zeros": 0.0,
    }
    assert set(expected) == set(INITS)
    for init in INITS:
        params = MXNetBackend().trainer(config.replace(init=init), splits).get_params()
        w1 = params["W1"]
        assert w1.shape == (fan_in, fan_out)
        assert abs(w1.mean()) < 0.05 * max(np.sqrt(expected[init]), 1e-6) + 1e-7, init
        np.testing.assert_allclose(w1.var(), expected[init], rtol=0.03, atol=1e-12, err_msg=init)
        assert not any(params[k].any() for k in params if k.startswith("b")), init


# ------------------------------------------------------------- parity
def _parity_pair(model: str, train_size: int):
    config = tiny_config(model=model, synthetic_train_size=train_size, synthetic_test_size=64, batch_size=256,
                         optimizer="sgd", lr=0.1, backend="jax")
    splits = splits_for(config)
    params = _random_canonical(config.model)
    jax_trainer = backends.load("jax").trainer(config, splits)
    mx_trainer = MXNetBackend().trainer(config.replace(backend="mxnet"), splits)
    jax_trainer.set_params(params)
    mx_trainer.set_params(params)
    return config, splits, params, jax_trainer, mx_trainer


@pytest.mark.parametrize("model", MODELS)
def test_parity_with_jax_logits_and_sgd_steps(model: str) -> None:
    # 300 examples in batches of 256: one full step, then a short one (44 examples).
    config, splits, params, jax_trainer, mx_trainer = _parity_pair(model, 300)
    x = splits.test.images[:64]
    jax_logits = np.asarray(jax_trainer.model.apply({"params": jax_trainer.state.params}, jnp.asarray(x)))
    assert np.abs(mx_trainer.logits(x) - jax_logits).max() < 1e-4
    for trainer in (jax_trainer, mx_trainer):
        trainer.start_epoch(0)
        trainer.train_chunk(0)
    jax_params, mx_params = jax_trainer.get_params(), mx_trainer.get_params()
    assert max(np.abs(jax_params[k] - params[k]).max() for k in params) > 1e-3  # the steps moved them
    for k in params:
        assert np.abs(jax_params[k] - mx_params[k]).max() < 1e-4, k
    jax_sums, mx_sums = jax_trainer.epoch_sums(), mx_trainer.epoch_sums()
    assert mx_sums.count == jax_sums.count == 300 and mx_sums.correct == jax_sums.correct
    assert abs(mx_sums.loss_sum - jax_sums.loss_sum) < 1e-3
    assert mx_sums.first_nonfinite_step == -1
    jax_eval, mx_eval = jax_trainer.evaluate_eval_split(), mx_trainer.evaluate_eval_split()
    assert mx_eval.count == jax_eval.count == 64 and mx_eval.correct == jax_eval.correct
    assert abs(mx_eval.loss_sum - jax_eval.loss_sum) < 1e-3


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "lamb"])
def test_optimizers_match_optax(optimizer: str) -> None:
    """Four updates of each optimiser (weight decay, cosine schedule) against the core's optax transformation."""
    from mlp_research_mxnet.framework import mxnet

    from mlp_research.jax_backend.optim import make_optimizer

    mx_np = mxnet().np
    config = tiny_config(optimizer=optimizer, lr=0.01, weight_decay=0.01, schedule="cosine", max_epochs=2)
    rng = np.random.default_rng(3)
    params = {"W": rng.normal(size=(20, 8)).astype(np.float32), "b": np.zeros(8, np.float32)}
    tx = make_optimizer(config, steps_per_epoch=3)
    theirs = {k: jnp.asarray(v) for k, v in params.items()}
    opt_state = tx.init(theirs)
    ours = optim.Optimizer(config, steps_per_epoch=3)
    mine = {k: mx_np.array(v) for k, v in params.items()}
    state = ours.init_state(mine, mx_np)
    for step in range(4):
        grads = {k: (rng.normal(size=v.shape) * 0.1).astype(np.float32) for k, v in params.items()}
        updates, opt_state = tx.update({k: jnp.asarray(g) for k, g in grads.items()}, opt_state, theirs)
        theirs = {k: theirs[k] + updates[k] for k in theirs}
        ours.update(step, mine, {k: mx_np.array(g) for k, g in grads.items()}, state, mx_np)
    for k in params:
        np.testing.assert_allclose(mine[k].asnumpy(), np.asarray(theirs[k]), atol=1e-6, rtol=1e-5, err_msg=k)
        assert np.abs(np.asarray(theirs[k]) - params[k]).max() > 1e-3  # the updates moved them
    assert set(state) == set(ours.abstract_state({"W": (20, 8)}))


def test_schedules_match_optax() -> None:
    for schedule, warmup in [("constant", 0.0), ("cosine", 0.0), ("warmup_cosine", 1.5), ("warmup_cosine", 0.0)]:
        config = tiny_config(schedule=schedule, warmup_epochs=warmup, max_epochs=3, lr=0.3)
        ours, theirs = optim.make_schedule(config, 10), optax_schedule(config, 10)
        for step in range(0, 35):
            expected = theirs if isinstance(theirs, float) else float(theirs(step))
            assert abs(ours(step) - expected) < 1e-6, (schedule, warmup, step)


def test_first_nonfinite_step_is_the_global_step_of_the_first_bad_batch() -> None:
    config = tiny_config(model="mlp_scratch", synthetic_train_size=256, batch_size=64)
    trainer = MXNetBackend().trainer(config, splits_for(config))
    trainer.start_epoch(1)
    params = trainer.get_params()
    trainer.set_params({**params, "b2": np.full_like(params["b2"], np.inf)})
    trainer.train_chunk(0)
    assert trainer.epoch_sums().first_nonfinite_step == 4  # epoch 1, its first step (4 steps per epoch)


# ------------------------------------------------------------- state
@pytest.mark.parametrize("model", MODELS)
def test_state_dict_round_trip_continues_bit_identically(model: str) -> None:
    config = tiny_config(model=model, synthetic_train_size=200, batch_size=64, optimizer="adam", lr=0.01)
    splits = splits_for(config)
    a = MXNetBackend().trainer(config, splits)
    a.start_epoch(0)
    a.train_chunk(0)
    state = a.state_dict()
    abstract = a.abstract_state_dict()
    assert jax.tree.structure(state) == jax.tree.structure(abstract)
    assert all(jax.tree.leaves(jax.tree.map(lambda s, t: (s.shape, s.dtype) == (t.shape, t.dtype), state, abstract)))
    assert int(state["step"]) == 4 and state["opt_state"]["mu"]
    b = MXNetBackend().trainer(config, splits)  # same seed (it fixes the data order), other parameters:
    b.set_params({k: v + 0.5 for k, v in a.get_params().items()})
    b.load_state_dict(state)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, b.state_dict(), state)))
    for t in (a, b):
        t.start_epoch(1)
        t.train_chunk(0)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, a.state_dict(), b.state_dict())))
    assert a.epoch_sums() == b.epoch_sums()
    canonical = a.get_params()
    b.set_params({k: v + 1 for k, v in canonical.items()})
    assert all(np.array_equal(b.get_params()[k], canonical[k] + 1) for k in canonical)


# ------------------------------------------------------------- refusals
def test_check_refuses_with_the_flag_named() -> None:
    backend = MXNetBackend()
    backend.check(tiny_config(parallel="auto"))
    backend.check(tiny_config(parallel="none"))
    with pytest.raises(ConfigError, match=r"^--parallel: "):
        backend.check(tiny_config(parallel="pmap"))
    with pytest.raises(ConfigError, match=r"^--parallel: "):
        backend.check(tiny_config(parallel="sharded"))
    with pytest.raises(ConfigError, match=r"^--matmul_precision: "):
        backend.check(tiny_config(matmul_precision="float32"))


# ------------------------------------------------------------- command line
def _train_cli(workdir, *flags: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "experiments.train", "--backend=mxnet", "--dataset=synthetic",
            "--synthetic_train_size=600", "--synthetic_test_size=200", "--batch_size=64", f"--workdir={workdir}",
            *flags]
    return subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)


def _rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "examples_per_second")} for r in rows]


def test_cli_outputs_and_stop_resume_equal_an_uninterrupted_run(tmp_path) -> None:
    resumed = tmp_path / "resumed"
    first = _train_cli(resumed, "--max_epochs=1")
    assert first.returncode == 0, first.stderr[-2000:]
    second = _train_cli(resumed, "--max_epochs=2")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stdout
    for name in ("metrics.jsonl", "summary.json", "curves.png", "checkpoints"):
        assert os.path.exists(resumed / name), name
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["backend"] == "mxnet" and summary["framework_version"] == "1.9.1"
    config = tiny_config(synthetic_train_size=600, synthetic_test_size=200, batch_size=64, max_epochs=2)
    train_and_evaluate(config, str(tmp_path / "straight"))
    assert _rows(resumed) == _rows(tmp_path / "straight")
    assert len(_rows(resumed)) == 2


def test_cli_refusal_exits_2(tmp_path) -> None:
    out = _train_cli(tmp_path / "w", "--parallel=pmap")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--parallel" in out.stderr + out.stdout


def test_evaluate_a_jax_checkpoint_in_mxnet(tmp_path) -> None:
    from mlp_research.run.evaluation import evaluate_checkpoint

    workdir = tmp_path / "jax_run"
    train_and_evaluate(tiny_config(backend="jax", model="mlp", max_epochs=1), str(workdir))
    in_jax = evaluate_checkpoint(str(workdir), backend="jax")
    out = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}", "--backend=mxnet"],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    in_mxnet = json.loads(out.stdout.strip().splitlines()[-1])
    assert in_mxnet["backend"] == "mxnet" and in_mxnet["written_by"] == "jax"
    assert in_mxnet["examples"] == in_jax["examples"] == 300
    assert abs(in_mxnet["test_acc"] - in_jax["test_acc"]) <= 1e-4
    assert abs(in_mxnet["test_loss"] - in_jax["test_loss"]) < 1e-4


def test_mid_epoch_resume_with_carried_sums_matches_a_straight_epoch() -> None:
    # 200 examples, batches of 64, 2 steps per chunk: chunks of steps (0, 1), (2, 3 = the short one).
    config = tiny_config(model="mlp", synthetic_train_size=200, batch_size=64, steps_per_call=2, optimizer="momentum")
    splits = splits_for(config)
    straight, first, resumed = (MXNetBackend().trainer(config, splits) for _ in range(3))
    straight.start_epoch(0)
    for chunk in range(straight.layout.chunks_per_epoch):
        straight.train_chunk(chunk)
    first.start_epoch(0)
    first.train_chunk(0)
    resumed.load_state_dict(first.state_dict())
    resumed.start_epoch(0, first.epoch_sums())
    resumed.train_chunk(1)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, straight.state_dict(), resumed.state_dict())))
    a, b = straight.epoch_sums(), resumed.epoch_sums()
    assert (a.correct, a.count, a.first_nonfinite_step) == (b.correct, b.count, -1) and a.count == 200
    assert abs(a.loss_sum - b.loss_sum) < 1e-4
