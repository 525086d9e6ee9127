"""One of two processes on 127.0.0.1 that join a runtime and call `distributed.agree` in a loop (no driver).

    python tests/multiprocess_worker.py PORT PROCESS_ID ROUNDS PAUSE_SECONDS HEARTBEAT_SECONDS [FAIL_ROUND]

Prints one JSON line when joined, then one per round with this process's
votes and the agreed answer. With FAIL_ROUND, process 1 raises a `DataError`
of its own at that round (ending like an entry point: one line, its exit code).
Run by tests/test_multiprocess.py.
"""

from __future__ import annotations

import json
import sys
import time

from mlp_research import launchers
from mlp_research.errors import DataError, UserError
from mlp_research.jax_backend import distributed


def votes(process_id: int, round_index: int) -> tuple[bool, bool]:
    """Inputs that differ between the processes: stops at different rounds, saves on different clocks."""
    return round_index % 5 == 2 + process_id, (round_index + process_id) % 3 == 0


def main(argv: list[str]) -> None:
    port, process_id, rounds = int(argv[1]), int(argv[2]), int(argv[3])
    pause, heartbeat = float(argv[4]), int(argv[5])
    fail_round = int(argv[6]) if len(argv) > 6 and process_id == 1 else -1
    launch = launchers.resolve("auto", f"127.0.0.1:{port}", 2, process_id, environ={})
    launch = distributed.join(launch, distributed.Timeouts(initialization=60, heartbeat=heartbeat, shutdown=30))
    try:
        with distributed.guard():
            rounds_loop(launch, rounds, pause, fail_round)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


def rounds_loop(launch: launchers.Launch, rounds: int, pause: float, fail_round: int) -> None:
    print(json.dumps({"joined": launch.to_dict()}), flush=True)
    process_id = launch.process_id
    for r in range(rounds):
        if r == fail_round:
            raise DataError(f"process {process_id} cannot read its data (a failure of this process alone)")
        stop, save = votes(process_id, r)
        agreed = distributed.agree(stop, save)
        print(json.dumps({"round": r, "votes": [stop, save], "agreed": list(agreed)}), flush=True)
        time.sleep(pause)


if __name__ == "__main__":
    main(sys.argv)
