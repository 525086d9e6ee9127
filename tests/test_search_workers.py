"""q5's search across worker processes: exactly n_trials finish, and a killed worker's trial is retried."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import optuna
import pytest

from conftest import REPO, tiny_config
from mlp_research.exercises import search, search_worker

SPACE = dict(optimizers=["adamw"], lr_factor_range=[0.5, 2.0], depth_range=[1, 1], widths=[32], activations=["relu"],
             batch_sizes=[64], schedules=["cosine"], epochs=2)


def _spec(tmp_path, n_trials: int, epochs: int, **base) -> str:
    config = tiny_config(val_fraction=0.2, model="mlp", **base)
    spec = search.StudySpec(storage=search.default_storage(str(tmp_path)), study_name="t", n_trials=n_trials,
                            base=config.to_flat(), space={**SPACE, "epochs": epochs},
                            trials_dir=str(tmp_path / "trials"), n_startup=1, heartbeat_seconds=1, grace_seconds=3)
    path = tmp_path / "study.json"
    path.write_text(spec.to_json())
    return str(path)


def _study(spec_path: str) -> optuna.Study:
    with open(spec_path) as f:
        return search.open_study(search.StudySpec.from_json(f.read()))


def _worker(spec_path: str, index: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlp_research.exercises.search_worker", spec_path, str(index)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_core_sets_pin_disjoint_cpus_only_when_there_are_enough():
    assert search_worker.core_sets(2, [0, 1]) == [[0], [1]]
    assert search_worker.core_sets(2, [0, 1, 2, 3]) == [[0, 1], [2, 3]]
    assert search_worker.core_sets(3, [0, 1]) == [[], [], []]
    assert search_worker.core_sets(1, [0, 1]) == [[]]


def test_two_worker_processes_finish_exactly_n_trials(tmp_path):
    spec_path = _spec(tmp_path, n_trials=5, epochs=2)
    lines: list[str] = []
    codes = search_worker.launch(spec_path, 2, lines.append)
    assert codes == [0, 0]
    trials = _study(spec_path).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in search.FINISHED]
    assert len(finished) == 5, [(t.number, t.state.name) for t in trials]
    # Anything else is a trial that gave up its slot before training, never a lost or extra one.
    others = [t for t in trials if t.state not in search.FINISHED]
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("surplus") for t in others)
    assert {t.user_attrs["worker"] for t in finished} <= {0, 1}


def test_a_killed_workers_trial_is_retried_not_lost(tmp_path):
    spec_path = _spec(tmp_path, n_trials=2, epochs=40, synthetic_train_size=3000, checkpoint_min_seconds=0.0)
    first = _worker(spec_path, 0)
    study = _study(spec_path)
    deadline, killed = time.monotonic() + 240, None
    while time.monotonic() < deadline and killed is None:
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if running and len(running[0].intermediate_values) >= 2:  # mid-trial, with a checkpoint behind it
            os.kill(first.pid, signal.SIGKILL)
            killed = running[0].number
        elif first.poll() is not None:
            pytest.fail("the worker finished before it could be killed:\n" + first.stdout.read()[-2000:])
        time.sleep(0.05)
    assert killed is not None, "no trial reached its second epoch in time"
    first.wait()
    second = _worker(spec_path, 1)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out[-3000:]
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert trials[killed].state == optuna.trial.TrialState.FAIL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        retries = [t for t in trials.values() if search.RETRY.retried_trial_number(t) == killed]
    assert len(retries) == 1 and retries[0].state in search.FINISHED, out[-3000:]
    retry = retries[0]
    assert retry.user_attrs["workdir"] == f"trial_{killed}", "the retry trains in the dead trial's directory"
    assert 1 in retry.intermediate_values  # what the dead attempt reported is kept
    assert sum(t.state in search.FINISHED for t in trials.values()) == 2
    if retry.state == optuna.trial.TrialState.COMPLETE:  # it resumed from the dead attempt's checkpoint
        summary = json.loads((tmp_path / "trials" / f"trial_{killed}" / "summary.json").read_text())
        assert summary["resumed_from_step"] and summary["resumed_from_step"] > 0
