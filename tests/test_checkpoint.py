"""Checkpoints: exact resume after a clean stop, SIGTERM or kill -9; refusal paths; evaluate/export."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, tiny_config
from mlp_research.errors import (
    CheckpointError,
    CheckpointMismatchError,
    PreemptedError,
    WorkdirLockedError,
)
from mlp_research.run.checkpoints import load_npz
from mlp_research.run.workdir import WorkdirLock

# Save at every due epoch/step (no minimum interval), so stops fall between real checkpoints.
SYNTHETIC = ["--dataset=synthetic", "--synthetic_train_size=6000", "--synthetic_test_size=500", "--batch_size=64",
             "--checkpoint_min_seconds=0"]


def train_cmd(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *args]


def run(workdir: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(train_cmd(workdir, *args), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == expect, done.stderr[-2000:]
    return done


def rows(workdir: Path) -> list[dict]:
    """metrics.jsonl rows, timings aside."""
    with open(workdir / "metrics.jsonl") as f:
        return [
            {k: v for k, v in json.loads(line).items() if k not in ("seconds", "examples_per_second")}
            for line in f
        ]


def start_and_interrupt(workdir: Path, args: list[str], after_line: str, sig: int, delay: float = 0.0) -> int:
    """Start a run, wait for a progress line, then send `sig` (after `delay` s); return the exit code."""
    proc = subprocess.Popen(train_cmd(workdir, *args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    try:
        for line in proc.stdout:
            if after_line in line:
                break
            assert time.monotonic() < deadline, "run never reached " + after_line
        else:
            pytest.fail(f"run ended before {after_line!r}: {proc.stderr.read()[-2000:]}")
        if delay:
            time.sleep(delay)
        proc.send_signal(sig)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 4-epoch synthetic run, chunked so that stops can fall mid-epoch."""
    workdir = tmp_path_factory.mktemp("reference")
    run(workdir, *SYNTHETIC, "--max_epochs=4", "--steps_per_chunk=10")
    return workdir


def test_clean_stop_then_more_epochs_equals_uninterrupted(tmp_path, reference):
    run(tmp_path, *SYNTHETIC, "--max_epochs=2", "--steps_per_chunk=10")
    assert len(rows(tmp_path)) == 2
    done = run(tmp_path, *SYNTHETIC, "--max_epochs=4", "--steps_per_chunk=10")
    assert "resuming from" in done.stdout
    assert rows(tmp_path) == rows(reference)
    ours, theirs = load_export(tmp_path), load_export(reference)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name])  # bit-identical parameters
    # Rerunning a finished run trains nothing and keeps the rows.
    done = run(tmp_path, *SYNTHETIC, "--max_epochs=4", "--steps_per_chunk=10")
    assert "already trained 4 epochs" in done.stdout
    assert rows(tmp_path) == rows(reference)


def load_export(workdir: Path) -> dict[str, np.ndarray]:
    out = workdir / "params.npz"
    subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}", f"--export={out}"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    return load_npz(str(out))[1]


def test_sigterm_mid_epoch_saves_and_resumes_exactly(tmp_path, reference):
    args = [*SYNTHETIC, "--max_epochs=4", "--steps_per_chunk=10", "--checkpoint_every_epochs=1"]
    code = start_and_interrupt(tmp_path, args, "epoch   2/4", signal.SIGTERM)
    assert code == PreemptedError.exit_code
    assert len(rows(tmp_path)) in (2, 3)
    run(tmp_path, *args)
    assert rows(tmp_path) == rows(reference)


