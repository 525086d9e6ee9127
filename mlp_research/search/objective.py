"""One trial: an ordinary run of the driver in `W/trials/N/`, reporting its metric to the pruner after each epoch.

A trial's directory holds what any run writes (metrics.jsonl, summary.json,
checkpoints, TensorBoard events), so `experiments.compare W/trials/*` reads it,
plus `trial.json`: the study, the trial's number, state, value and parameters.
A retried trial trains in its dead original's directory and resumes from the
checkpoints left there. A pruned trial stops after the epoch that pruned it: its
rows stay, its checkpoints are removed (nothing resumes a pruned trial), and
trial.json says `PRUNED` after how many epochs. A trial that starts when
`n_trials` others already finished or run gives up its slot before training
(recorded as failed, user attribute `surplus`), so exactly `n_trials` finish
however the workers race.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from typing import Callable

import optuna

from mlp_research.config import Config
from mlp_research.errors import NonFiniteLossError, PreemptedError, StoppedBeforeCheckpointError
from mlp_research.files import atomic_write
from mlp_research.run.compare import TRIAL_FILE
from mlp_research.run.workdir import CHECKPOINT_DIR
from mlp_research.search import study as study_lib
from mlp_research.search.space import Space, configure, suggest

Log = Callable[[str], None]


class Surplus(Exception):
    """A trial that started after `n_trials` others were already finished or running: it does not train."""


def train(config: Config, workdir: str, on_epoch: Callable) -> dict:
    """The one place a search calls the driver (its public entry point), so a change of that API is one edit."""
    from mlp_research.run import driver

    return driver.train_and_evaluate(config, workdir, on_epoch=on_epoch)


def worst_value(space: Space) -> float:
    """What a diverged trial scores: the worst its metric can be."""
    if space.metric.endswith("_acc"):
        return 0.0 if space.direction == "maximize" else 1.0
    return -math.inf if space.direction == "maximize" else math.inf


def trial_dir(spec: study_lib.SearchSpec, number: int, original: int | None) -> str:
    """A retried trial trains in its original's directory, so it resumes from the checkpoints left there."""
    return os.path.join(spec.trials_dir, str(number if original is None else original))


def _surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    ahead = [t for t in study.get_trials(deepcopy=False, states=study_lib.LIVE) if t.number < trial.number]
    return len(ahead) >= n_trials


def write_record(workdir: str, record: dict) -> None:
    atomic_write(os.path.join(workdir, TRIAL_FILE), json.dumps(record, indent=1, default=str) + "\n")


class Objective:
    """Trains one sampled configuration through the driver, reporting the metric per epoch to the pruner."""

    def __init__(self, spec: study_lib.SearchSpec, space: Space, study: optuna.Study, log: Log, worker: int = 0):
        self.spec, self.space, self.study, self.log, self.worker = spec, space, study, log, worker
        base = space.base(spec.data_dir)
        if not base.compilation_cache_dir:  # trials of one shape compile once for the whole search
            base = base.replace(compilation_cache_dir=os.path.join(os.path.abspath(spec.workdir), "jax_cache"))
        self.base = base

    def __call__(self, trial: optuna.Trial) -> float:
        if _surplus(self.study, trial, self.spec.n_trials):
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number}: {self.spec.n_trials} trials already finished or running")
        params = suggest(trial, self.space)
        config = configure(self.space, self.base, params)
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        original = study_lib.retried_from(frozen)
        workdir = trial_dir(self.spec, trial.number, original)
        os.makedirs(workdir, exist_ok=True)
        trial.set_user_attr("config", json.loads(json.dumps(config.as_dict())))
        trial.set_user_attr("workdir", os.path.relpath(workdir, self.spec.workdir))
        trial.set_user_attr("worker", self.worker)
        record = {"study": self.spec.study_name, "trial": trial.number, "retried_from": original,
                  "params": params, "state": "RUNNING", "config": config.as_dict()}
        write_record(workdir, record)
        t0, before = time.perf_counter(), float(trial.user_attrs.get("seconds", 0.0))  # a retry carries its time
        tag = f"[search w{self.worker}] trial {trial.number}"

        def on_epoch(epoch: int, rows: list) -> None:
            value = float(getattr(rows[0], self.space.metric))
            trial.report(value, study_lib.step_of(self.space, epoch, config.max_epochs))
            trial.set_user_attr("epochs_trained", epoch)
            trial.set_user_attr("seconds", before + time.perf_counter() - t0)
            if epoch < config.max_epochs and trial.should_prune():  # a finished trial's value is worth more
                self.log(f"{tag}: pruned after epoch {epoch} of {config.max_epochs} at {self.space.metric} "
                         f"{value:.4f} ({describe(params)}, {time.perf_counter() - t0:.1f} s)")
                shutil.rmtree(os.path.join(workdir, CHECKPOINT_DIR), ignore_errors=True)
                write_record(workdir, {**record, "state": "PRUNED", "epochs": epoch, "value": value})
                raise optuna.TrialPruned()

        try:
            summary = train(config, workdir, on_epoch)
        except (PreemptedError, StoppedBeforeCheckpointError):  # the worker was asked to stop: a rerun resumes it
            self.retry_later(trial)
            raise
        except NonFiniteLossError as e:
            trial.set_user_attr("diverged", str(e))
            self.log(f"{tag}: diverged ({describe(params)})")
            write_record(workdir, {**record, "state": "COMPLETE", "diverged": True, "value": worst_value(self.space)})
            return worst_value(self.space)
        value = float(summary["final"][self.space.metric])
        write_record(workdir, {**record, "state": "COMPLETE", "epochs": summary["final"]["epoch"], "value": value})
        self.log(f"{tag}: {self.space.metric} {value:.4f} after {summary['final']['epoch']} epochs "
                 f"({describe(params)}, {time.perf_counter() - t0:.1f} s)")
        return value


    def retry_later(self, trial: optuna.Trial) -> None:
        """Queue a retry of a trial stopped by a signal, as the heartbeat would for a dead worker's: the next worker
        (or a rerun) resumes it from the checkpoint the stop saved."""
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        callback = getattr(self.study._storage, "get_heartbeat_stale_trial_callback", lambda: None)()
        if callback is not None:
            callback(self.study, frozen)


def describe(params: dict) -> str:
    """Parameters in one short line: `lr=0.0123 optimizer=adam`."""
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
