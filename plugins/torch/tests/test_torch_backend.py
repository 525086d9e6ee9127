"""The torch backend: the conformance kit, then what only torch has.

The contract (model statistics, activations, every optimiser and schedule
against the specification, state round trips, mid-epoch resume, non-finite
losses, refusals, the driver, cross-backend evaluation) is the kit's:
`mlp_research.testing`.
What stays here is torch's own: lazy import, torch's default initialiser,
the two activation forms, the state layout, threads, and the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from mlp_research_torch import models

from mlp_research.backends import registry
from mlp_research.data import load_splits
from mlp_research.run.driver import train_and_evaluate
from mlp_research.run.evaluation import evaluate_checkpoint
from mlp_research.spec import ACTIVATIONS
from mlp_research.testing.checks_training import train_epochs
from mlp_research.testing.kit import Case, Kit, assert_case, case_names, pytest_cases

TIMING = ("seconds", "examples_per_second")
# What torch may be skipped on: the concise model's default is torch's own (checked below), zeros are exact,
# and without group_trainer the group cases.
MAY_SKIP = {"init[mlp,default]", "init shape[mlp,default]", "init shape[mlp_scratch,zeros]",
            "init shape[mlp,zeros]", *case_names("group[")}


@pytest.mark.parametrize("case", pytest_cases())
def test_conformance(case: Case, kit: Kit) -> None:
    """Every kit case, cross-evaluations of JAX's sgd, adam and lamb checkpoints included, runs and passes."""
    assert_case(case, kit, allowed_skips=MAY_SKIP)


def rows_without_time(workdir: str | os.PathLike) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


# --------------------------------------------------------------- discovery
def test_listing_imports_no_framework_and_loading_stays_lazy() -> None:
    code = (
        "import sys; from mlp_research.backends import registry as backends; assert 'torch' in backends.available(); "
        "assert 'torch' not in sys.modules; b = backends.load('torch'); assert 'torch' not in sys.modules; "
        "print(b.name, b.version())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "torch" and done.stdout.split()[1].startswith(torch.__version__.split("+")[0])


# ------------------------------------------------------------------ models
def test_the_concise_models_default_is_torchs_own_initialiser(tiny) -> None:
    """The one initialisation the specification leaves to the framework: nn.Linear's U(+-1/sqrt(fan_in))."""
    config = tiny(model="mlp", num_hiddens="400,64", synthetic_train_size=64)
    params = registry.load("torch").trainer(config, load_splits(config)).get_params()
    bound = 1 / np.sqrt(784)
    assert abs(params["W1"].std() - bound / np.sqrt(3)) < 0.1 * bound
    assert np.abs(params["b1"]).max() <= bound and params["b1"].std() > 0  # torch's biases are not zero


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_the_module_form_of_each_activation_equals_its_function(activation) -> None:
    """The concise model uses modules and the scratch model functions: the same values, bit for bit."""
    x = torch.from_numpy(np.linspace(-25, 25, 2001, dtype=np.float32))
    module, function = models.activation_module(activation), models.ACTIVATIONS[activation]
    np.testing.assert_array_equal(module(x).numpy(), function(x).numpy())


@pytest.mark.parametrize("model", ["mlp_scratch", "mlp"])
def test_bfloat16_data_rounded_once_train_exactly_as_autocast_rounding_them_each_step(tiny, model) -> None:
    """With bfloat16 matmuls the trainer keeps the images in bfloat16; autocast would round the float32 images
    to the same values before the first matmul, so an epoch ends in the same parameters, bit for bit."""
    config = tiny(model=model, num_hiddens=32, matmul_precision="bfloat16", synthetic_train_size=300)
    splits = load_splits(config)
    rounded_once = registry.load("torch").trainer(config, splits)
    each_step = registry.load("torch").trainer(config, splits)
    assert rounded_once.train_x.dtype == torch.bfloat16
    each_step.train_x = torch.from_numpy(np.asarray(splits.train.images, np.float32)).to(each_step.device)
    for trainer in (rounded_once, each_step):
        train_epochs(trainer, range(1))
    got, want = rounded_once.get_params(), each_step.get_params()
    assert all(np.array_equal(got[k], want[k]) for k in want)


# ------------------------------------------------------------------- state
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_state_dict_layout_step_counter_and_optimiser_slots(tiny, optimizer) -> None:
    config = tiny(model="mlp", num_hiddens=32, optimizer=optimizer, lr=0.01, synthetic_train_size=300)
    trainer = registry.load("torch").trainer(config, load_splits(config))
    train_epochs(trainer, range(1))
    state = trainer.state_dict()
    assert ("opt_state" in state) == (optimizer == "adam") and int(state["step"]) == trainer.layout.steps_per_epoch == 5
    if optimizer == "adam":
        assert set(state["opt_state"]["1_weight"]) == {"step", "exp_avg", "exp_avg_sq"}  # torch.optim.Adam's own state


def test_thread_count_follows_the_environment_and_never_exceeds_the_allowed_cpus(tiny) -> None:
    code = ("from mlp_research.config import Config; from mlp_research.data import load_splits; "
            "from mlp_research_torch.trainer import TorchTrainer; import os, torch; "
            "c = Config().replace(backend='torch', dataset='synthetic', synthetic_train_size=64, "
            "synthetic_test_size=16, batch_size=32); t = TorchTrainer(c, load_splits(c)); "
            "print(t.describe()['torch_threads'], torch.get_num_threads(), len(os.sched_getaffinity(0)))")
    for env, check in (({"MLP_RESEARCH_TORCH_THREADS": "1"}, lambda a, b, cpus: a == b == 1),
                       ({}, lambda a, b, cpus: a == b and 1 <= a <= cpus)):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**{k: v for k, v in os.environ.items() if k != "MLP_RESEARCH_TORCH_THREADS"}, **env})
        assert done.returncode == 0, done.stderr
        assert check(*map(int, done.stdout.split())), (env, done.stdout)


