"""What a researcher reads around a run: --help, TensorBoard read back, provenance, the best checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from faults import checkpoint_steps, rows

from conftest import REPO, tiny_config
from mlp_research.run.driver import train_and_evaluate


def test_help_lists_every_run_flag_grouped_with_defaults_and_choices():
    done = subprocess.run([sys.executable, "-m", "experiments.train", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for group in ("model:", "optimisation:", "data:", "run:", "checkpoints:", "parallel:"):
        assert f"\n{group}\n" in text, group
    assert "--model=STR  default mlp_scratch (one of: mlp_scratch, mlp)" in text
    assert "--lr=FLOAT  default 0.1" in text and "--num_hiddens=INT[,INT...]  default 256" in text
    assert "--optimizer=STR  default sgd (one of: sgd, momentum, nesterov, adam, adamw, rmsprop, adagrad, lamb)" in text
    assert "--max_epochs=INT  default 10" in text and "--vmap" in text and "--workdir" in text
    assert text.index("model:") < text.index("--lr=") < text.index("data:")


def test_tensorboard_events_read_back_match_the_metrics_rows(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    train_and_evaluate(tiny_config(max_epochs=3, schedule="cosine"), str(tmp_path))
    accumulator = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    want = rows(tmp_path)
    tags = set(accumulator.Tags()["scalars"])
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "examples_per_second"} <= tags
    for tag in ("train_loss", "val_acc", "lr"):
        events = accumulator.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3]
        np.testing.assert_allclose([e.value for e in events], [r[tag] for r in want], rtol=1e-6)
    assert want[0]["lr"] > want[1]["lr"] > want[2]["lr"]  # the cosine schedule, per epoch
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["optimizer"].string_value == "sgd" and hparams["lr"].number_value == pytest.approx(0.1)
    assert hparams["num_hiddens"].string_value == "256"
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
    assert end.session_end_info.status == 1  # success


def test_summary_records_the_code_version_next_to_versions_and_argv(tmp_path):
    summary = train_and_evaluate(tiny_config(max_epochs=1), str(tmp_path))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["code"]["commit"] == commit and isinstance(saved["code"]["dirty"], bool)
    assert "versions" in saved and "argv" in saved and summary["code"] == saved["code"]
    flops = saved["train_flops_per_example"]
    assert saved["achieved_gflops"] * saved["steady_epoch_seconds"] / saved["num_train"] * 1e9 == pytest.approx(flops)
    assert flops == 818_176  # 784-256-10: forward, weight gradients, and the second layer's input gradient


def test_provenance_outside_a_checkout_is_unknown(tmp_path):
    from mlp_research.run.summary import provenance

    assert provenance(str(tmp_path)) == {"commit": "unknown", "dirty": "unknown"}


def test_keep_best_keeps_the_best_epoch_through_ten_epochs_and_evaluate_reads_it(tmp_path):
    """lr 2.0 on this data makes val_acc move up and down, so the best epoch is not the last."""
    args = ["--dataset=synthetic", "--synthetic_train_size=1000", "--synthetic_test_size=300", "--batch_size=64",
            "--max_epochs=10", "--lr=2.0", "--keep_checkpoints=1", "--keep_best", "--checkpoint_min_seconds=0",
            "--progress=false", f"--workdir={tmp_path}"]
    done = subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    history = rows(tmp_path)
    best = max(history, key=lambda r: (r["val_acc"], -r["step"]))
    assert best["step"] != history[-1]["step"], "the setting must make the best epoch an earlier one"
    assert checkpoint_steps(tmp_path) == sorted({best["step"], history[-1]["step"]})
    done = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path}", "--checkpoint=best"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["step"] == best["step"] and result["test_acc"] == pytest.approx(best["val_acc"], abs=1e-6)
