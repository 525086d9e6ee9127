"""Search workers as separate processes: `python -m mlp_research.exercises.search_worker SPEC.json INDEX [CPUS]`.

`launch` starts the workers with `subprocess` (a fresh interpreter each: a
process that already started JAX must never fork), waits for all of them, and
checks that the study holds exactly the requested number of finished trials.
On one machine each worker can be pinned to its own cores before it imports
JAX, so two workers on two cores do not fight over the same threads. Workers on
other machines join the same study by running this module with a spec whose
storage is a shared database URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, Sequence

from mlp_research.errors import UserError

Log = Callable[[str], None]


class SearchError(UserError):
    """The study did not reach its number of finished trials (a worker failed, or nothing completed)."""

    exit_code = 13


def core_sets(workers: int, cpus: Sequence[int] | None = None) -> list[list[int]]:
    """Disjoint CPU sets, one per worker, when there are at least as many CPUs as workers; else no pinning."""
    cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if workers < 2 or len(cpus) < workers:
        return [[] for _ in range(workers)]
    share = len(cpus) // workers
    return [cpus[i * share:(i + 1) * share] for i in range(workers)]


def launch(spec_path: str, workers: int, log: Log = print, env: dict | None = None) -> list[int]:
    """Run `workers` worker processes on the study described by `spec_path`; returns their exit codes.

    The study (and its database schema) is created here first: workers that race to
    create it in a fresh SQLite file would collide ("table studies already exists").
    """
    from mlp_research.exercises import search

    with open(spec_path) as f:
        search.open_study(search.StudySpec.from_json(f.read()))
    procs = []
    for index, cpus in enumerate(core_sets(workers)):
        args = [sys.executable, "-m", "mlp_research.exercises.search_worker", spec_path, str(index)]
        if cpus:
            args.append(",".join(map(str, cpus)))
        procs.append(subprocess.Popen(args, env=env))
        log(f"[q5] worker {index} started (pid {procs[-1].pid}" + (f", cpus {cpus})" if cpus else ")"))
    codes = [p.wait() for p in procs]
    for index, code in enumerate(codes):
        if code:
            log(f"[q5] worker {index} exited with code {code}")
    return codes


def main(argv: list[str]) -> int:
    """The worker process: pin, then import JAX (through the driver) and work on the study."""
    if len(argv) not in (3, 4):
        print("usage: python -m mlp_research.exercises.search_worker SPEC.json INDEX [CPU,CPU,...]", file=sys.stderr)
        return 2
    if len(argv) == 4 and argv[3]:
        os.sched_setaffinity(0, {int(c) for c in argv[3].split(",")})  # before JAX sizes its thread pool
    from mlp_research.exercises import search

    worker = int(argv[2])
    with open(argv[1]) as f:
        spec = search.StudySpec.from_json(f.read())
    try:
        ran = search.run_worker(spec, worker, log=lambda line: print(line, flush=True))
    except UserError as e:
        print(f"[q5 w{worker}] error: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    print(f"[q5 w{worker}] done: {ran} trial(s) started by this worker", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
