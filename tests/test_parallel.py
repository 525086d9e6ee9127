"""Data parallelism: pmap and jit-with-shardings equal one device; evaluation covers every example;
two processes on loopback equal one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO
from mlp_research.config import Config
from mlp_research.errors import ConfigError
from mlp_research.jax_backend import placement as parallel

SMALL = {"dataset": "synthetic", "synthetic_train_size": 1000, "synthetic_test_size": 301, "batch_size": 64,
         "max_epochs": 2, "eval_batch_size": 128}


def forced_devices(n: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
    return env


def compare(n: int, overrides: dict, modes=("none", "pmap", "sharded"), timeout=600) -> dict:
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "parallel_worker.py"), json.dumps(overrides), ",".join(modes)],
        cwd=REPO, env=forced_devices(n), capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("n", [4, 8])
def test_pmap_and_sharded_match_one_device(n):
    """301 test examples: the eval remainder does not divide by the device count, yet every one counts."""
    result = compare(n, SMALL)
    assert result["num_devices"] == n
    base = result["none"]
    assert base["num_devices"] == 1
    for mode in ("pmap", "sharded"):
        r = result[mode]
        assert r["num_devices"] == n and r["parallel"] == mode
        assert round(r["val_acc"], 3) == round(base["val_acc"], 3)
        assert r["val_loss"] == pytest.approx(base["val_loss"], abs=1e-5)
        assert r["train_loss"] == pytest.approx(base["train_loss"], abs=1e-5)
        assert r["max_param_diff"] < 1e-5


def test_short_last_batch_and_chunks_under_pmap():
    result = compare(4, {**SMALL, "synthetic_train_size": 1000, "batch_size": 96, "steps_per_chunk": 4,
                         "optimizer": "momentum", "lr": 0.05})
    for mode in ("pmap", "sharded"):
        assert result[mode]["max_param_diff"] < 1e-5
        assert result[mode]["train_loss"] == pytest.approx(result["none"]["train_loss"], abs=1e-5)


def test_batch_that_does_not_split_evenly_is_refused_before_work(tmp_path):
    config = Config().replace(parallel="pmap", batch_size=66)
    with pytest.raises(ConfigError, match="--batch_size: 66 does not divide evenly across 4 devices"):
        parallel.make_placement(config, devices=["d0", "d1", "d2", "d3"])
    done = subprocess.run(
        [sys.executable, "-m", "experiments.train", "--dataset=synthetic", "--batch_size=66", "--parallel=sharded",
         f"--workdir={tmp_path}"],
        cwd=REPO, env=forced_devices(4), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == ConfigError.exit_code
    assert done.stderr.strip().splitlines()[-1].startswith("error: --batch_size: 66 does not divide evenly")
    assert not (tmp_path / "metrics.jsonl").exists()


def test_auto_mode_choice():
    assert parallel.resolve_mode(Config(), 1) == "none"
    assert parallel.resolve_mode(Config(), 4) == "sharded"
    assert parallel.resolve_mode(Config().replace(parallel="pmap"), 4) == "pmap"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_loopback_match_one_process(tmp_path):
    """2 processes x 2 CPU devices (gloo collectives) == 1 process x 4 devices, same global batch."""
    args = [f"--{k}={v}" for k, v in SMALL.items()]
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "experiments.train", *args, f"--workdir={tmp_path / 'multi'}",
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
            cwd=REPO, env=forced_devices(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "done:" in outputs[0][0] and "done:" not in outputs[1][0]  # only process 0 reports and writes
    single = subprocess.run(
        [sys.executable, "-m", "experiments.train", *args, f"--workdir={tmp_path / 'single'}"],
        cwd=REPO, env=forced_devices(4), capture_output=True, text=True, timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    multi_summary = json.load(open(tmp_path / "multi" / "summary.json"))
    single_summary = json.load(open(tmp_path / "single" / "summary.json"))
    assert multi_summary["device"]["process_count"] == 2 and multi_summary["num_devices"] == 4
    assert single_summary["num_devices"] == 4
    for key in ("train_loss", "val_loss", "val_acc"):
        assert multi_summary["final"][key] == pytest.approx(single_summary["final"][key], abs=1e-5), key
    rows = [json.loads(line) for line in open(tmp_path / "multi" / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_real_data_default_model_four_devices(data_dir):
    """The issue's acceptance check: default model, 2 epochs, 4 forced CPU devices, within 2e-3 of one device."""
    result = compare(4, {"data_dir": data_dir, "max_epochs": 2}, timeout=900)
    base = result["none"]
    for mode in ("pmap", "sharded"):
        for key in ("val_acc", "val_loss", "train_loss"):
            assert abs(result[mode][key] - base[key]) < 2e-3, (mode, key)
        # Parameters agree to ~1e-7 after one epoch; by the end of the second, float summation-order
        # differences have grown through 470 SGD steps to ~4e-4 in the largest weight, while the
        # metrics still agree to ~1e-4. The synthetic tests above pin parameters to 1e-5.
        assert result[mode]["max_param_diff"] < 5e-3


def test_checkpoint_from_four_devices_resumes_on_one(tmp_path):
    """Saved state is plain host arrays: a sharded 4-device run continues on a single device."""
    args = [f"--{k}={v}" for k, v in SMALL.items() if k != "max_epochs"]
    first = subprocess.run(
        [sys.executable, "-m", "experiments.train", *args, "--max_epochs=1", "--parallel=sharded",
         f"--workdir={tmp_path / 'run'}"],
        cwd=REPO, env=forced_devices(4), capture_output=True, text=True, timeout=300,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(
        [sys.executable, "-m", "experiments.train", *args, "--max_epochs=2", f"--workdir={tmp_path / 'run'}"],
        cwd=REPO, env=forced_devices(1), capture_output=True, text=True, timeout=300,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stdout
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["num_devices"] == 1 and summary["final"]["epoch"] == 2
    whole = subprocess.run(
        [sys.executable, "-m", "experiments.train", *args, "--max_epochs=2", f"--workdir={tmp_path / 'whole'}"],
        cwd=REPO, env=forced_devices(1), capture_output=True, text=True, timeout=300,
    )
    assert whole.returncode == 0
    reference = json.load(open(tmp_path / "whole" / "summary.json"))["final"]
    for key in ("train_loss", "val_loss", "val_acc"):
        assert summary["final"][key] == pytest.approx(reference[key], abs=1e-5), key
