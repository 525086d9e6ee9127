"""The torch backend: learning, model options, parity with JAX, state round trip, CLI and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from mlp_research_torch import models
from mlp_research_torch.optim import make_schedule
from mlp_research_torch.trainer import TorchTrainer

from mlp_research.backends import registry as backends
from mlp_research.data import load_splits
from mlp_research.errors import ConfigError
from mlp_research.run.evaluation import evaluate_checkpoint
from mlp_research.jax_backend.models import build_model as build_flax_model
from mlp_research.jax_backend import models as flax_mlp
from mlp_research.jax_backend.models import from_canonical
from mlp_research.spec import ACTIVATIONS, INITS, ModelSpec
from mlp_research.jax_backend import optim as jax_optim
from mlp_research.run.driver import train_and_evaluate

MODELS = ("mlp_scratch", "mlp")
TIMING = ("seconds", "examples_per_second")


def rows_without_time(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def trainers(config):
    """(torch trainer, jax trainer) of one config on the same data."""
    splits = load_splits(config)
    jax_config = config.replace(backend="jax", parallel="none")
    return TorchTrainer(config, splits), backends.load("jax").trainer(jax_config, splits), splits


def random_canonical(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Parameters with non-zero biases, so the parity checks see every term."""
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * (0.05 if name.startswith("W") else 0.1)).astype(np.float32)
            for name, shape in spec.canonical_shapes().items()}


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


# --------------------------------------------------------------- discovery
def test_listing_imports_no_framework_and_loading_stays_lazy():
    code = (
        "import sys; from mlp_research.backends import registry as backends; assert 'torch' in backends.available(); "
        "assert 'torch' not in sys.modules; b = backends.load('torch'); assert 'torch' not in sys.modules; "
        "print(b.name, b.version())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "torch" and done.stdout.split()[1].startswith(torch.__version__.split("+")[0])


# ------------------------------------------------------------------ models
@pytest.mark.parametrize("model", MODELS)
def test_both_models_learn(tmp_path, tiny, model):
    summary = train_and_evaluate(tiny(model=model, max_epochs=4, checkpoint_every_epochs=0), str(tmp_path))
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["final"]["val_acc"] > 0.5  # chance is 0.1
    assert summary["backend"] == "torch" and summary["device"]["platform"] in ("cpu", "cuda")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("init", INITS)
def test_every_init_builds_with_flax_statistics(model, init):
    spec = ModelSpec(model=model, num_hiddens=(400, 64), init=init, sigma=0.05)
    torch.manual_seed(0)
    net = models.build_model(spec)
    ours = models.to_canonical(net, spec)
    flax_params = build_flax_model(spec).init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28)))["params"]
    ref = flax_mlp.to_canonical(spec, flax_params)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}
    fan_in_std = {"W1": 1 / np.sqrt(784)}
    if init == "default" and model == "mlp":  # torch's own default: U(+-1/sqrt(fan_in)) weights and biases
        assert abs(ours["W1"].std() - fan_in_std["W1"] / np.sqrt(3)) < 0.1 * fan_in_std["W1"]
        assert np.abs(ours["b1"]).max() <= fan_in_std["W1"] and ours["b1"].std() > 0
        return
    for name in ours:
        if name.startswith("b"):
            assert not ours[name].any(), name  # biases start at zero, as in Flax
        elif init == "zeros":
            assert not ours[name].any()
        else:  # same spread as Flax's initialiser (He/LeCun/Glorot normal are truncated in both)
            assert np.isclose(ours[name].std(), ref[name].std(), rtol=0.12), (name, ours[name].std(), ref[name].std())
            assert np.isclose(np.abs(ours[name]).max(), np.abs(ref[name]).max(), rtol=0.3), name


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_matches_flax(activation):
    x = np.linspace(-25, 25, 2001, dtype=np.float32)
    ours = models.ACTIVATIONS[activation](torch.from_numpy(x)).numpy()
    theirs = np.asarray(flax_mlp.ACTIVATIONS[activation](jnp.asarray(x)))
    np.testing.assert_allclose(ours, theirs, atol=2e-6, rtol=1e-6)
    module = models.activation_module(activation)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(module, ours, atol=0, rtol=0)
    spec = ModelSpec(model="mlp", num_hiddens=(8, 8), activation=activation)
    assert models.build_model(spec)(torch.zeros(3, 28, 28)).shape == (3, 10)


