"""Joint hyperparameter search with Optuna, shared by any number of worker processes.

Every trial is one run of the driver in `trials/trial_<n>/`, trained on the
training split and reporting validation accuracy after each epoch; Hyperband
stops trials that trail their peers at the same epoch. The study lives in an
Optuna RDB storage: an SQLite file in the workdir by default (the workers of
one machine), or any database URL (workers on several machines). Each running
trial sends heartbeats; a trial whose worker died (kill -9 included) goes stale,
is marked failed by the next worker that looks, and is retried with the same
parameters (Optuna's retry callback for stale trials), resuming from the dead trial's
checkpoints. Exactly `n_trials` trials finish however the workers race: a
trial that starts when `n_trials` others already finished or run gives up its
slot before training (it is recorded as failed with the user attribute
"surplus"). Every trial of one study trains for the same number of epochs,
because pruning compares trials at equal epochs, which is fair only when their
learning-rate schedules have the same length.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from typing import Any, Callable

import optuna

from mlp_research.config import Config
from mlp_research.run.workdir import CHECKPOINT_DIR

Log = Callable[[str], None]
# The rate each optimiser's sampled factor multiplies: one `lr_factor` distribution serves every
# optimiser (Optuna's importance needs one distribution per parameter), and the factor's effect
# can be compared across optimisers.
REFERENCE_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3,
                "adagrad": 0.01, "lamb": 1e-3}
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
LIVE = (*FINISHED, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


@dataclasses.dataclass
class StudySpec:
    """Everything a worker process needs to join the study (written as JSON for spawned workers)."""

    storage: str
    study_name: str
    n_trials: int
    base: dict  # the flat base config
    space: dict
    trials_dir: str
    seed: int = 0
    n_startup: int = 8
    heartbeat_seconds: int = 5
    grace_seconds: int = 30
    max_retry: int = 2

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "StudySpec":
        return cls(**json.loads(text))


class Surplus(Exception):
    """A trial that started after `n_trials` others were already finished or running: it does not train."""


def default_storage(workdir: str) -> str:
    return f"sqlite:///{os.path.abspath(os.path.join(workdir, 'study.db'))}"


# Optuna 4.9 renamed the retry callback and its storage argument; older releases know only the first names.
RETRY = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
RETRY_ARGUMENT = ("heartbeat_stale_trial_callback" if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
                  else "failed_trial_callback")


def make_storage(spec: StudySpec) -> optuna.storages.RDBStorage:
    """The RDB storage with heartbeats and retries of trials whose worker died."""
    engine = {"connect_args": {"timeout": 120}} if spec.storage.startswith("sqlite") else None
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's terms
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RETRY(spec.max_retry, inherit_intermediate_values=True)
        return optuna.storages.RDBStorage(spec.storage, engine_kwargs=engine,
                                          heartbeat_interval=spec.heartbeat_seconds, grace_period=spec.grace_seconds,
                                          **{RETRY_ARGUMENT: retry})


def open_study(spec: StudySpec, worker: int = 0) -> optuna.Study:
    """The shared study; each worker samples with its own seed, so workers never draw the same points."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # multivariate/group TPE is "experimental" in Optuna's terms
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=spec.seed + 1000 * worker, n_startup_trials=spec.n_startup,
                                             multivariate=True, group=True, constant_liar=True)
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=int(spec.space["epochs"]),
                                            reduction_factor=3)
    return optuna.create_study(study_name=spec.study_name, storage=make_storage(spec), sampler=sampler,
                               pruner=pruner, direction="maximize", load_if_exists=True)


def sample_config(trial: optuna.trial.BaseTrial, base: Config, space: dict) -> Config:
    """One point of the search space (see experiments/exercises/q5_joint_search.py for its fields)."""
    optimizer = trial.suggest_categorical("optimizer", list(space["optimizers"]))
    factor = trial.suggest_float("lr_factor", *space["lr_factor_range"], log=True)
    depth = trial.suggest_int("depth", *space["depth_range"])
    width = trial.suggest_categorical("width", list(space["widths"]))
    values: dict[str, Any] = dict(
        optimizer=optimizer, lr=REFERENCE_LR[optimizer] * factor, num_hiddens=(width,) * depth,
        activation=trial.suggest_categorical("activation", list(space["activations"])),
        batch_size=trial.suggest_categorical("batch_size", list(space["batch_sizes"])),
        schedule=trial.suggest_categorical("schedule", list(space["schedules"])),
        max_epochs=int(space["epochs"]))
    values["warmup_epochs"] = float(space.get("warmup_epochs", 1.0)) if values["schedule"] == "warmup_cosine" else 0.0
    if space.get("weight_decay_range"):
        values["weight_decay"] = trial.suggest_float("weight_decay", *space["weight_decay_range"], log=True)
    return base.replace(**values)


