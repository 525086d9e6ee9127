"""SIGTERM/SIGINT as a request to stop at the next safe point, from the first moment of a process.

`install()` runs as the entry points start (`experiments/__init__.py`), before
anything slow is imported, and stays installed for the whole process, so no
moment of a run dies with a traceback or leaves half-written files. The
handler only records the request: raising from a signal handler can strike in
the middle of an import or a lock acquisition and deadlock the interpreter.
The code then stops at its next safe point: between start-up phases (exit 9,
nothing new saved), or after the current chunk of training with a checkpoint
(exit 5). A second signal restores the default action and ends the process at
once; the last complete checkpoint still resumes.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Whether (and by which signal) the process was asked to stop."""

    def __init__(self) -> None:
        self.signal_name = ""
        self.installed = False

    @property
    def requested(self) -> bool:
        return bool(self.signal_name)

    def _handle(self, signum: int, frame: object) -> None:
        first = not self.signal_name
        self.signal_name = self.signal_name or signal.Signals(signum).name
        for sig in SIGNALS:  # the next one ends the process at once
            signal.signal(sig, signal.SIG_DFL)
        if first:
            try:
                sys.stderr.write(f"\n{self.signal_name}: stopping at the next safe point "
                                 "(send it again to stop at once)\n")
                sys.stderr.flush()
            except (OSError, ValueError, RuntimeError):  # stderr closed, or reentrant write: the flag still counts
                pass

    def install(self) -> None:
        """Catch SIGTERM and SIGINT from now on (main thread only; idempotent)."""
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            signal.signal(sig, self._handle)
        self.installed = True

    def request(self, name: str = "SIGTERM") -> None:
        """Ask for a stop from code (the multi-process agreement, tests)."""
        self.signal_name = self.signal_name or name


    @contextlib.contextmanager
    def scoped(self) -> Iterator["StopRequest"]:
        """Catch signals for the duration of a run started from library code (tests, notebooks).

        Entry points install for the whole process; otherwise the previous
        handlers come back when the run ends, and its request is forgotten.
        """
        if self.installed or threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        self.install()
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.installed = False
            self.signal_name = ""


STOP = StopRequest()


def install() -> StopRequest:
    STOP.install()
    return STOP