# ------------------------------------------------------------------ parity
@pytest.mark.parametrize("model", MODELS)
def test_parity_with_jax_logits_and_one_sgd_step(tiny, model):
    config = tiny(model=model, num_hiddens="48,32", activation="gelu", synthetic_train_size=64, batch_size=64,
                  synthetic_test_size=10, max_epochs=1, lr=0.1, optimizer="sgd")
    ours, ref, splits = trainers(config)
    params = random_canonical(config.model)
    ours.set_params(params)
    ref.set_params(params)
    np.testing.assert_array_equal(ours.get_params()["W1"], params["W1"])
    batch = splits.train.images[:64]
    jax_logits = np.asarray(build_flax_model(config.model).apply(
        {"params": from_canonical(config.model, params)}, jnp.asarray(batch)))
    assert np.max(np.abs(ours.logits(batch) - jax_logits)) < 1e-4
    for trainer in (ours, ref):
        trainer.start_epoch(0)
        trainer.train_chunk(0)
    assert max_diff(ours.get_params(), ref.get_params()) < 1e-4
    assert max_diff(ours.get_params(), params) > 1e-3  # the step really moved them
    a, b = ours.epoch_sums(), ref.epoch_sums()
    assert (a.count, a.correct) == (b.count, b.correct) and abs(a.loss_sum - b.loss_sum) < 1e-3


@pytest.mark.parametrize("flags", [
    dict(optimizer="momentum", weight_decay=1e-3, schedule="cosine"),
    dict(optimizer="nesterov", lr=0.05),
    dict(optimizer="adam", lr=1e-3, weight_decay=1e-3),
    dict(optimizer="adamw", lr=1e-3, weight_decay=0.1, schedule="warmup_cosine", warmup_epochs=0.5),
    dict(optimizer="rmsprop", lr=1e-3, momentum=0.5, schedule="warmup_cosine", warmup_epochs=0.5),
    dict(optimizer="adagrad", lr=0.05, weight_decay=1e-3),
])
def test_optimisers_and_schedules_track_optax(tiny, flags):
    # 4 steps an epoch, the last one short (40 of 136 examples), 2 epochs. tanh, not relu: Adam's
    # normalised steps turn a rounding-level flip of a relu at 0 into a full lr-sized difference.
    config = tiny(model="mlp", num_hiddens=32, activation="tanh", synthetic_train_size=136, batch_size=32,
                  synthetic_test_size=10, **flags)
    ours, ref, _ = trainers(config)
    params = random_canonical(config.model, seed=1)
    ours.set_params(params)
    ref.set_params(params)
    for epoch in range(2):
        for trainer in (ours, ref):
            trainer.start_epoch(epoch)
            trainer.train_chunk(0)
    assert max_diff(ours.get_params(), ref.get_params()) < 1e-4


def test_schedules_equal_optax():
    from mlp_research.config import Config

    for schedule, warmup in (("cosine", 0.0), ("warmup_cosine", 1.5), ("warmup_cosine", 0.0)):
        config = Config().replace(schedule=schedule, warmup_epochs=warmup, lr=0.3, max_epochs=3)
        ours, ref = make_schedule(config, 10), jax_optim.make_schedule(config, 10)
        values = [(ours(step), float(ref(step))) for step in range(0, 35)]
        np.testing.assert_allclose(*zip(*values), atol=1e-7)
    assert make_schedule(Config(), 10) is None


# ------------------------------------------------------------------- state
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_state_dict_round_trip_continues_identically(tiny, optimizer):
    config = tiny(model="mlp", num_hiddens=32, optimizer=optimizer, lr=0.01, synthetic_train_size=300)
    splits = load_splits(config)
    first = TorchTrainer(config, splits)
    abstract = first.abstract_state_dict()  # before any step: the driver restores with it
    first.start_epoch(0)
    first.train_chunk(0)
    state = first.state_dict()
    flat = jax.tree_util.tree_flatten_with_path
    assert [(p, a.shape, a.dtype) for p, a in flat(state)[0]] == [(p, a.shape, a.dtype) for p, a in flat(abstract)[0]]
    assert ("opt" in state) == (optimizer == "adam") and int(state["step"]) == first.layout.steps_per_epoch

    second = TorchTrainer(config, splits)
    second.start_epoch(5)  # another order: a state that differs everywhere from `first`'s
    second.train_chunk(0)
    assert not np.array_equal(second.state_dict()["params"]["1_weight"], state["params"]["1_weight"])
    second.load_state_dict(jax.tree.map(np.copy, state))
    assert jax.tree.all(jax.tree.map(np.array_equal, second.state_dict(), state))
    for trainer in (first, second):
        trainer.start_epoch(1)
        trainer.train_chunk(0)
    assert jax.tree.all(jax.tree.map(np.array_equal, second.state_dict(), first.state_dict()))
    assert first.epoch_sums() == second.epoch_sums()


def test_non_finite_loss_reports_its_global_step(tiny):
    config = tiny(model="mlp_scratch", synthetic_train_size=640, steps_per_call=3)  # 10 steps, chunks of 3
    trainer = TorchTrainer(config, load_splits(config))
    trainer.start_epoch(0)
    for chunk in range(trainer.layout.chunks_per_epoch):
        trainer.train_chunk(chunk)
    assert trainer.epoch_sums().first_nonfinite_step == -1
    trainer.start_epoch(1)
    trainer.train_chunk(0)
    broken = trainer.get_params()
    broken["W2"][0, 0] = np.nan
    trainer.set_params(broken)
    trainer.train_chunk(1)
    sums = trainer.epoch_sums()
    assert sums.first_nonfinite_step == 10 + 3  # epoch 1's fourth batch, counted globally
    assert sums.count == 6 * 64 and not np.isfinite(sums.loss_sum)


