"""The library's front door (`mlp_research.train_and_evaluate`, `train_group`): the command line's run, in Python."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, tiny_config
from mlp_research.run.metrics import read_rows


def test_train_and_evaluate_returns_what_the_command_line_writes(tmp_path):
    from mlp_research import Result, train_and_evaluate

    result = train_and_evaluate(tiny_config(max_epochs=2), str(tmp_path / "api"))
    assert isinstance(result, Result) and result.workdir == str(tmp_path / "api")
    assert list(result.rows) == read_rows(str(tmp_path / "api"))  # the rows are metrics.jsonl's
    assert result.final == json.load(open(tmp_path / "api" / "summary.json"))["final"]
    assert set(result.params) == set(tiny_config().canonical_shapes())
    assert result.paths["checkpoint"].startswith(str(tmp_path / "api" / "checkpoints"))

    flags = ["--dataset=synthetic", "--synthetic_train_size=1000", "--synthetic_test_size=300", "--batch_size=64",
             "--max_epochs=2", "--checkpoint_min_seconds=0", "--progress=false", f"--workdir={tmp_path / 'cli'}"]
    done = subprocess.run([sys.executable, "-m", "experiments.train", *flags], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    cli_rows = read_rows(str(tmp_path / "cli"))
    assert [(r.train_loss, r.val_acc) for r in cli_rows] == [(r.train_loss, r.val_acc) for r in result.rows]


def test_metrics_come_as_a_dataframe_indexed_by_epoch(tmp_path):
    pytest.importorskip("pandas")
    from mlp_research import train_and_evaluate

    frame = train_and_evaluate(tiny_config(max_epochs=2), str(tmp_path)).metrics
    assert list(frame.index) == [1, 2] and {"train_loss", "val_acc", "lr", "seconds"} <= set(frame.columns)


def test_a_group_in_one_call_gives_each_member_its_result(tmp_path):
    pytest.importorskip("pandas")
    from mlp_research import GroupResult, train_and_evaluate, train_group

    group = train_group(tiny_config(max_epochs=2), str(tmp_path / "g"), {"lr": [0.05, 0.2]})
    assert isinstance(group, GroupResult) and list(group.members) == ["lr=0.05", "lr=0.2"]
    alone = train_and_evaluate(tiny_config(max_epochs=2, lr=0.2), str(tmp_path / "alone"))
    member = group.members["lr=0.2"]
    assert [(r.train_loss, r.val_acc) for r in member.rows] == [(r.train_loss, r.val_acc) for r in alone.rows]
    assert all(np.array_equal(member.params[k], alone.params[k]) for k in alone.params)  # bit-identical
    frame = group.metrics
    assert set(frame["member"]) == {"lr=0.05", "lr=0.2"} and set(frame["config_lr"]) == {0.05, 0.2}
    assert len(frame) == 4 and list(frame.columns[:3]) == ["member", "config_lr", "epoch"]
    assert group.best.final["val_acc"] == max(m.final["val_acc"] for m in group.members.values())


def test_a_group_without_axes_is_refused_before_anything_is_written(tmp_path):
    from mlp_research import train_group
    from mlp_research.errors import ConfigError

    with pytest.raises(ConfigError, match="^--vmap: a group needs"):
        train_group(tiny_config(), str(tmp_path / "g"), {})
    assert not (tmp_path / "g").exists()


def test_importing_the_package_imports_no_framework():
    code = "import sys, mlp_research; print(sorted(m for m in ('jax', 'torch', 'tensorflow') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


def test_a_backend_written_without_the_base_class_runs_through_the_front_door(tmp_path):
    """The example backend implements the protocol from scratch (no `prepare`, `guard`): the front door adapts it."""
    from mlp_research import train_and_evaluate
    from mlp_research.testing.example_backend import NumpyBackend

    assert not hasattr(NumpyBackend, "prepare")
    result = train_and_evaluate(tiny_config(max_epochs=1), str(tmp_path), backend=NumpyBackend())
    assert result.final["epoch"] == 1 and 0 < result.final["val_acc"] <= 1
