"""One study: what every worker needs to join it (`SearchSpec`), and the study with its sampler and pruner.

The spec is written to `W/search.json` for worker processes; it never holds a
password (workers get it from their environment, `storage.PASSWORD_ENV`). Each
worker samples with its own seed (`seed + 1000 * worker`), so workers never draw
the same points, and TPE's constant liar keeps running trials from being sampled
again. Hyperband stops trials that trail their peers at the same resource: the
epoch when every trial trains equally long, else the share of its own schedule
(percent), so that trials of different lengths are compared in the same phase of
their learning-rate schedules.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Any

import optuna

from mlp_research.errors import CheckpointMismatchError
from mlp_research.search import storage as storage_lib
from mlp_research.search.space import Space, load_space

SPEC_FILE = "search.json"
TRIALS_DIR = "trials"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
LIVE = (*FINISHED, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
PROGRESS_STEPS = 100  # the pruner's resource when trials differ in length: percent of a trial's schedule


@dataclasses.dataclass
class SearchSpec:
    """Everything a worker process needs to join the study (written as W/search.json)."""

    space_path: str
    workdir: str
    storage: str  # the URL without its password, or journal:PATH
    n_trials: int
    overrides: dict = dataclasses.field(default_factory=dict)  # merged into the space file's sections
    data_dir: str = ""
    heartbeat: int = 5
    grace: int = 60
    reconnect: int = 60
    study_name: str = ""

    def space(self) -> Space:
        return load_space(self.space_path, self.overrides)

    def settings(self) -> storage_lib.StorageSettings:
        return storage_lib.StorageSettings(self.heartbeat, self.grace, self.reconnect)

    @property
    def trials_dir(self) -> str:
        return os.path.join(self.workdir, TRIALS_DIR)

    @property
    def path(self) -> str:
        return os.path.join(self.workdir, SPEC_FILE)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "SearchSpec":
        return cls(**json.loads(text))


def check_workdir_study(spec: SearchSpec) -> None:
    """A workdir holds one study: a rerun continues it, another space or storage is refused (exit 7)."""
    try:
        with open(spec.path) as f:
            stored = json.load(f)
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        raise CheckpointMismatchError(f"{spec.path}: unreadable ({e}); use another --workdir") from None
    mine = dataclasses.asdict(spec)
    keys = ("study_name", "storage")
    differences = [f"{k}: {stored.get(k)!r} there, {mine[k]!r} now" for k in keys if stored.get(k) != mine[k]]
    if differences:
        raise CheckpointMismatchError(f"{spec.workdir} holds another study ({'; '.join(differences)}); use another "
                                      "--workdir, or the same space, settings and --storage to continue it")


def open_study(spec: SearchSpec, space: Space, worker: int = 0, password: str | None = None) -> optuna.Study:
    """The shared study (created if new), with this worker's sampler and the space's pruner."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are ours to report, in one line each
    if password is None:
        password = os.environ.get(storage_lib.PASSWORD_ENV, "")
    store = storage_lib.open_storage(spec.storage, password, spec.settings())
    with warnings.catch_warnings():  # multivariate/group TPE is "experimental" in Optuna's terms
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        seed = space.seed + 1000 * worker
        sampler: optuna.samplers.BaseSampler = (
            optuna.samplers.RandomSampler(seed=seed) if space.sampler == "random" else
            optuna.samplers.TPESampler(seed=seed, n_startup_trials=space.n_startup, multivariate=True, group=True,
                                       constant_liar=True))
    return optuna.create_study(study_name=spec.study_name, storage=store, sampler=sampler, pruner=pruner(space),
                               direction=space.direction, load_if_exists=True)


def pruner(space: Space) -> optuna.pruners.BasePruner:
    if space.pruner == "none":
        return optuna.pruners.NopPruner()
    high = space.max_epochs()
    if space.varying_epochs:
        low = max(1, round(PROGRESS_STEPS * space.min_epochs / high))
        return optuna.pruners.HyperbandPruner(min_resource=low, max_resource=PROGRESS_STEPS,
                                              reduction_factor=space.reduction_factor)
    return optuna.pruners.HyperbandPruner(min_resource=min(space.min_epochs, high), max_resource=high,
                                          reduction_factor=space.reduction_factor)


def step_of(space: Space, epoch: int, max_epochs: int) -> int:
    """The pruner's step after `epoch` of a trial that trains `max_epochs`."""
    return max(1, round(PROGRESS_STEPS * epoch / max_epochs)) if space.varying_epochs else epoch


def resource_label(space: Space) -> str:
    """What the pruner's steps count."""
    return "% of the trial's schedule" if space.varying_epochs else "epoch"


def step_label(space: Space, step: int) -> str:
    """One step in words: "epoch 3", or "80% of each trial's schedule"."""
    return f"{step}% of each trial's schedule" if space.varying_epochs else f"epoch {step}"


def counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {s.name: states.count(s) for s in optuna.trial.TrialState}


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state in FINISHED]


def retried_from(trial: Any) -> int | None:
    """The number of the dead trial this one retries (None for a first attempt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return storage_lib.RETRY.retried_trial_number(trial)


def fail_stale(study: optuna.Study) -> None:
    """Fail running trials whose worker stopped sending heartbeats; the storage's callback enqueues their retry."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
