"""Search workers across processes: exactly n_trials finish, a SIGKILLed worker's trial is retried, in every storage.

The storages are Optuna's own: SQLite in the workdir (the command's default), the journal file (machines that
share a file system) and a real PostgreSQL server (machines that share a database; tests/postgres.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from postgres import free_port, wait_for

from conftest import REPO
from mlp_research.search import runner, storage, study, workers

TINY = str(REPO / "tests" / "search_spaces" / "tiny.py")
FAST = storage.StorageSettings(heartbeat=1, grace=4, reconnect=30)


def search(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.search", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_core_sets_pin_disjoint_cpus_only_when_there_are_enough():
    assert workers.core_sets(2, [0, 1]) == [[0], [1]]
    assert workers.core_sets(2, [0, 1, 2, 3]) == [[0, 1], [2, 3]]
    assert workers.core_sets(3, [0, 1]) == [[], [], []]
    assert workers.core_sets(1, [0, 1]) == [[]]


def assert_complete_run(workdir: str, trial: optuna.trial.FrozenTrial) -> None:
    """A finished trial's directory holds a whole run: rows for each epoch it trained, and for a complete trial
    its summary and final checkpoint."""
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    record = json.load(open(os.path.join(workdir, "trial.json")))
    epochs = trial.user_attrs["epochs_trained"]
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1)), workdir
    assert record["state"] == trial.state.name
    if trial.state == optuna.trial.TrialState.COMPLETE:
        summary = json.load(open(os.path.join(workdir, "summary.json")))
        assert summary["final"]["epoch"] == epochs == summary["config"]["max_epochs"]
        assert summary["final"]["val_acc"] == pytest.approx(trial.value)
        assert str(summary["final"]["step"]) in os.listdir(os.path.join(workdir, "checkpoints"))


def test_search_command_finishes_exactly_n_trials_reruns_continue_and_the_dashboard_shows_it(tmp_path):
    work = tmp_path / "w"
    done = search(f"--space={TINY}", f"--workdir={work}", "--workers=2", "--n_trials=5", "--grace_seconds=20")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "search: 5 of 5 trials finished" in done.stdout
    spec = study.SearchSpec.from_json((work / "search.json").read_text())
    trials = study.open_study(spec, spec.space()).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in study.FINISHED]
    assert len(finished) == 5, [(t.number, t.state.name) for t in trials]
    # Anything else is a trial that gave up its slot before training, never a lost or extra one.
    assert all(t.user_attrs.get("surplus") for t in trials if t.state not in study.FINISHED)
    for t in finished:
        assert_complete_run(str(work / "trials" / str(t.number)), t)
    assert (work / "search.png").stat().st_size > 1000
    text = (work / "search.md").read_text()
    assert "5 of 5 trials finished" in text and text.count("| trials/") == 5
    compare = subprocess.run([sys.executable, "-m", "experiments.compare", *map(str, (work / "trials").iterdir())],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert compare.returncode == 0 and compare.stdout.count("/trials/") == 5, compare.stderr
    assert "in progress" not in compare.stdout and "| ? |" not in compare.stdout, compare.stdout  # pruned: named
    again = search(f"--space={TINY}", f"--workdir={work}", "--n_trials=5")
    assert again.returncode == 0 and "already has 5 finished trials" in again.stdout, again.stderr
    assert_dashboard_lists(f"sqlite:///{work / 'study.db'}", spec.study_name, 5)


def assert_dashboard_lists(url: str, study_name: str, n_trials: int) -> None:
    """optuna-dashboard, started as WORKSPACE.md says, serves its page and the study's trials on 127.0.0.1."""
    port = free_port()
    command = [os.path.join(os.path.dirname(sys.executable), "optuna-dashboard"), url, f"--port={port}", "--quiet"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(base + "/api/meta") is not None or proc.poll() is not None, 60, "the dashboard")
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        page = _get(base + "/dashboard")
        assert page is not None and "<html" in page.lower()
        studies = json.loads(_get(base + "/api/studies"))["study_summaries"]
        study_id = next(s["study_id"] for s in studies if s["study_name"] == study_name)
        detail = json.loads(_get(f"{base}/api/studies/{study_id}"))
        states = [t["state"] for t in detail["trials"]]
        assert states.count("Complete") + states.count("Pruned") == n_trials, states
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return None


