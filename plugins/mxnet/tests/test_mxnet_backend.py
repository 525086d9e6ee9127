"""The mxnet backend: the conformance kit, then what only mxnet has.

The contract (model statistics, activations, every optimiser and schedule
against the specification, state round trips, mid-epoch resume, non-finite
losses, refusals, the driver, cross-backend evaluation) is the kit's:
`mlp_research.testing`.
What stays here is mxnet's own: gluon's default initialiser, the optimiser
state on identical gradients, the state layout, and the command line
(test_numpy_compat.py covers the numpy-2 layer and the lazy import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from mlp_research_mxnet import optim
from mlp_research_mxnet.backend import MXNetBackend

from mlp_research import optimizers, schedules
from mlp_research.config import Config
from mlp_research.data import load_splits
from mlp_research.optimizers import SUPPORTED
from mlp_research.run.driver import train_and_evaluate
from mlp_research.run.evaluation import evaluate_checkpoint
from mlp_research.testing.kit import Case, Kit, assert_case, case_names, pytest_cases

REPO = Path(__file__).resolve().parents[3]
# What mxnet may be skipped on: the concise model's default is gluon's own (checked below), zeros are exact,
# and without group_trainer the group cases.
MAY_SKIP = {"init[mlp,default]", "init shape[mlp,default]", "init shape[mlp_scratch,zeros]",
            "init shape[mlp,zeros]", *case_names("group[")}


@pytest.fixture(scope="module")
def kit() -> Iterator[Kit]:
    kit = Kit("mxnet")
    yield kit
    kit.close()


@pytest.mark.parametrize("case", pytest_cases())
def test_conformance(case: Case, kit: Kit) -> None:
    """Every kit case, cross-evaluations of JAX's sgd, adam and lamb checkpoints included, runs and passes."""
    assert_case(case, kit, allowed_skips=MAY_SKIP)


def tiny_config(**overrides) -> Config:
    """Synthetic data, small enough that a run takes about a second."""
    values = dict(backend="mxnet", dataset="synthetic", synthetic_train_size=1000, synthetic_test_size=300,
                  batch_size=64, max_epochs=2, progress=False, eval_batch_size=128)
    values.update(overrides)
    return Config().replace(**values)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


# ------------------------------------------------------------------ models
@pytest.mark.parametrize("model", ["mlp_scratch", "mlp"])
def test_both_models_learn_on_synthetic_data(model: str, tmp_path) -> None:
    summary = train_and_evaluate(tiny_config(model=model, max_epochs=3), str(tmp_path))
    assert summary["final"]["val_acc"] > 0.6, summary["final"]  # chance is 0.1
    assert summary["final"]["train_loss"] < 2.0


def test_the_concise_models_default_is_gluons_uniform():
    """The one initialisation the specification leaves to the framework: gluon's Uniform(0.07), zero biases."""
    config = tiny_config(model="mlp", synthetic_train_size=64, synthetic_test_size=16)
    params = MXNetBackend().trainer(config, load_splits(config)).get_params()
    assert params["W1"].shape == (784, 256) and abs(params["W1"].mean()) < 0.05 * 0.07 / np.sqrt(3)
    np.testing.assert_allclose(params["W1"].var(), 0.07**2 / 3, rtol=0.03)
    assert np.abs(params["W1"]).max() <= 0.07 and not any(params[k].any() for k in params if k.startswith("b"))


