"""The fault suite, vmapped groups: a kill between two members' saves, members left at different steps, and a
checkpoints_set_aside/ that stays bounded. Every case resumes (exit 0) to the rows of an uninterrupted group."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faults import checkpoint_steps, rows

from conftest import REPO, tiny_config
from mlp_research.run import driver
from mlp_research.run import members as members_lib
from mlp_research.run.checkpoints import SET_ASIDE_DIR, SET_ASIDE_KEEP, Checkpoints

LRS = {"lr": ["0.05", "0.1"]}


def test_the_issues_reproduction_resumes_to_the_rows_of_an_uninterrupted_group(tmp_path):
    """Issue 23, defect 2, command for command: lr=0.05 holds only step 24, lr=0.1 only step 16."""
    script = """set -e
        S="--dataset=synthetic --synthetic_train_size=2000 --synthetic_test_size=500 --checkpoint_min_seconds=0"
        G="$S --vmap=lr:0.05,0.1 --keep_checkpoints=1"
        python -m experiments.train $G --max_epochs=2 --workdir=A
        cp -r A B; python -m experiments.train $G --max_epochs=3 --workdir=B
        rm -r "A/lr=0.05/checkpoints"; cp -r "B/lr=0.05/checkpoints" "A/lr=0.05/"
        python -m experiments.train $G --max_epochs=3 --workdir=A
        python -m experiments.train $G --max_epochs=3 --workdir=R"""
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "lr=0.1 behind the other members: training them alone up to step 24" in done.stdout
    for member in ("lr=0.05", "lr=0.1"):
        assert rows(tmp_path / "A" / member) == rows(tmp_path / "R" / member), member
        assert checkpoint_steps(tmp_path / "A" / member) == [24]


class Killed(BaseException):
    """What a kill -9 between two members' saves leaves, without the timing: the run ends right there."""


def group(workdir: Path, max_epochs: int) -> members_lib.Group:
    config = tiny_config(max_epochs=max_epochs, keep_checkpoints=1, checkpoint_min_seconds=0)
    return members_lib.expand(config, LRS, str(workdir))


def train(workdir: Path, max_epochs: int) -> None:
    driver.train_group(group(workdir, max_epochs))


def kill_at(monkeypatch, member: str, step: int) -> None:
    """The run dies as `member` starts to save `step` (the members before it have saved it)."""
    save = Checkpoints.save

    def dying(self, at, *args, **kwargs):
        if at == step and self.workdir.endswith(member):
            raise Killed()
        return save(self, at, *args, **kwargs)

    monkeypatch.setattr(Checkpoints, "save", dying)


def test_kills_between_members_saves_always_resume_and_set_aside_stays_bounded(tmp_path, monkeypatch):
    """Pruning waits until every member holds the newer step, so each kill leaves a step all members hold."""
    spe = 16  # steps per epoch: 1000 examples, batch 64
    reference = tmp_path / "reference"
    train(reference, 6)
    workdir = tmp_path / "g"
    first, second = (workdir / name for name in ("lr=0.05", "lr=0.1"))
    for epochs in range(2, 7):
        with monkeypatch.context() as patch:
            kill_at(patch, "lr=0.1", epochs * spe)
            with pytest.raises(Killed):
                train(workdir, epochs)
        assert checkpoint_steps(first) == [(epochs - 1) * spe, epochs * spe]  # the older step is not pruned yet
        assert checkpoint_steps(second) == [(epochs - 1) * spe]
        train(workdir, epochs)
        assert checkpoint_steps(first) == checkpoint_steps(second) == [epochs * spe]
        kept = sorted(p.name for p in (first / SET_ASIDE_DIR).iterdir())
        assert len(kept) == min(epochs - 1, SET_ASIDE_KEEP), kept  # the newest few, never more
    assert [int(name.split("-")[0]) for name in kept] == [4 * spe, 5 * spe, 6 * spe]
    for member in ("lr=0.05", "lr=0.1"):
        assert rows(workdir / member) == rows(reference / member), member


def test_a_member_without_checkpoints_trains_up_to_the_others(tmp_path):
    """Formerly exit 2 ("has no checkpoint while the others do"); now the member catches up from its start."""
    reference, workdir = tmp_path / "reference", tmp_path / "g"
    train(reference, 3)
    train(workdir, 2)
    shutil.rmtree(workdir / "lr=0.1" / "checkpoints")
    train(workdir, 3)
    for member in ("lr=0.05", "lr=0.1"):
        assert rows(workdir / member) == rows(reference / member), member
