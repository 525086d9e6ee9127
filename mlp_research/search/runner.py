"""A whole search: check everything, bring the study to exactly `n_trials` finished trials, write its report.

`prepare` refuses bad input before anything is written (a bad space file: exit 2;
Fashion-MNIST missing: 3; a workdir holding another study: 7; a storage that
cannot be reached: 14). `run_search` then writes `W/search.json`, works on the
study in this process (one worker) or in worker processes, and writes
`W/search.md` and `W/search.png`; a search that ends short of `n_trials` (a
worker failed) says so with exit 13, and rerunning the same command continues it.
`experiments.search` and the report's Q5 both run searches through here.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import optuna

from mlp_research.errors import PreemptedError, SearchError, StudyStorageError
from mlp_research.files import atomic_write
from mlp_research.run import signals
from mlp_research.search import analysis
from mlp_research.search import storage as storage_lib
from mlp_research.search import study as study_lib
from mlp_research.search.report import write_report
from mlp_research.search.space import Space, load_space
from mlp_research.search.workers import launch, run_worker

Log = Callable[[str], None]


@dataclasses.dataclass
class Outcome:
    """A finished search: its spec and space, the finished trials' records, trial counts by state, seconds."""

    spec: study_lib.SearchSpec
    space: Space
    trials: list[dict]
    counts: dict
    seconds: float
    report: str


def prepare(space_path: str, workdir: str, *, storage: str = "", password: str = "", n_trials: int = 0,
            overrides: dict | None = None, data_dir: str = "",
            settings: storage_lib.StorageSettings | None = None) -> tuple[study_lib.SearchSpec, Space]:
    """The checked spec and space of a search; nothing is written, the storage is only opened."""
    settings = settings or storage_lib.StorageSettings()
    space = load_space(space_path, overrides)
    spec = study_lib.SearchSpec(
        space_path=os.path.relpath(os.path.abspath(space_path)), workdir=os.path.abspath(workdir),
        storage=storage or storage_lib.default_url(workdir), n_trials=n_trials or space.n_trials,
        overrides=overrides or {}, data_dir=os.path.abspath(data_dir) if data_dir else "",
        heartbeat=settings.heartbeat, grace=settings.grace, reconnect=settings.reconnect,
        study_name=space.study_name())
    _check_data(space.base(spec.data_dir))
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        from mlp_research.errors import ConfigError

        raise ConfigError(f"--workdir: {workdir} exists and is not a directory")
    study_lib.check_workdir_study(spec)
    if storage:  # a database elsewhere: reachable before anything is written (the default lives in the workdir)
        storage_lib.open_storage(spec.storage, password, settings)
    return spec, space


def _check_data(base) -> None:
    """Fashion-MNIST's files, before any worker starts (each trial would fail on its own otherwise)."""
    directory = base.resolved_data_dir()
    if base.dataset == "fashion_mnist" and base.data_source != "tfds" and directory:
        from mlp_research.data import idx

        idx.find_files(directory)


def start(spec: study_lib.SearchSpec, space: Space, password: str = "") -> optuna.Study:
    """Write the spec that worker processes read, and create the study (or find it)."""
    os.makedirs(spec.trials_dir, exist_ok=True)
    atomic_write(spec.path, spec.to_json())
    return study_lib.open_study(spec, space, 0, password)


def run_search(spec: study_lib.SearchSpec, space: Space, workers: int = 1, password: str = "",
               log: Log = print) -> Outcome:
    """Bring the study to `n_trials` finished trials and write its report (see the module docstring)."""
    t0 = time.perf_counter()
    study = start(spec, space, password)
    done = len(study_lib.finished_trials(study))
    if done >= spec.n_trials:
        log(f"[search] study {spec.study_name} already has {done} finished trials")
    else:
        log(f"[search] study {spec.study_name} in {storage_lib.redact(spec.storage)}: {done} of {spec.n_trials} "
            f"trials finished, {workers} worker(s)")
        if workers == 1:
            run_worker(spec, 0, log, password=password)
        else:
            codes = launch(spec, workers, password, log)
            if signals.STOP.requested or PreemptedError.exit_code in codes:
                raise PreemptedError("stopped by a signal; the trials it interrupted resume when the same command "
                                     "runs again")
            if StudyStorageError.exit_code in codes:
                raise StudyStorageError(f"the study's storage {storage_lib.redact(spec.storage)} became "
                                        "unreachable; rerun the same command to continue the study")
    counts = study_lib.counts(study)
    trials = analysis.records(study)
    seconds = time.perf_counter() - t0
    path = write_report(spec, space, trials, counts, seconds)
    if len(trials) < spec.n_trials:
        raise SearchError(f"the study has {len(trials)} finished trials, not {spec.n_trials} (a worker failed); "
                          "rerun the same command to continue it")
    return Outcome(spec, space, trials, counts, seconds, path)
