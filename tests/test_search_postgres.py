"""A search against a real, password-protected PostgreSQL server: the password is never written or shown, and a
server restart in the middle of a search costs no trial (tests/postgres.py starts the server)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
from postgres import wait_for

from conftest import REPO
from mlp_research.search import storage, study

SPACES = REPO / "tests" / "search_spaces"


def search(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.search", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_the_password_reaches_no_file_and_no_output(postgres, tmp_path):
    url, password = postgres.create_database("secrets"), postgres.password
    with_password = url.replace("search@", f"search:{password}@")
    work = tmp_path / "w"
    (tmp_path / "pw").write_text(password + "\n")
    runs = [  # in this process with the password in the URL; two workers given it by a file; from the environment
        search("--space=" + str(SPACES / "tiny.py"), f"--workdir={work}", f"--storage={with_password}",
               "--n_trials=2"),
        search("--space=" + str(SPACES / "tiny.py"), f"--workdir={work}", f"--storage={url}", "--workers=2",
               "--n_trials=4", f"--storage_password_file={tmp_path / 'pw'}"),
        search("--space=" + str(SPACES / "tiny.py"), f"--workdir={work}", f"--storage={url}", "--n_trials=4",
               env={storage.PASSWORD_ENV: password}),
        search("--help", f"--storage={with_password}"),
        search("--space=" + str(SPACES / "tiny.py"), f"--workdir={tmp_path / 'other'}",
               f"--storage={with_password.replace('/secrets', '/nosuchdb')}"),
    ]
    assert [r.returncode for r in runs] == [0, 0, 0, 0, 14], [r.stderr[-1500:] for r in runs]
    assert "2 of 4 trials finished" in runs[1].stdout and "already has 4 finished" in runs[2].stdout
    assert "cannot be reached" in runs[4].stderr and runs[4].stderr.strip().count("\n") == 0
    for r in runs:
        assert password not in r.stdout + r.stderr
    assert files_holding(work, password) == []
    assert not (tmp_path / "other").exists()
    argv = [" ".join(json.loads(p.read_text())["argv"]) for p in work.glob("trials/*/summary.json")]
    assert any(f"search:***@127.0.0.1:{postgres.port}" in a for a in argv), "the in-process run's argv, redacted"
    print(f"password-protected {url}: {len(argv)} trials, {sum(1 for _ in work.rglob('*'))} paths in the workdir "
          "and 5 commands' output searched, the password in none")


def test_a_server_restart_mid_search_costs_no_trial(postgres, tmp_path):
    url, password = postgres.create_database("restart"), postgres.password
    env = {storage.PASSWORD_ENV: password}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.search", f"--space={SPACES / 'longer.py'}",
                             f"--workdir={tmp_path / 'w'}", f"--storage={url}", "--workers=2", "--n_trials=3",
                             "--heartbeat_seconds=1", "--grace_seconds=30", "--reconnect_seconds=60"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **env})
    spec = wait_for(lambda: _spec(tmp_path / "w"), 120, "the search to start")
    the_study = study.open_study(spec, spec.space(), password=password)

    def mid_trial():
        running = the_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return any(len(t.intermediate_values) >= 2 for t in running)

    wait_for(mid_trial, 240, "a trial in its third epoch", poll=0.1)
    restarted = datetime.datetime.now()
    postgres.pg_ctl("restart")
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-3000:]
    trials = the_study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in study.FINISHED]
    assert len(finished) == 3, [(t.number, t.state.name) for t in trials]
    assert all(t.user_attrs.get("surplus") for t in trials if t.state not in study.FINISHED), "no trial was lost"
    spanned = [t for t in finished if t.datetime_start < restarted < t.datetime_complete]
    assert spanned, "a trial ran through the restart and finished"
    waited = "reachable again" in out
    print(f"restarted PostgreSQL during trial(s) {[t.number for t in spanned]}"
          + (" (workers waited for it and reconnected)" if waited else "") + f"; {len(finished)} of 3 trials "
          "finished, none failed")


def _spec(work: Path) -> study.SearchSpec | None:
    try:
        return study.SearchSpec.from_json((work / "search.json").read_text())
    except (OSError, ValueError):
        return None


def test_a_database_gone_longer_than_the_wait_ends_in_one_line_and_a_rerun_continues(postgres, tmp_path):
    url, password = postgres.create_database("outage"), postgres.password
    env = {**os.environ, storage.PASSWORD_ENV: password}
    args = [sys.executable, "-m", "experiments.search", f"--space={SPACES / 'longer.py'}",
            f"--workdir={tmp_path / 'w'}", f"--storage={url}", "--n_trials=1", "--heartbeat_seconds=1",
            "--grace_seconds=4", "--reconnect_seconds=3"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    spec = wait_for(lambda: _spec(tmp_path / "w"), 120, "the search to start")
    the_study = study.open_study(spec, spec.space(), password=password)
    wait_for(lambda: any(len(t.intermediate_values) >= 2 for t in the_study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))), 240, "a trial in its third epoch")
    postgres.pg_ctl("stop")
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        postgres.pg_ctl("start")
    last = err.strip().splitlines()[-1]
    assert proc.returncode == 14 and last.startswith("error: the study's storage") and url in last, err[-2000:]
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = the_study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in study.FINISHED]
    assert len(finished) == 1 and study.retried_from(finished[0]) is not None, [(t.number, t.state.name)
                                                                                for t in trials]
    print(f"PostgreSQL stopped for longer than --reconnect_seconds: exit 14 with '{last[:90]}...'; "
          "the rerun finished the study, its interrupted trial retried")