# -------------------------------------------------------------- optimisers
@pytest.mark.parametrize("optimizer", SUPPORTED)
def test_optimizer_state_and_rates_follow_the_spec_on_identical_gradients(optimizer: str) -> None:
    """Four updates (weight decay, cosine schedule) on mxnet arrays against the specification's rule in float64."""
    from mlp_research_mxnet.framework import mxnet

    mx_np = mxnet().np
    config = tiny_config(optimizer=optimizer, lr=0.01, weight_decay=0.01, schedule="cosine", max_epochs=2)
    rng = np.random.default_rng(3)
    params = {"W": rng.normal(size=(20, 8)).astype(np.float32), "b": np.zeros(8, np.float32)}
    hyper = optimizers.Hyper(config.optimizer, config.momentum, config.weight_decay)
    spec = {k: v.astype(np.float64) for k, v in params.items()}
    slots = {k: optimizers.initial_slots(optimizer, v.shape, np.float64) for k, v in params.items()}
    ours = optim.Optimizer(config, steps_per_epoch=3)
    mine = {k: mx_np.array(v) for k, v in params.items()}
    state = ours.init_state(mine, mx_np)
    for step in range(4):
        grads = {k: (rng.normal(size=v.shape) * 0.1).astype(np.float32) for k, v in params.items()}
        lr = schedules.learning_rate(config, 3, step)
        for k in spec:
            delta, slots[k] = optimizers.update(hyper, grads[k].astype(np.float64), spec[k], slots[k], step, lr,
                                                optimizers.NUMPY_OPS)
            spec[k] = spec[k] + delta
        ours.update(step, mine, {k: mx_np.array(g) for k, g in grads.items()}, state, mx_np)
    for k in params:
        np.testing.assert_allclose(mine[k].asnumpy(), spec[k], atol=1e-6, rtol=1e-5, err_msg=k)
        assert np.abs(spec[k] - params[k]).max() > 1e-3  # the updates moved them
    assert set(state) == set(optimizers.STATE_SLOTS[optimizer])


# ------------------------------------------------------------------- state
@pytest.mark.parametrize("model", ["mlp_scratch", "mlp"])
def test_state_dict_layout_and_step_counter(model: str) -> None:
    config = tiny_config(model=model, synthetic_train_size=200, batch_size=64, optimizer="adam", lr=0.01)
    trainer = MXNetBackend().trainer(config, load_splits(config))
    trainer.start_epoch(0)
    trainer.train_chunk(0)
    state = trainer.state_dict()
    assert int(state["step"]) == 4 and set(state["opt_state"]) == {"mu", "nu"} and state["opt_state"]["mu"]


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
    assert summary["device"]["platform"] == "cpu"
    # The command line's evaluation batch (its default, 2048) too: sums of other batches round differently.
    config = tiny_config(synthetic_train_size=600, synthetic_test_size=200, batch_size=64, max_epochs=2,
                         eval_batch_size=Config().eval_batch_size)
    train_and_evaluate(config, str(tmp_path / "straight"))
    assert _rows(resumed) == _rows(tmp_path / "straight")
    assert len(_rows(resumed)) == 2


def test_cli_refuses_an_undeclared_option_in_one_line(tmp_path) -> None:
    out = _train_cli(tmp_path / "w", "--parallel=pmap")
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].endswith(
        "--parallel: 'pmap' is not available in the mxnet backend; choose one of auto, none")


@pytest.mark.parametrize("optimizer", ["adam", "lamb"])
def test_a_jax_checkpoint_trained_with_adam_or_lamb_evaluates_in_mxnet_as_in_jax(tmp_path, optimizer: str) -> None:
    workdir = tmp_path / "jax_run"
    train_and_evaluate(tiny_config(backend="jax", model="mlp", optimizer=optimizer, lr=0.01, max_epochs=1),
                       str(workdir))
    in_jax = evaluate_checkpoint(str(workdir), backend="jax")
    if optimizer == "adam":  # through the command line, as a user evaluates
        out = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}", "--backend=mxnet"],
                             cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
        in_mxnet = json.loads(out.stdout.strip().splitlines()[-1])
    else:
        in_mxnet = evaluate_checkpoint(str(workdir), backend="mxnet")
    assert in_mxnet["backend"] == "mxnet" and in_mxnet["written_by"] == "jax"
    assert in_mxnet["examples"] == in_jax["examples"] == 300
    assert abs(in_mxnet["test_acc"] - in_jax["test_acc"]) <= 1e-4
    assert abs(in_mxnet["test_loss"] - in_jax["test_loss"]) < 1e-4