# ------------------------------------------------------------ command line
def test_cli_outputs_and_resume_equal_an_uninterrupted_run(tmp_path, repo) -> None:
    whole = tmp_path / "whole"
    flags = ["--backend=torch", "--dataset=synthetic", "--synthetic_train_size=640", "--synthetic_test_size=200",
             "--batch_size=64", "--eval_batch_size=128", "--model=mlp", "--num_hiddens=32", "--optimizer=adam",
             "--lr=0.01"]
    done = subprocess.run([sys.executable, "-m", "experiments.train", *flags, "--max_epochs=2", f"--workdir={whole}"],
                          cwd=repo, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "torch/mlp" in done.stdout and "epoch   2/2" in done.stdout
    for name in ("metrics.jsonl", "summary.json", "curves.png", "checkpoints"):
        assert (whole / name).exists(), name
    summary = json.load(open(whole / "summary.json"))
    assert summary["backend"] == "torch" and summary["config"]["optimizer"] == "adam"
    assert summary["device"]["platform"] in ("cpu", "cuda") and summary["final"]["val_acc"] > 0.5  # chance: 0.1
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


def test_cli_refuses_an_undeclared_option_in_one_line(tmp_path, repo) -> None:
    done = subprocess.run([sys.executable, "-m", "experiments.train", "--backend=torch", "--dataset=synthetic",
                           "--parallel=pmap", f"--workdir={tmp_path / 'w'}"], cwd=repo, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(
        "--parallel: 'pmap' is not available in the torch backend; choose one of auto, none")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("optimizer", ["adam", "lamb"])
def test_a_jax_checkpoint_trained_with_adam_or_lamb_evaluates_in_torch_as_in_jax(tmp_path, repo, tiny,
                                                                                  optimizer) -> None:
    workdir = tmp_path / "jax_run"
    train_and_evaluate(tiny(backend="jax", model="mlp", optimizer=optimizer, lr=0.01, max_epochs=1,
                            synthetic_test_size=999), str(workdir))
    in_jax = evaluate_checkpoint(str(workdir), backend="jax")
    if optimizer == "adam":  # through the command line, as a user evaluates
        done = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}", "--backend=torch"],
                              cwd=repo, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        in_torch = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        in_torch = evaluate_checkpoint(str(workdir), backend="torch")
    assert in_torch["written_by"] == "jax" and in_torch["backend"] == "torch" and in_torch["examples"] == 999
    assert abs(in_torch["test_acc"] - in_jax["test_acc"]) <= 1e-4
    assert abs(in_torch["test_loss"] - in_jax["test_loss"]) <= 1e-4
