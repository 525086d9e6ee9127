"""Vmapped groups as first-class runs: the same driver, the same outputs and guarantees as single runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from faults import one_line_error, rows, snapshot

from conftest import REPO, tiny_config
from mlp_research.errors import CheckpointMismatchError, NonFiniteLossError, PreemptedError
from mlp_research.run import driver, members

TINY = ["--dataset=synthetic", "--synthetic_train_size=1000", "--synthetic_test_size=300", "--batch_size=64",
        "--max_epochs=2", "--checkpoint_min_seconds=0"]


def train(workdir: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == expect, done.stderr[-3000:]
    return done


@pytest.mark.parametrize("overrides, axes", [
    (dict(), {"lr": ["0.05", "0.2"], "seed": ["0", "3"]}),
    (dict(optimizer="momentum", schedule="cosine", model="mlp"),
     {"momentum": ["0.5", "0.9"], "init": ["he", "xavier"]}),
    (dict(init="normal"), {"sigma": ["0.01", "0.1"]}),
], ids=["lr-x-seed", "momentum-x-init-cosine", "sigma"])
def test_every_member_equals_its_single_run_bit_for_bit(tmp_path, overrides, axes):
    base = tiny_config(val_fraction=0.2, test_at_end=True, **overrides)
    group = members.expand(base, axes, str(tmp_path / "group"))
    summaries = driver.train_group(group)
    for member, got in zip(group.members, summaries):
        alone = driver.train_and_evaluate(member.config, str(tmp_path / f"alone-{member.name}"))
        for name in alone["params"]:
            np.testing.assert_array_equal(alone["params"][name], got["params"][name])
        assert rows(Path(member.workdir)) == rows(tmp_path / f"alone-{member.name}")
        assert got["final"] == alone["final"] and not got["diverged"]


def test_a_member_that_diverges_is_recorded_and_the_others_go_on(tmp_path):
    base = tiny_config(init="normal", sigma=10.0)
    group = members.expand(base, {"lr": ["0.001", "1000000"]}, str(tmp_path))
    summaries = driver.train_group(group)
    assert [s["diverged"] for s in summaries] == [False, True]
    assert summaries[1]["first_nonfinite_step"] >= 0 and np.isfinite(summaries[0]["final"]["train_loss"])
    group_summary = json.loads((tmp_path / "summary.json").read_text())
    assert group_summary["best_member"] == "lr=0.001"
    assert [m["diverged"] for m in group_summary["members"]] == [False, True]
    assert json.loads((tmp_path / "lr=1e+06" / "summary.json").read_text())["status"] == "diverged"
    every = members.expand(base, {"lr": ["1000000", "10000000"]}, str(tmp_path / "all"))
    with pytest.raises(NonFiniteLossError, match="every member"):
        driver.train_group(every)


def test_group_outputs_resume_and_refusals_from_the_command_line(tmp_path):
    workdir = tmp_path / "g"
    done = train(workdir, *TINY, "--vmap=lr:0.05,0.1", "--vmap=seed:0,1")
    names = ["lr=0.05,seed=0", "lr=0.05,seed=1", "lr=0.1,seed=0", "lr=0.1,seed=1"]
    assert sorted(p.name for p in workdir.iterdir() if p.is_dir()) == names
    for name in names:  # exactly a single run's outputs
        assert {p.name for p in (workdir / name).iterdir()} >= {"metrics.jsonl", "summary.json", "curves.png",
                                                               "tensorboard", "checkpoints"}
    assert done.stdout.count("done [") == 4
    group = json.loads((workdir / "group.json").read_text())
    assert group["axes"] == {"lr": [0.05, 0.1], "seed": [0, 1]} and len(group["members"]) == 4
    before = snapshot(workdir)
    refused = train(workdir, *TINY, "--vmap=lr:0.05,0.2", expect=CheckpointMismatchError.exit_code)
    assert one_line_error(refused).startswith("error: --vmap: ") and snapshot(workdir) == before
    refused = train(workdir, *TINY, expect=CheckpointMismatchError.exit_code)
    assert "vmapped group" in one_line_error(refused) and snapshot(workdir) == before
    again = train(workdir, *TINY, "--max_epochs=3", "--vmap=lr:0.05,0.1", "--vmap=seed:0,1")
    assert again.stdout.count("resuming from") == 1 and len(rows(workdir / names[0])) == 3


@pytest.mark.parametrize("flags, message", [
    (["--vmap=batch_size:32,64"], "--vmap: 'batch_size' cannot vary"),
    (["--vmap=lr"], "--vmap: expected FIELD:V1,V2"),
    (["--vmap=lr:0.1,0.1"], "--vmap: the value behind lr=0.1 is listed twice"),
    (["--vmap=lr:0.1", "--vmap=lr:0.2"], "--vmap: lr is given twice"),
    (["--vmap=lr:0.1,-1"], "--lr: must be > 0"),
    (["--vmap=lr:0.1,0.2", "--parallel=pmap"], "--parallel: a vmapped group trains on one device"),
    (["--vmap=lr:0.1,0.2", "--backend=torch"], "--vmap: the torch backend trains one configuration at a time"),
])
def test_bad_groups_exit_2_with_one_line_and_leave_nothing(tmp_path, flags, message):
    done = train(tmp_path / "g", *TINY, *flags, expect=2)
    assert one_line_error(done).startswith(f"error: {message}")
    assert not (tmp_path / "g").exists()


def test_real_data_member_equals_single_run_evaluates_and_resumes_after_sigterm(tmp_path, data_dir):
    """Issue 11's acceptance: --vmap=lr:0.05,0.1 for 3 epochs on Fashion-MNIST."""
    args = [f"--data_dir={data_dir}", "--max_epochs=3", "--checkpoint_min_seconds=0", "--progress=true"]
    group, single = tmp_path / "group", tmp_path / "single"
    train(single, *args, "--lr=0.1")
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train", f"--workdir={group}", *args,
                             "--vmap=lr:0.05,0.1"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "epoch   1/3  [lr=0.1]" in line:
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=300)
    assert proc.returncode == PreemptedError.exit_code
    train(group, *args, "--vmap=lr:0.05,0.1")
    ours, theirs = rows(group / "lr=0.1"), rows(single)
    assert len(ours) == 3
    for a, b in zip(ours, theirs):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert abs(a[key] - b[key]) <= 1e-4, key
    done = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={group / 'lr=0.1'}"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["test_acc"] == pytest.approx(ours[-1]["val_acc"], abs=1e-6)
