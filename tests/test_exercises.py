"""Exercises: resumable sweeps through the driver, vmapped groups equal to single runs, the shared trial pool, the
question modules end to end, the report and its links."""

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
from experiments.exercises import ORDER, question, settings
from mlp_research.errors import ConfigError
from mlp_research.exercises import book, report, sweeps
from mlp_research.exercises.common import Context, Section, Table, deep_update
from mlp_research.exercises.plan import as_plan
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
        driver.train_group(members.Group.of(mixed, str(tmp_path / "mixed")))
    trials = [Trial("ok", tiny_config(lr=0.1)), Trial("bad", tiny_config(lr=1e6, init="normal", sigma=10.0))]
    summaries = run_sweep(trials, str(tmp_path / "div"), log=lambda line: None)
    assert [s["diverged"] for s in summaries] == [False, True]
    assert summaries[0]["final"]["train_acc"] > 0.5


TINY = {
    "q1": dict(widths=[4, 16], base=dict(max_epochs=1, train_subset=600)),
    "q2": dict(hiddens=[[16], [16, 16]], base=dict(max_epochs=1, train_subset=600)),
    "q3": dict(widths=[1, 16], base=dict(max_epochs=1, train_subset=600)),
    "q4": dict(lrs=[0.1, 0.3, 1e4], epoch_budgets=[1, 2, 3], base=dict(train_subset=600)),
    "q5": dict(n_trials=2, seeds=[0], retrain_seeds=[0, 1], top=1,
               space_overrides=dict(fixed=dict(train_subset=600), params=dict(width=dict(choices=[16])))),
    "q6": dict(hiddens=[[16], [16, 16]], models=["mlp_scratch", "mlp"], backends=["jax", "torch"], rounds=2,
               base=dict(train_subset=600)),
    "q7": dict(sizes=[64, 65], reps=1, rounds=2),
    "q8": dict(num_floats=2**20, reps=2, rounds=2),
    "q9": dict(activations=["relu", "tanh"], base=dict(num_hiddens=[16], max_epochs=1, train_subset=600)),
    "q10": dict(inits=["normal_0.01", "default", "zeros"], base=dict(num_hiddens=[16], max_epochs=1,
                                                                   train_subset=600)),
}


def _tiny(qid: str) -> dict:
    return deep_update(settings(qid, smoke=True), TINY[qid])


def test_report_renders_all_ten_sections_from_a_tiny_run(tmp_path):
    ctx = Context(workdir=str(tmp_path), dataset="synthetic", log=lambda line: None)
    sections = [question(qid).section(_tiny(qid), ctx) for qid in ORDER]
    text = render_report(sections, {}, "test", "synthetic", 1.0, ORDER)
    for qid, section in zip(ORDER, sections):
        assert f"## {qid.upper()}. " in text
        assert section.answer and section.tables and section.figures
        for fig in section.figures:
            assert (tmp_path / fig).is_file()
    assert report.broken_links(text, str(tmp_path)) == []
    # q4's grid has a row per learning rate and a column per epoch budget (div: every seed diverged).
    cell = r"(div|\**[0-9.]+ ±[0-9.]+\**)"
    assert re.search(rf"\| 0\.1 \| {cell} \| {cell} \| {cell} \|", text)
    assert re.search(rf"\| 10000 \| {cell} \| {cell} \| {cell} \|", text)
    for qid in ("q1", "q2", "q3", "q4", "q9", "q10"):  # every setting: per-seed values, a mean and its interval
        headline = next(s for s in sections if s.qid == qid).headline
        assert headline["seeds"] >= 3 and headline["train_examples"] == 600
        for setting in headline["settings"]:
            assert len(setting["stat"]) == len(setting["seeds"]) == headline["seeds"] and len(setting["ci95"]) == 2
    assert set(next(s for s in sections if s.qid == "q4").headline["best_lr_by_epochs"]) == {"1", "2", "3"}
    for qid in ("q6", "q7", "q8"):
        assert next(s for s in sections if s.qid == qid).headline["rounds"] == 2
    # A second pass reuses every trial: nothing trains again.
    lines: list[str] = []
    question("q1").section(_tiny("q1"), Context(workdir=str(tmp_path), dataset="synthetic", log=lines.append))
    assert lines and all("finished earlier" in line for line in lines)