def _storage_url(kind: str, tmp_path, request) -> tuple[str, str]:
    if kind == "journal":
        return f"journal:{tmp_path / 'shared' / 'study.log'}", ""
    server = request.getfixturevalue("postgres")
    return server.create_database(f"kill_{os.getpid()}_{int(time.time() * 1000) % 10**8}"), server.password


@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_a_sigkilled_workers_trial_is_retried_not_lost(kind, tmp_path, request):
    url, password = _storage_url(kind, tmp_path, request)
    overrides = {"fixed": {"max_epochs": 30, "synthetic_train_size": 3000}, "pruner": {"name": "none"}}
    spec, space = runner.prepare(TINY, str(tmp_path / "w"), storage=url, password=password, n_trials=2,
                                 overrides=overrides, settings=FAST)
    the_study = runner.start(spec, space, password)
    env = {**os.environ, storage.PASSWORD_ENV: password}
    procs = [subprocess.Popen([sys.executable, "-m", "mlp_research.search.workers", spec.path, str(i)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for i in (0, 1)]

    def mid_trial():
        running = the_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return next((t for t in running if len(t.intermediate_values) >= 2 and t.user_attrs.get("worker") == 0), None)

    victim = wait_for(mid_trial, 240, "worker 0 in its trial's third epoch", poll=0.05)
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    out, _ = procs[1].communicate(timeout=300)
    assert procs[1].returncode == 0, out[-3000:]
    trials = {t.number: t for t in the_study.get_trials(deepcopy=False)}
    assert trials[victim.number].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials.values() if study.retried_from(t) == victim.number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE, out[-3000:]
    assert retries[0].user_attrs["workdir"] == f"trials/{victim.number}", "the retry trains in the dead trial's place"
    assert 1 in retries[0].intermediate_values  # what the dead attempt reported is kept
    finished = [t for t in trials.values() if t.state in study.FINISHED]
    assert len(finished) == 2, [(t.number, t.state.name) for t in trials.values()]
    for t in finished:
        assert_complete_run(os.path.join(spec.trials_dir, t.user_attrs["workdir"].split("/")[-1]), t)
    summary = json.load(open(os.path.join(spec.trials_dir, str(victim.number), "summary.json")))
    assert summary["resumed_from_step"] and summary["resumed_from_step"] > 0, "it resumed from the dead checkpoint"
    print(f"{kind}: killed worker 0 in trial {victim.number} after epoch {len(victim.intermediate_values)}; "
          f"trial {retries[0].number} retried it from step {summary['resumed_from_step']}; "
          f"{len(finished)} of 2 trials finished")


def test_a_stopped_search_resumes_its_interrupted_trials_when_rerun(tmp_path):
    """SIGTERM to the command stops its workers at their next safe point (exit 5); the rerun finishes the study,
    the interrupted trials retried from the checkpoints the stop saved."""
    work, longer = tmp_path / "w", str(REPO / "tests" / "search_spaces" / "longer.py")
    args = [sys.executable, "-m", "experiments.search", f"--space={longer}", f"--workdir={work}", "--workers=2",
            "--n_trials=2"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    spec = wait_for(lambda: (work / "search.json").exists() and study.SearchSpec.from_json(
        (work / "search.json").read_text()), 120, "the search to start")
    the_study = study.open_study(spec, spec.space())

    def mid_trial():
        running = the_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return next((t for t in running if len(t.intermediate_values) >= 2), None)

    stopped = wait_for(mid_trial, 240, "a trial in its third epoch")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 5 and "stopped by a signal" in err.strip().splitlines()[-1], err[-2000:]
    again = search(f"--space={longer}", f"--workdir={work}", "--workers=2", "--n_trials=2")
    assert again.returncode == 0, again.stderr[-3000:]
    trials = the_study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in study.FINISHED]
    retried = [t for t in finished if study.retried_from(t) == stopped.number]
    assert len(finished) == 2 and len(retried) == 1, [(t.number, t.state.name) for t in trials]
    # It resumed from the checkpoint the stop saved (a trial the signal caught in its start-up starts over).
    summary = json.load(open(work / retried[0].user_attrs["workdir"] / "summary.json"))
    assert summary["resumed_from_step"] and summary["resumed_from_step"] > 0