# ------------------------------------------------------------ CLI and driver
def test_cli_outputs_and_resume_equal_an_uninterrupted_run(tmp_path, repo, tiny):
    whole = tmp_path / "whole"
    flags = ["--backend=torch", "--dataset=synthetic", "--synthetic_train_size=640", "--synthetic_test_size=200",
             "--batch_size=64", "--eval_batch_size=128", "--model=mlp", "--num_hiddens=32", "--optimizer=adam", "--lr=0.01"]
    done = subprocess.run([sys.executable, "-m", "experiments.train", *flags, "--max_epochs=2", f"--workdir={whole}"],
                          cwd=repo, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "torch/mlp" in done.stdout and "epoch   2/2" in done.stdout
    for name in ("metrics.jsonl", "summary.json", "curves.png", "checkpoints"):
        assert (whole / name).exists(), name
    summary = json.load(open(whole / "summary.json"))
    assert summary["backend"] == "torch" and summary["config"]["optimizer"] == "adam"
    assert summary["framework_version"].startswith(torch.__version__.split("+")[0])

    # The same run stopped after epoch 1 and resumed by the same command. Both halves run in fresh
    # processes like the uninterrupted run: in the test process, frameworks imported by other tests
    # (mxnet, TensorFlow) can change the threading of torch's kernels and so the last float bits.
    resumed = tmp_path / "resumed"
    for epochs in (1, 2):
        done = subprocess.run([sys.executable, "-m", "experiments.train", *flags, f"--max_epochs={epochs}",
                               f"--workdir={resumed}"], cwd=repo, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    assert json.load(open(resumed / "summary.json"))["resumed_from_step"] == 10
    assert rows_without_time(resumed) == rows_without_time(whole)


def test_evaluate_a_jax_checkpoint_in_torch(tmp_path, repo, tiny):
    workdir = tmp_path / "jax_run"
    train_and_evaluate(tiny(backend="jax", model="mlp", max_epochs=1, synthetic_test_size=999), str(workdir))
    in_jax = evaluate_checkpoint(str(workdir), backend="jax")
    done = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}", "--backend=torch"],
                          cwd=repo, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    in_torch = json.loads(done.stdout.strip().splitlines()[-1])
    assert in_torch["written_by"] == "jax" and in_torch["backend"] == "torch" and in_torch["examples"] == 999
    assert abs(in_torch["test_acc"] - in_jax["test_acc"]) <= 1e-4
    assert abs(in_torch["test_loss"] - in_jax["test_loss"]) <= 1e-4


def test_check_refuses_what_torch_cannot_do(tmp_path, repo, tiny):
    backend = backends.load("torch")
    backend.check(tiny(parallel="none"))
    backend.check(tiny(parallel="auto"))
    for flags, flag in ((dict(parallel="pmap"), "--parallel"), (dict(parallel="sharded"), "--parallel"),
                        (dict(optimizer="lamb"), "--optimizer"), (dict(matmul_precision="bfloat16"), "--matmul_precision")):
        with pytest.raises(ConfigError, match=f"^{flag}: "):
            backend.check(tiny(**flags))
    done = subprocess.run([sys.executable, "-m", "experiments.train", "--backend=torch", "--dataset=synthetic",
                           "--optimizer=lamb", f"--workdir={tmp_path / 'w'}"],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].split("--optimizer: ")[1].startswith("'lamb' is not available in the torch backend")


def test_mid_epoch_resume_with_carried_sums_equals_a_straight_epoch(tiny):
    config = tiny(model="mlp", num_hiddens=32, optimizer="momentum", synthetic_train_size=600, steps_per_call=4)
    splits = load_splits(config)
    straight, stopped = TorchTrainer(config, splits), TorchTrainer(config, splits)
    straight.start_epoch(0)
    for chunk in range(straight.layout.chunks_per_epoch):  # 10 steps in chunks of 4, 4 and 2
        straight.train_chunk(chunk)
    stopped.start_epoch(0)
    stopped.train_chunk(0)
    carried, state = stopped.epoch_sums(), stopped.state_dict()
    resumed = TorchTrainer(config, splits)
    resumed.load_state_dict(state)
    resumed.start_epoch(0, carried)
    resumed.train_chunk(1)
    resumed.train_chunk(2)
    assert jax.tree.all(jax.tree.map(np.array_equal, resumed.state_dict(), straight.state_dict()))
    ours, ref = resumed.epoch_sums(), straight.epoch_sums()
    assert (ours.correct, ours.count, ours.first_nonfinite_step) == (ref.correct, ref.count, -1)
    assert ours.count == 600 and abs(ours.loss_sum - ref.loss_sum) < 1e-9 * ref.loss_sum