def test_kill_9_at_random_moments_including_saves_always_resumes(tmp_path, reference):
    """Frequent saves (every 10 steps) make a kill during an asynchronous save likely."""
    args = [*SYNTHETIC, "--max_epochs=4", "--steps_per_chunk=10", "--checkpoint_every_steps=10",
            "--keep_checkpoints=2"]
    rng = random.Random(7)
    for trial in range(3):
        workdir = tmp_path / f"trial{trial}"
        code = start_and_interrupt(workdir, args, "epoch   1/4", signal.SIGKILL, delay=rng.uniform(0.0, 0.3))
        assert code == -signal.SIGKILL
        run(workdir, *args)
        assert rows(workdir) == rows(reference), f"trial {trial}"
        leftovers = [p.name for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
        assert leftovers == []


def test_unfinished_save_is_ignored_and_cleaned(tmp_path, reference):
    run(tmp_path, *SYNTHETIC, "--max_epochs=2", "--steps_per_chunk=10")
    fake = tmp_path / "checkpoints" / "9999.orbax-checkpoint-tmp-1234"
    fake.mkdir()
    (fake / "state").mkdir()
    run(tmp_path, *SYNTHETIC, "--max_epochs=4", "--steps_per_chunk=10")
    assert not fake.exists()
    assert rows(tmp_path) == rows(reference)


def test_mismatched_resume_is_refused_and_changes_nothing(tmp_path):
    run(tmp_path, *SYNTHETIC, "--max_epochs=1")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    done = run(tmp_path, *SYNTHETIC, "--max_epochs=2", "--num_hiddens=128", "--lr=0.2",
               expect=CheckpointMismatchError.exit_code)
    message = done.stderr.strip().splitlines()[-1]
    assert "num_hiddens: [256] -> [128]" in message and "lr: 0.1 -> 0.2" in message
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert before == after


def test_restart_discards_the_old_run(tmp_path):
    run(tmp_path, *SYNTHETIC, "--max_epochs=1")
    done = run(tmp_path, *SYNTHETIC, "--max_epochs=1", "--num_hiddens=64", "--restart")
    assert "resuming" not in done.stdout
    assert len(rows(tmp_path)) == 1
    assert json.load(open(tmp_path / "summary.json"))["config"]["num_hiddens"] == [64]


def test_second_process_on_same_workdir_is_refused(tmp_path):
    with WorkdirLock(str(tmp_path)):
        done = run(tmp_path, *SYNTHETIC, "--max_epochs=1", expect=WorkdirLockedError.exit_code)
    assert f"in use by process {os.getpid()}" in done.stderr
    run(tmp_path, *SYNTHETIC, "--max_epochs=1")  # the lock is free again


def test_corrupt_latest_checkpoint_falls_back_to_older(tmp_path):
    run(tmp_path, *SYNTHETIC, "--max_epochs=2")
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    latest = tmp_path / "checkpoints" / str(steps[-1])
    for f in (latest / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    done = run(tmp_path, *SYNTHETIC, "--max_epochs=2")
    assert f"checkpoint {latest}" in done.stderr and "unreadable" in done.stderr
    assert f"resuming from {tmp_path / 'checkpoints' / str(steps[0])}" in done.stdout
    assert len(rows(tmp_path)) == 2


def test_all_checkpoints_corrupt_is_an_error_naming_the_path(tmp_path):
    run(tmp_path, *SYNTHETIC, "--max_epochs=1", "--keep_checkpoints=1")
    ckpt = next(p for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    for f in (ckpt / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    done = run(tmp_path, *SYNTHETIC, "--max_epochs=2", expect=CheckpointError.exit_code)
    assert str(ckpt) in done.stderr.strip().splitlines()[-1]


def test_evaluate_prints_json_and_export_loads_without_pickle(tmp_path):
    run(tmp_path, *SYNTHETIC, "--max_epochs=2", "--model=mlp", "--num_hiddens=64,32")
    out = tmp_path / "p.npz"
    done = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path}", f"--export={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    summary = json.load(open(tmp_path / "summary.json"))
    assert result["test_acc"] == pytest.approx(summary["final"]["val_acc"], abs=1e-6)
    assert result["test_loss"] == pytest.approx(summary["final"]["val_loss"], rel=1e-5)
    spec, params = load_npz(str(out))
    assert spec.num_hiddens == (64, 32) and spec.model == "mlp"
    assert {k: v.shape for k, v in params.items()} == {
        "W1": (784, 64), "b1": (64,), "W2": (64, 32), "b2": (32,), "W3": (32, 10), "b3": (10,)}
    with np.load(out, allow_pickle=False) as data:  # no object arrays anywhere
        assert all(data[k].dtype != object for k in data.files)


def test_evaluate_without_checkpoint_fails_cleanly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == CheckpointError.exit_code
    assert "holds no checkpoint" in done.stderr.strip().splitlines()[-1]


def test_real_data_stops_after_epoch_two_resume_to_the_same_rows(tmp_path, data_dir):
    """The issue's acceptance check: default model, 4 epochs, stopped three ways after epoch 2."""
    args = [f"--data_dir={data_dir}", "--max_epochs=4", "--checkpoint_min_seconds=0"]
    run(tmp_path / "whole", *args)
    reference = rows(tmp_path / "whole")
    run(tmp_path / "clean", f"--data_dir={data_dir}", "--max_epochs=2", "--checkpoint_min_seconds=0")
    run(tmp_path / "clean", *args)
    assert start_and_interrupt(tmp_path / "term", args, "epoch   2/4", signal.SIGTERM) == PreemptedError.exit_code
    run(tmp_path / "term", *args)
    assert start_and_interrupt(tmp_path / "kill", args, "epoch   2/4", signal.SIGKILL) == -signal.SIGKILL
    run(tmp_path / "kill", *args)
    for name in ("clean", "term", "kill"):
        assert rows(tmp_path / name) == reference, name


def test_second_ctrl_c_exits_at_once_and_the_run_still_resumes(tmp_path):
    args = [*SYNTHETIC, "--max_epochs=30", "--steps_per_chunk=10"]
    proc = subprocess.Popen(train_cmd(tmp_path, *args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stdout:
            if "epoch   1/30" in line:
                break
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Killed by the second SIGINT (default handler), or, if the first was handled at once, the clean exit.
    assert proc.returncode in (-signal.SIGINT, PreemptedError.exit_code)
    done = run(tmp_path, *SYNTHETIC, "--max_epochs=2", "--steps_per_chunk=10")
    assert "resuming from" in done.stdout
    assert [r["epoch"] for r in rows(tmp_path)] == [1, 2]


def test_periodic_saves_respect_the_minimum_interval(tmp_path):
    """With the default 10 s minimum, a short run saves once, at the end; with 0, at every epoch."""
    args = [a for a in SYNTHETIC if not a.startswith("--checkpoint_min_seconds")]
    run(tmp_path / "default", *args, "--max_epochs=3", "--keep_checkpoints=0")
    run(tmp_path / "every", *args, "--max_epochs=3", "--keep_checkpoints=0", "--checkpoint_min_seconds=0")
    steps = {name: sorted(int(p.name) for p in (tmp_path / name / "checkpoints").iterdir() if p.name.isdigit())
             for name in ("default", "every")}
    assert steps["default"] == [282]  # 3 epochs x 94 steps
    assert steps["every"] == [94, 188, 282]


def test_a_checkpoint_in_the_older_layout_resumes(tmp_path, monkeypatch):
    """Before the backend base class the JAX core saved plain SGD's empty optimiser state as entries without
    arrays; today's layout leaves the key out. Such a checkpoint resumes, to the same parameters."""
    from mlp_research.jax_backend.trainer import JaxTrainer
    from mlp_research.run.driver import train_and_evaluate as train

    config = tiny_config(max_epochs=2, checkpoint_min_seconds=0)
    straight = train(config, str(tmp_path / "straight"))
    original = JaxTrainer._framework_state
    monkeypatch.setattr(JaxTrainer, "_framework_state", lambda self: (original(self)[0], [None, None]))
    monkeypatch.setattr("mlp_research.backends.base.Trainer.state_dict", _older_state_dict)
    train(config.replace(max_epochs=1), str(tmp_path / "old"))
    monkeypatch.undo()
    resumed = train(config, str(tmp_path / "old"))
    assert all(np.array_equal(resumed["params"][k], straight["params"][k]) for k in straight["params"])


def _older_state_dict(self):
    params, opt_state = self._framework_state()
    return {"step": np.asarray(self.step, np.int32), "params": params, "opt_state": opt_state}