def test_questions_share_identical_trials_and_plans_count_them_once(tmp_path, monkeypatch):
    """Q1's and Q3's width-16 runs are one config: trained once, listed once by the plans."""
    ctx = Context(workdir=str(tmp_path), dataset="synthetic", log=lambda line: None)
    plans = {q: as_plan(question(q).plan(_tiny(q), ctx)) for q in ("q1", "q3")}
    seen: set = set()
    q1, q3 = plans["q1"].work(seen), plans["q3"].work(seen)
    assert q1.epochs == 2 * 3 and q3.epochs == 1 * 3, "q3's width 16 is q1's: only width 1 is q3's own"
    question("q1").section(_tiny("q1"), ctx)
    assert plans["q3"].work(only_pending=True).epochs == 3
    calls = _count_groups(monkeypatch)
    question("q3").section(_tiny("q3"), ctx)
    assert calls.count(3) == 2, "width 1 trains (3 seeds); width 16 only reloads its parameters for the analysis"


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
    record = json.loads((work / "report.json").read_text())
    for qid in ORDER:
        assert f"## {qid.upper()}. " in text and "(failed)" not in text
        assert f"| [{qid.upper()}](#" in text, "the summary table links every question"
    assert "AVX-512:" in text and "AMX:" in text and " cores" in text.split("**Hardware:**")[1].split("\n")[0]
    assert report.broken_links(text, str(work)) == []
    assert len(re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)) >= 10
    sections = 10 + (book.find() is not None)  # the book comparison when the harness's results are in the tree
    assert text.count("**Answer.**") == sections and text.count("**Hardware.**") == sections
    if book.find() is not None:
        assert "## The chapter's default against the book's own code" in text and "figures/book_curves.png" in text
        assert {"jax", "torch", "factors"} <= set(record["book"])
    assert str(REPO) not in text and str(tmp_path) not in text
    assert {"commit", "generated", "device", "hardware", "wall_seconds"} <= set(record)
    for qid in ("q1", "q2", "q3", "q4", "q9", "q10"):
        assert record[qid]["seeds"] >= 3 and all(len(s["stat"]) == record[qid]["seeds"] and s["ci95"]
                                                 for s in record[qid]["settings"])
    assert len(record["q4"]["best_lr_by_epochs"]) >= 3
    assert all(record[q]["rounds"] >= 5 for q in ("q6", "q7", "q8"))
    q5 = record["q5"]  # issue 21's protocol: epochs searched, a random baseline, reruns, a retrain over seeds
    best = q5["best"]
    assert "max_epochs" in q5["space"] and q5["epochs"]["in_space"] and len(q5["reruns"]) >= 3
    assert q5["random_baseline"]["best_val_acc"] is not None and len(q5["top"]) == 3
    assert len(best["test_acc_values"]) >= 5 and best["ci95"][0] <= best["test_acc"] <= best["ci95"][1]
    assert {"val_acc", "hyperparameters", "command", "command_seed", "command_test_acc"} <= set(best)

    # --only reruns one question (reusing its stored results), keeps the other nine sections, adds the book
    # comparison's stored results, and publishes.
    stored = {"jax": {"mlp": {side: {"runs": [0.85, 0.86, 0.87]} for side in ("book", "project")}},
            "factors": [{"factor": "data order", "effect": 0.004}]}
    (tmp_path / "book.json").write_text(json.dumps(stored))
    proc = _report(args + ["--only=q8", f"--publish={tmp_path / 'pub'}", f"--book={tmp_path / 'book.json'}"], 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "measured earlier, reusing" in proc.stdout and "== q1" not in proc.stdout
    again = (work / "REPORT.md").read_text()
    assert all(f"## {qid.upper()}. " in again for qid in ORDER)
    assert "| [Book](#the-chapters-default-against-the-books-own-code) |" in again
    assert json.loads((work / "report.json").read_text())["book"]["jax"]["mlp"]["book"]["runs"] == [0.85, 0.86, 0.87]
    published = sum(p.stat().st_size for p in (tmp_path / "pub").rglob("*") if p.is_file())
    assert (tmp_path / "pub" / "report.json").is_file() and published < 5 * 2**20
    assert report.broken_links((tmp_path / "pub" / "REPORT.md").read_text(), str(tmp_path / "pub")) == []

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


def test_estimate_prints_every_questions_plan_and_runs_nothing(tmp_path):
    proc = _report(["--estimate", f"--workdir={tmp_path / 'w'}"], 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if re.match(r"\| q\d", line)}
    assert set(rows) == set(ORDER)
    assert "8 widths x 5 seeds x 10 epochs" in rows["q1"] and "| 400 | 21600000 |" in rows["q1"]
    assert "6 rates x 5 seeds x 40 epochs" in rows["q4"]
    assert "| total |" in proc.stdout and not (tmp_path / "w" / "trials").exists()


def test_published_report_links_resolve():
    path = REPO / "docs" / "exercises" / "REPORT.md"
    assert report.broken_links(path.read_text(), str(path.parent)) == []


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
