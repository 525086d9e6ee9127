"""Turn SIGTERM/SIGINT into a request to stop at the next safe point.

The first signal sets `requested`; the loop finishes its current compiled
call, saves a checkpoint and exits with `PreemptedError`'s code. The handlers
are then reset to the defaults, so a second Ctrl-C ends the process at once
(the last complete checkpoint still restores).
"""

from __future__ import annotations

import signal
import sys
import threading


class StopOnSignal:
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, announce: bool = True):
        self.requested = False
        self.signal_name = ""
        self._announce = announce
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        if self._announce:
            print(f"\n{self.signal_name}: finishing the current step, then saving a checkpoint "
                  "(send it again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
