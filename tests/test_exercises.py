"""Exercises: resumable sweeps, vmapped training equal to sequential runs, the report end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, real_data_dir, tiny_config
from mlp_research.exercises import sweeps
from mlp_research.exercises.common import Context, load_experiment
from mlp_research.exercises.questions import RUNNERS
from mlp_research.exercises.report import render_report
from mlp_research.exercises.sweeps import Trial, run_sweep
from mlp_research.exercises.vmap_sweep import cached_splits, train_group
from mlp_research.run.driver import train_and_evaluate

ORDER = [f"q{i}" for i in range(1, 11)]


def test_sweep_resume_skips_finished_trials(tmp_path, monkeypatch):
    trials = [Trial(f"lr_{lr}", tiny_config(lr=lr, val_fraction=0.2)) for lr in (0.05, 0.2)]
    lines: list[str] = []
    first = run_sweep(trials[:1], str(tmp_path), log=lines.append)
    assert os.path.exists(tmp_path / "lr_0.05" / "summary.json")

    calls = []
    real = sweeps.train_group
    monkeypatch.setattr(sweeps, "train_group", lambda configs, *a, **k: calls.append(len(configs)) or real(configs, *a, **k))
    lines.clear()
    both = run_sweep(trials, str(tmp_path), log=lines.append)
    assert calls == [1], "only the unfinished trial may train"
    assert any("lr_0.05: finished earlier" in line for line in lines)
    assert both[0]["final"] == first[0]["final"]

    calls.clear()
    run_sweep(trials, str(tmp_path), log=lines.append)
    assert calls == []  # everything finished: nothing trains

    changed = [Trial("lr_0.05", tiny_config(lr=0.05, val_fraction=0.2, max_epochs=1))]
    run_sweep(changed, str(tmp_path), log=lines.append)
    assert calls == [1], "a trial whose config changed must be retrained, not reused"


def _max_param_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.mark.parametrize("group", [
    [dict(lr=0.05, seed=0), dict(lr=0.2, seed=1, init="xavier"), dict(lr=0.1, seed=2, init="normal", sigma=0.1)],
    [dict(lr=0.003, optimizer="adam", schedule="cosine", model="mlp", seed=0),
     dict(lr=0.01, optimizer="adam", schedule="cosine", model="mlp", seed=3, init="he")],
], ids=["sgd-constant", "adam-cosine"])
def test_vmap_equals_sequential_runs(tmp_path, group):
    configs = [tiny_config(val_fraction=0.2, test_at_end=True, **overrides) for overrides in group]
    summaries, timing = train_group(configs, cached_splits(configs[0]))
    assert timing.members == len(configs)
    for i, (config, got) in enumerate(zip(configs, summaries)):
        ref = train_and_evaluate(config, str(tmp_path / f"ref{i}"))
        assert _max_param_diff(ref["params"], got["params"]) < 1e-5
        for key in ("train_loss", "val_loss", "test_loss"):
            assert abs(ref["final"][key] - got["final"][key]) < 1e-5, key
        assert got["final"]["val_acc"] == pytest.approx(ref["final"]["val_acc"], abs=1e-5)
    assert not any(s["diverged"] for s in summaries)


def test_vmap_group_rejects_mixed_shapes_and_marks_divergence():
    with pytest.raises(ValueError):
        train_group([tiny_config(), tiny_config(num_hiddens=(32,))], cached_splits(tiny_config()))
    configs = [tiny_config(lr=0.1), tiny_config(lr=1e6, init="normal", sigma=10.0)]
    summaries, _ = train_group(configs, cached_splits(configs[0]))
    assert [s["diverged"] for s in summaries] == [False, True]
    assert summaries[0]["final"]["train_acc"] > 0.5


TINY = {
    "q1": dict(widths=[4, 16], train_subset=600, base=dict(max_epochs=1)),
    "q2": dict(hiddens=[[16], [16, 16]], train_subset=600, base=dict(max_epochs=1)),
    "q3": dict(widths=[1, 16], seeds=[0, 1], train_subset=600, base=dict(max_epochs=1)),
    "q4": dict(lrs=[0.1, 1e4], epoch_budgets=[1, 2], speed_lrs=[0.1, 0.3], speed_epochs=2, train_subset=600),
    "q5": dict(space=dict(widths=[16], depth_range=[1, 1], epochs=[1, 2]), n_trials=2, timeout_s=0,
               train_subset=600),
    "q6": dict(hiddens=[[16], [16, 16]], models=["mlp_scratch", "mlp"], backends=["jax", "torch"], train_subset=600,
               base=dict(max_epochs=2)),
    "q7": dict(sizes=[64, 65], reps=1),
    "q8": dict(num_floats=2**20, reps=2),
    "q9": dict(activations=["relu", "tanh"], train_subset=600, base=dict(num_hiddens=[16], max_epochs=1)),
    "q10": dict(inits=["normal_0.01", "he", "zeros"], train_subset=600, base=dict(num_hiddens=[16], max_epochs=1)),
}


def test_report_renders_all_ten_sections_from_a_tiny_run(tmp_path):
    from mlp_research.exercises.common import deep_update

    ctx = Context(workdir=str(tmp_path), dataset="synthetic", log=lambda line: None)
    sections = []
    for qid in ORDER:
        path = next(p for p in (REPO / "experiments" / "exercises").glob(f"{qid}_*.py"))
        cfg = deep_update(load_experiment(str(path), smoke=True), TINY[qid])
        sections.append(RUNNERS[qid](cfg, ctx))
    text = render_report(sections, {}, "test", "synthetic", 1.0, ORDER)
    for qid, section in zip(ORDER, sections):
        assert f"## {qid.upper()}. " in text
        assert section.answer and section.tables and section.figures
        for fig in section.figures:
            assert (tmp_path / fig).is_file()
    # q4's grid has a row per learning rate and a column per epoch budget.
    assert re.search(r"\| 0\.1000 \| [0-9.]+ \| [0-9.]+ \|", text)
    assert re.search(r"\| 10,000 \| ([0-9.]+|nan) \| ([0-9.]+|nan) \|", text)
    # A second pass reuses every trial: nothing trains again.
    lines: list[str] = []
    RUNNERS["q1"](deep_update(load_experiment(str(REPO / "experiments/exercises/q1_width.py"), True), TINY["q1"]),
                  Context(workdir=str(tmp_path), dataset="synthetic", log=lines.append))
    assert lines and all("finished earlier" in line for line in lines)


def test_report_smoke_end_to_end(tmp_path):
    data = real_data_dir()
    args = [sys.executable, "-m", "experiments.report", "--smoke", f"--workdir={tmp_path}"]
    args += [f"--data_dir={data}"] if data else ["--synthetic"]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seconds < 300, f"--smoke took {seconds:.0f} s"
    assert proc.stdout.count("== q") >= 20  # a start and an end line per question
    report = (tmp_path / "REPORT.md").read_text()
    for qid in ORDER:
        assert f"## {qid.upper()}. " in report and "(failed)" not in report
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    assert len(links) >= 10
    for link in links:
        assert not os.path.isabs(link) and (tmp_path / link).is_file(), link
    assert report.count("**Answer.**") == 10 and report.count("**Hardware.**") == 10

    # --only reruns one question (reusing its stored results) and keeps the other nine sections.
    proc = subprocess.run(args + ["--only=q8"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "measured earlier, reusing" in proc.stdout and "== q1" not in proc.stdout
    again = (tmp_path / "REPORT.md").read_text()
    assert all(f"## {qid.upper()}. " in again for qid in ORDER)


def test_finished_trial_from_before_a_new_config_field_is_still_finished(tmp_path):
    """A summary written before a field existed (here matmul_precision) means that field's default."""
    trial = Trial("t", tiny_config(max_epochs=1))
    run_sweep([trial], str(tmp_path), log=lambda line: None)
    path = tmp_path / "t" / "summary.json"
    summary = json.loads(path.read_text())
    del summary["config"]["matmul_precision"], summary["config"]["compilation_cache_dir"]
    path.write_text(json.dumps(summary))
    assert sweeps.is_finished(trial, str(tmp_path)) is not None
    assert sweeps.is_finished(Trial("t", tiny_config(max_epochs=1, compilation_cache_dir="/tmp/c")), str(tmp_path))
    assert sweeps.is_finished(Trial("t", tiny_config(max_epochs=1, matmul_precision="bfloat16")), str(tmp_path)) is None