def trial_dir(spec: StudySpec, study: optuna.Study, trial: optuna.Trial) -> str:
    """A retried trial trains in its original's directory, so it resumes from the checkpoints left there."""
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        original = RETRY.retried_trial_number(frozen)
    return os.path.join(spec.trials_dir, f"trial_{trial.number if original is None else original}")


def _surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int) -> bool:
    ahead = [t for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < trial.number]
    return len(ahead) >= n_trials


class Objective:
    """Trains one sampled configuration through the driver, reporting val_acc per epoch to the pruner."""

    def __init__(self, spec: StudySpec, study: optuna.Study, log: Log, worker: int = 0):
        self.spec, self.study, self.log, self.worker = spec, study, log, worker
        self.base = Config.from_flat(spec.base)

    def __call__(self, trial: optuna.Trial) -> float:
        from mlp_research.run import driver

        if _surplus(self.study, trial, self.spec.n_trials):
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number}: {self.spec.n_trials} trials already finished or running")
        config = sample_config(trial, self.base, self.spec.space)
        workdir = trial_dir(self.spec, self.study, trial)
        trial.set_user_attr("config", json.loads(json.dumps(config.to_flat())))
        trial.set_user_attr("workdir", os.path.basename(workdir))
        trial.set_user_attr("worker", self.worker)
        t0 = time.perf_counter()
        before = float(trial.user_attrs.get("seconds", 0.0))  # a retry carries its dead attempt's time

        def on_epoch(epoch: int, rows: list) -> None:
            acc = rows[0].val_acc
            trial.report(acc if math.isfinite(rows[0].val_loss) else 0.0, epoch)
            trial.set_user_attr("epochs_trained", epoch)
            trial.set_user_attr("seconds", before + time.perf_counter() - t0)
            if trial.should_prune():
                self.log(f"[q5 w{self.worker}] trial {trial.number}: pruned after epoch {epoch} at val_acc "
                         f"{acc:.4f} ({describe(config)}, {time.perf_counter() - t0:.1f} s)")
                shutil.rmtree(os.path.join(workdir, CHECKPOINT_DIR), ignore_errors=True)
                raise optuna.TrialPruned()

        from mlp_research.errors import NonFiniteLossError

        try:
            summary = driver.train_and_evaluate(config, workdir, on_epoch=on_epoch)
        except NonFiniteLossError:
            self.log(f"[q5 w{self.worker}] trial {trial.number}: diverged ({describe(config)})")
            return 0.0
        value = summary["final"]["val_acc"]
        self.log(f"[q5 w{self.worker}] trial {trial.number}: val_acc {value:.4f} after {summary['final']['epoch']} "
                 f"epochs ({describe(config)}, {time.perf_counter() - t0:.1f} s)")
        return float(value)


def counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {s.name: states.count(s) for s in optuna.trial.TrialState}


def run_worker(spec: StudySpec, worker: int = 0, log: Log = print, poll_seconds: float = 1.0) -> int:
    """Work on the study until exactly `n_trials` trials finished; returns how many this worker ran.

    While the last trials run elsewhere the worker waits, failing stale trials as it polls, so a
    trial whose worker died is retried by one that is still alive.
    """
    study = open_study(spec, worker)
    objective = Objective(spec, study, log, worker)
    ran = 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        c = counts(study)
        done = c["COMPLETE"] + c["PRUNED"]
        if done >= spec.n_trials:
            return ran
        if c["WAITING"] or done + c["RUNNING"] < spec.n_trials:
            study.optimize(objective, n_trials=1, catch=(Surplus,))
            ran += 1
        else:
            time.sleep(poll_seconds)


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state in FINISHED]


def describe(config: Config) -> str:
    return (f"{config.optimizer} lr={config.lr:.3g} wd={config.weight_decay:.2g} "
            f"hiddens={list(config.model.num_hiddens)} "
            f"{config.model.activation} batch={config.batch_size} {config.schedule}")
