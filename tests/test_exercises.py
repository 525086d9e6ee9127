"""Exercises: resumable sweeps through the driver, vmapped groups equal to single runs, noise statistics, the report."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, real_data_dir, tiny_config
from mlp_research.errors import ConfigError
from mlp_research.exercises import ORDER, question, report, stats, sweeps
from mlp_research.exercises.common import Context, Section, Table, deep_update, load_experiment
from mlp_research.exercises.report import render_report
from mlp_research.exercises.sweeps import Trial, run_sweep
from mlp_research.run import driver, members
from mlp_research.run.driver import train_and_evaluate


def _count_groups(monkeypatch) -> list[int]:
    """Record the size of every group the sweep hands to the driver."""
    calls: list[int] = []
    real = sweeps._train_group
    monkeypatch.setattr(sweeps, "_train_group", lambda group, *a, **k: calls.append(len(group)) or real(group, *a, **k))
    return calls


def test_sweep_resume_skips_finished_trials(tmp_path, monkeypatch):
    trials = [Trial(f"lr_{lr}", tiny_config(lr=lr, val_fraction=0.2)) for lr in (0.05, 0.2)]
    lines: list[str] = []
    first = run_sweep(trials[:1], str(tmp_path), log=lines.append)
    assert os.path.exists(tmp_path / "lr_0.05" / "summary.json")

    calls = _count_groups(monkeypatch)
    lines.clear()
    both = run_sweep(trials, str(tmp_path), log=lines.append)
    assert calls == [1], "only the unfinished trial may train"
    assert any("lr_0.05: finished earlier" in line for line in lines)
    assert both[0]["final"] == first[0]["final"]
    assert len(both[1]["history"]) == 2, "per-trial histories come from metrics.jsonl"

    calls.clear()
    run_sweep(trials, str(tmp_path), log=lines.append)
    assert calls == []  # everything finished: nothing trains

    changed = [Trial("lr_0.05", tiny_config(lr=0.05, val_fraction=0.2, max_epochs=1))]
    run_sweep(changed, str(tmp_path), log=lines.append)
    assert calls == [1], "a trial whose config changed must be retrained, not reused"


def test_corrupt_trial_summary_is_retrained_not_a_crash(tmp_path, monkeypatch, capsys):
    trial = Trial("t", tiny_config(val_fraction=0.2))
    good = run_sweep([trial], str(tmp_path), log=lambda line: None)[0]
    (tmp_path / "t" / "summary.json").write_text('{"config": {"lr": ')  # a half-written file
    calls = _count_groups(monkeypatch)
    again = run_sweep([trial], str(tmp_path), log=lambda line: None)[0]
    assert calls == [1]
    assert "summary.json: unreadable" in capsys.readouterr().err
    assert again["final"]["val_acc"] == pytest.approx(good["final"]["val_acc"], abs=1e-6)
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["final"]["epoch"] == 2


def _max_param_diff(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.mark.parametrize("group", [
    [dict(lr=0.05, seed=0), dict(lr=0.2, seed=1, init="xavier"), dict(lr=0.1, seed=2, init="normal", sigma=0.1)],
    [dict(lr=0.003, optimizer="adam", schedule="cosine", model="mlp", seed=0),
     dict(lr=0.01, optimizer="adam", schedule="cosine", model="mlp", seed=3, init="he")],
], ids=["sgd-constant", "adam-cosine"])
def test_vmap_equals_sequential_runs(tmp_path, group, monkeypatch):
    configs = [tiny_config(val_fraction=0.2, test_at_end=True, **overrides) for overrides in group]
    params: dict[int, dict] = {}

    def keep_params(config, summary: dict) -> dict:  # analysis gets the trained parameters from the driver
        params[config.seed] = summary["params"]
        return {"layers": len(summary["params"]) // 2}

    trials = [Trial(f"m{i}", c) for i, c in enumerate(configs)]
    calls = _count_groups(monkeypatch)
    summaries = run_sweep(trials, str(tmp_path / "sweep"), log=lambda line: None, analyse=keep_params)
    assert calls == [len(configs)], "same-shape trials train as one vmapped group"
    assert all(s["group"]["size"] == len(configs) for s in summaries)
    for i, (config, got) in enumerate(zip(configs, summaries)):
        ref = train_and_evaluate(config, str(tmp_path / f"ref{i}"))
        assert _max_param_diff(ref["params"], params[config.seed]) < 1e-5
        assert got["analysis"] == {"layers": 2}
        for key in ("train_loss", "val_loss", "test_loss"):
            assert abs(ref["final"][key] - got["final"][key]) < 1e-5, key
        assert got["final"]["val_acc"] == pytest.approx(ref["final"]["val_acc"], abs=1e-5)
    assert not any(s["diverged"] for s in summaries)


def test_vmap_group_rejects_mixed_shapes_and_marks_divergence(tmp_path):
    mixed = [members.Member("a", tiny_config(), str(tmp_path / "a")),
             members.Member("b", tiny_config(num_hiddens=(32,)), str(tmp_path / "b"))]
    with pytest.raises(ConfigError):
        driver.train(mixed, str(tmp_path / "mixed"))
    trials = [Trial("ok", tiny_config(lr=0.1)), Trial("bad", tiny_config(lr=1e6, init="normal", sigma=10.0))]
    summaries = run_sweep(trials, str(tmp_path / "div"), log=lambda line: None)
    assert [s["diverged"] for s in summaries] == [False, True]
    assert summaries[0]["final"]["train_acc"] > 0.5


def test_noise_rule_is_welchs_test():
    from scipy import stats as sps

    a, b = [0.81, 0.83, 0.82], [0.84, 0.86, 0.87]
    expected = sps.ttest_ind(a, b, equal_var=False).pvalue
    assert stats.welch_p(stats.spread(a), stats.spread(b)) == pytest.approx(expected, rel=1e-9)
    assert not stats.within_noise(stats.spread(a), stats.spread(b))  # p ~ 0.02
    assert stats.within_noise(stats.spread([0.81, 0.85, 0.83]), stats.spread([0.82, 0.86, 0.80]))
    best, tied, worse = stats.noise_groups(["a", "b", "c"], [stats.spread(a), stats.spread(b),
                                                             stats.spread([0.85, 0.88, 0.86])])
    assert (best, tied, worse) == (2, ["b"], ["a"])
    s = stats.spread([0.9, float("nan"), 0.8])  # a diverged seed is left out, and said so
    assert s.n == 2 and s.runs == 3 and "(2/3 seeds)" in stats.pm(s)
    assert stats.pm(stats.spread([0.9094])) == "0.9094 (1 seed)"  # no spread claimed from one run


TINY = {
    "q1": dict(widths=[4, 16], base=dict(max_epochs=1, train_subset=600)),
    "q2": dict(hiddens=[[16], [16, 16]], base=dict(max_epochs=1, train_subset=600)),
    "q3": dict(widths=[1, 16], seeds=[0, 1], base=dict(max_epochs=1, train_subset=600)),
    "q4": dict(lrs=[0.1, 1e4], epoch_budgets=[1, 2], speed_lrs=[0.1, 0.3], speed_epochs=2,
               base=dict(train_subset=600)),
    "q5": dict(n_trials=2, seeds=[0], retrain_seeds=[0, 1], top=1,
               space_overrides=dict(fixed=dict(train_subset=600), params=dict(width=dict(choices=[16])))),
    "q6": dict(hiddens=[[16], [16, 16]], models=["mlp_scratch", "mlp"], backends=["jax", "torch"],
               base=dict(max_epochs=2, train_subset=600)),
    "q7": dict(sizes=[64, 65], reps=1),
    "q8": dict(num_floats=2**20, reps=2),
    "q9": dict(activations=["relu", "tanh"], base=dict(num_hiddens=[16], max_epochs=1, train_subset=600)),
    "q10": dict(inits=["normal_0.01", "he", "zeros"], base=dict(num_hiddens=[16], max_epochs=1, train_subset=600)),
}


def _tiny(qid: str) -> dict:
    path = next(p for p in (REPO / "experiments" / "exercises").glob(f"{qid}_*.py"))
    return deep_update(load_experiment(str(path), smoke=True), TINY[qid])


def test_report_renders_all_ten_sections_from_a_tiny_run(tmp_path):
    ctx = Context(workdir=str(tmp_path), dataset="synthetic", log=lambda line: None)
    sections = [question(qid).section(_tiny(qid), ctx) for qid in ORDER]
    text = render_report(sections, {}, "test", "synthetic", 1.0, ORDER)
    for qid, section in zip(ORDER, sections):
        assert f"## {qid.upper()}. " in text
        assert section.answer and section.tables and section.figures
        for fig in section.figures:
            assert (tmp_path / fig).is_file()
    # q4's grid has a row per learning rate and a column per epoch budget; lr 1e4 diverges in every seed.
    assert re.search(r"\| 0\.1 \| [0-9.]+ ± [0-9.]+ \| [0-9.]+ ± [0-9.]+ \|", text)
    assert re.search(r"\| 10000 \| (div|[0-9.]+ ± [0-9.]+) \| (div|[0-9.]+ ± [0-9.]+) \|", text)
    for qid in ("q1", "q2", "q4", "q9", "q10"):  # honest comparisons: seeds, mean and std
        headline = next(s for s in sections if s.qid == qid).headline
        assert headline["seeds"] >= 3 and {"mean", "std"} <= set(headline["val_acc"])
    # A second pass reuses every trial: nothing trains again.
    lines: list[str] = []
    question("q1").section(_tiny("q1"), Context(workdir=str(tmp_path), dataset="synthetic", log=lines.append))
    assert lines and all("finished earlier" in line for line in lines)


def test_corrupt_stored_section_is_ignored_with_a_warning(tmp_path, capsys):
    section = Section("q3", "t", "q", [Table(["a"], [[1]])], [], "answer", "setup", "hw", {"seeds": 3})
    report.save_section(str(tmp_path), section)
    assert report.load_section(str(tmp_path), "q3").headline == {"seeds": 3}
    (tmp_path / "sections" / "q3.json").write_text("{not json")
    assert report.load_section(str(tmp_path), "q3") is None
    assert "unreadable stored section" in capsys.readouterr().err


def test_publish_refuses_absolute_paths_and_copies_linked_figures(tmp_path):
    work, target = tmp_path / "work", tmp_path / "pub"
    (work / "figures").mkdir(parents=True)
    (work / "figures" / "a.png").write_bytes(b"png")
    (work / "figures" / "unlinked.png").write_bytes(b"png")
    report.write_outputs(str(work), "# r\n\n![a](figures/a.png)\n", {"commit": "x"})
    written = report.publish(str(work), str(target))
    assert (target / "figures" / "a.png").is_file() and not (target / "figures" / "unlinked.png").exists()
    assert len(written) == 3
    report.write_outputs(str(work), f"data in {REPO}/data\n", {"commit": "x"})
    with pytest.raises(ConfigError, match="absolute paths"):
        report.publish(str(work), str(target))


def _report(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.report", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_report_flags_are_refused_with_one_line_and_exit_code_2(tmp_path):
    for args, flag in ((["--only=q11"], "--only"), (["--search_workers=0"], "--search_workers")):
        proc = _report([*args, "--synthetic", f"--workdir={tmp_path / 'w'}"], 120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith(f"error: {flag}")
    assert not (tmp_path / "w").exists()


def test_report_smoke_end_to_end(tmp_path):
    data = real_data_dir()
    args = ["--smoke", f"--workdir={tmp_path / 'w'}"] + ([f"--data_dir={data}"] if data else ["--synthetic"])
    start = time.perf_counter()
    proc = _report(args, 600)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seconds < 300, f"--smoke took {seconds:.0f} s"
    assert proc.stdout.count("== q") >= 20  # a start and an end line per question
    work = tmp_path / "w"
    text = (work / "REPORT.md").read_text()
    for qid in ORDER:
        assert f"## {qid.upper()}. " in text and "(failed)" not in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(links) >= 10
    for link in links:
        assert not os.path.isabs(link) and (work / link).is_file(), link
    assert text.count("**Answer.**") == 10 and text.count("**Hardware.**") == 10
    assert str(REPO) not in text and str(tmp_path) not in text
    record = json.loads((work / "report.json").read_text())
    assert {"commit", "generated", "device", "wall_seconds"} <= set(record)
    for qid in ("q1", "q2", "q4", "q9", "q10"):
        assert record[qid]["seeds"] >= 3 and "± " in text.split(f"## {qid.upper()}. ")[1].split("## ")[0]
    q5 = record["q5"]  # issue 21's protocol: epochs searched, a random baseline, reruns, a retrain over seeds
    best = q5["best"]
    assert "max_epochs" in q5["space"] and q5["epochs"]["in_space"] and len(q5["reruns"]) >= 3
    assert q5["random_baseline"]["best_val_acc"] is not None and len(q5["top"]) == 3
    assert len(best["test_acc_values"]) >= 5 and best["ci95"][0] <= best["test_acc"] <= best["ci95"][1]
    assert {"val_acc", "hyperparameters", "command", "command_seed", "command_test_acc"} <= set(best)

    # --only reruns one question (reusing its stored results), keeps the other nine sections, and publishes.
    proc = _report(args + ["--only=q8", f"--publish={tmp_path / 'pub'}"], 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "measured earlier, reusing" in proc.stdout and "== q1" not in proc.stdout
    again = (work / "REPORT.md").read_text()
    assert all(f"## {qid.upper()}. " in again for qid in ORDER)
    published = sum(p.stat().st_size for p in (tmp_path / "pub").rglob("*") if p.is_file())
    assert (tmp_path / "pub" / "report.json").is_file() and published < 5 * 2**20

    # q5's command retrains the chosen configuration from scratch (the seed nearest the mean) and lands inside the
    # interval of the mean, reproducing that seed's test accuracy.
    command = shlex.split(best["command"].replace("--workdir=runs/q5_best", f"--workdir={tmp_path / 'best'}"))
    assert command[:3] == ["python", "-m", "experiments.train"]
    proc = subprocess.run([sys.executable, *command[1:], "--progress=false"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "best" / "summary.json").read_text())
    assert summary["eval_split"] == "test"
    assert abs(summary["final"]["val_acc"] - best["command_test_acc"]) <= 0.005
    assert best["ci95"][0] <= summary["final"]["val_acc"] <= best["ci95"][1]


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
