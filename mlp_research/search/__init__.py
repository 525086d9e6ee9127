"""Hyperparameter search over any settings of `experiments.train`, shared by worker processes and machines.

A space file (`experiments/search/*.py`, `space.py`) says which settings vary and
how; Optuna samples them (TPE, or random as a baseline) and stops trailing trials
early (Hyperband); every trial is an ordinary run of the driver in `W/trials/N/`
(`objective.py`). The study lives in one of Optuna's storages (`storage.py`): an
SQLite file in the workdir, a PostgreSQL database that workers on several
machines share, or a journal file on a shared file system. Heartbeats retry the
trials of workers that died, lost database connections are waited out, and
exactly `n_trials` trials finish however the workers race (`workers.py`).
`runner.py` runs a whole search and writes `W/search.md` and `W/search.png`.
"""
