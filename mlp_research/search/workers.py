"""Search workers: a loop that works on the study until exactly `n_trials` finished, in this or other processes.

`launch` starts worker processes (`python -m mlp_research.search.workers
W/search.json INDEX [CPUS]`) with `subprocess`, a fresh interpreter each (a
process that already started JAX must never fork), each pinned to its own cores
before it imports JAX so two workers on two cores do not fight over threads. The
password of the storage reaches them in their environment, never on their command
line or in the spec file. Workers on other machines join by running
`experiments.search` there with the same space and `--storage`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Callable, Sequence

from mlp_research.errors import PreemptedError, StoppedBeforeCheckpointError, StudyStorageError, UserError
from mlp_research.run import signals
from mlp_research.search import study as study_lib
from mlp_research.search.objective import Objective, Surplus

Log = Callable[[str], None]
MAX_FAILURES = 3  # consecutive trials of one worker that fail (not diverge): the worker stops with the error


def run_worker(spec: study_lib.SearchSpec, worker: int = 0, log: Log = print, poll_seconds: float = 1.0,
               password: str | None = None) -> int:
    """Work on the study until exactly `n_trials` trials finished; returns how many this worker started.

    While the last trials run elsewhere the worker waits, failing stale trials as it polls, so a
    trial whose worker died is retried by one that is still alive.
    """
    space = spec.space()
    if space.study_name() != spec.study_name:
        raise UserError(f"{spec.space_path} changed since the search started (study {spec.study_name}); "
                        "restore it, or start another search in another --workdir")
    study = study_lib.open_study(spec, space, worker, password)
    objective = Objective(spec, space, study, log, worker)
    ran, failures = 0, 0
    while True:
        if signals.STOP.requested:  # between trials: nothing of this worker is running
            raise PreemptedError(f"stopped by {signals.STOP.signal_name}; rerun the same command to continue")
        study_lib.fail_stale(study)
        c = study_lib.counts(study)
        done = c["COMPLETE"] + c["PRUNED"]
        if done >= spec.n_trials:
            return ran
        if not (c["WAITING"] or done + c["RUNNING"] < spec.n_trials):
            time.sleep(poll_seconds)
            continue
        ran += 1
        try:
            study.optimize(objective, n_trials=1, catch=(Surplus,))
            failures = 0
        except (StudyStorageError, PreemptedError, StoppedBeforeCheckpointError):
            raise
        except UserError as e:  # the trial failed (recorded as FAIL); other trials may still work
            failures += 1
            log(f"[search w{worker}] a trial failed: {e}")
            if failures >= MAX_FAILURES:
                raise
        except Exception as e:  # Optuna's bookkeeping may mask a lost storage with an error of its own
            lost = _in_chain(e, StudyStorageError)
            if lost is None:
                raise
            raise lost from None


def _in_chain(error: BaseException, kind: type) -> BaseException | None:
    """The first exception of `kind` among `error` and the exceptions it was raised while handling."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def core_sets(workers: int, cpus: Sequence[int] | None = None) -> list[list[int]]:
    """Disjoint CPU sets, one per worker, when there are at least as many CPUs as workers; else no pinning."""
    cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if workers < 2 or len(cpus) < workers:
        return [[] for _ in range(workers)]
    share = len(cpus) // workers
    return [cpus[i * share:(i + 1) * share] for i in range(workers)]


def launch(spec: study_lib.SearchSpec, workers: int, password: str, log: Log = print) -> list[int]:
    """Run `workers` worker processes on the study of `spec` (already written to its path); their exit codes."""
    env = dict(os.environ)
    if password:
        env[study_lib.storage_lib.PASSWORD_ENV] = password
    procs = []
    for index, cpus in enumerate(core_sets(workers)):
        args = [sys.executable, "-m", "mlp_research.search.workers", spec.path, str(index)]
        if cpus:
            args.append(",".join(map(str, cpus)))
        procs.append(subprocess.Popen(args, env=env))
        log(f"[search] worker {index} started (pid {procs[-1].pid}" + (f", cpus {cpus})" if cpus else ")"))
    forwarded = False
    while any(p.poll() is None for p in procs):
        if signals.STOP.requested and not forwarded:  # this process was asked to stop: so are its workers
            forwarded = True
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    codes = [p.returncode for p in procs]
    for index, code in enumerate(codes):
        if code:
            log(f"[search] worker {index} exited with code {code}")
    return codes


def main(argv: list[str]) -> int:
    """The worker process: pin, then import JAX (through the driver) and work on the study."""
    if len(argv) not in (3, 4):
        print("usage: python -m mlp_research.search.workers W/search.json INDEX [CPU,CPU,...]", file=sys.stderr)
        return 2
    if len(argv) == 4 and argv[3]:
        os.sched_setaffinity(0, {int(c) for c in argv[3].split(",")})  # before JAX sizes its thread pool
    worker = int(argv[2])
    signals.install()  # a stop request outlives the trial it arrived in: the worker ends after it
    try:
        with open(argv[1]) as f:
            spec = study_lib.SearchSpec.from_json(f.read())
        ran = run_worker(spec, worker, log=lambda line: print(line, flush=True))
    except UserError as e:
        print(f"[search w{worker}] error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except OSError as e:
        print(f"[search w{worker}] error: {argv[1]}: {e.strerror}", file=sys.stderr, flush=True)
        return 2
    print(f"[search w{worker}] done: {ran} trial(s) started by this worker", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
