"""Search any settings of experiments.train with Optuna (TPE + Hyperband), in worker processes and on several machines.

    python -m experiments.search --space=experiments/search/example.py --workdir=W [--storage=URL] [--workers=N]
        [--n_trials=N] [--data_dir=DIR]

Each trial is an ordinary run in W/trials/N/ (`python -m experiments.compare W/trials/*` reads them);
W/search.md and W/search.png hold the table, the best trial's command and the importances. Rerunning the
same command continues the study. Machines join one study by running the same command with the same
--storage=postgresql://USER@HOST:PORT/DB (its password from $MLP_RESEARCH_STORAGE_PASSWORD, PGPASSWORD or
--storage_password_file rather than the command line; it is never written or shown), or
--storage=journal:/shared/path/study.log on a shared file system. Watch a study with `optuna-dashboard URL`.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from mlp_research import cli
from mlp_research.config import DATA_DIR_ENV
from mlp_research.errors import ConfigError, UserError

flags.DEFINE_string("space", None, "Space file (experiments/search/*.py): the settings searched, the objective and "
                    "the budget.")
flags.DEFINE_string("workdir", None, "Output directory: W/trials/N/, W/search.md, W/search.png (default: "
                    "runs/search-<space>).")
flags.DEFINE_string("storage", "", "Optuna storage: sqlite:///FILE, postgresql://USER@HOST:PORT/DB (or any "
                    "SQLAlchemy URL), journal:FILE (default: sqlite in the workdir).")
flags.DEFINE_string("storage_password_file", "", "File holding the storage's password (instead of the URL).")
flags.DEFINE_integer("workers", 1, "Worker processes on this machine (1: search in this process).")
flags.DEFINE_integer("n_trials", 0, "Trials that finish (complete or pruned); 0: the space file's budget.")
flags.DEFINE_integer("seed", -1, "Sampler seed (another seed is another study); -1: the space file's.")
flags.DEFINE_enum("sampler", "", ["", "tpe", "random"], "Sampler (random: a baseline); default: the space file's.")
flags.DEFINE_string("data_dir", "", "Fashion-MNIST IDX directory for every trial (default: the space file's, "
                    f"else ${DATA_DIR_ENV}).")
flags.DEFINE_integer("heartbeat_seconds", 5, "How often a running trial says it is alive.")
flags.DEFINE_integer("grace_seconds", 60, "A trial silent this long is failed and retried (its worker died).")
flags.DEFINE_integer("reconnect_seconds", 60, "How long workers wait for a lost database before they stop.")
FLAGS = flags.FLAGS


def _overrides() -> dict:
    sampler = {k: v for k, v in (("seed", FLAGS.seed), ("name", FLAGS.sampler)) if v not in (-1, "")}
    return {"sampler": sampler} if sampler else {}


def _check_flags() -> None:
    if not FLAGS.space:
        raise ConfigError("--space: required (a space file, e.g. experiments/search/example.py)")
    for name, low in (("workers", 1), ("n_trials", 0), ("heartbeat_seconds", 1), ("grace_seconds", 1),
                      ("reconnect_seconds", 0)):
        if FLAGS[name].value < low:
            raise ConfigError(f"--{name}: must be >= {low}, got {FLAGS[name].value}")
    if FLAGS.grace_seconds <= FLAGS.heartbeat_seconds:
        raise ConfigError(f"--grace_seconds: must exceed --heartbeat_seconds ({FLAGS.heartbeat_seconds})")


def main(argv: list[str]) -> None:
    from mlp_research.search import runner
    from mlp_research.search import storage as storage_lib

    url, password = storage_lib.split_password(FLAGS.storage, FLAGS.storage_password_file)
    sys.argv[:] = storage_lib.redact_argv(sys.argv, password)  # runs record sys.argv (summary.json)
    try:
        _check_flags()
        workdir = FLAGS.workdir or os.path.join("runs", "search-" + os.path.basename(FLAGS.space)[:-3])
        settings = storage_lib.StorageSettings(FLAGS.heartbeat_seconds, FLAGS.grace_seconds, FLAGS.reconnect_seconds)
        spec, space = runner.prepare(FLAGS.space, workdir, storage=url, password=password, n_trials=FLAGS.n_trials,
                                     overrides=_overrides(), data_dir=FLAGS.data_dir,
                                     settings=settings)
        outcome = runner.run_search(spec, space, FLAGS.workers, password, log=lambda line: print(line, flush=True))
    except UserError as e:  # one line, whatever produced it, without the password
        raise type(e)(str(e).replace(password, "***") if password else str(e)) from None
    done = outcome.counts
    print(f"search: {len(outcome.trials)} of {spec.n_trials} trials finished ({done['COMPLETE']} complete, "
          f"{done['PRUNED']} pruned) in {outcome.seconds:.1f} s; wrote {outcome.report} and "
          f"{os.path.join(spec.workdir, 'search.png')}", flush=True)


if __name__ == "__main__":
    cli.run(main)
