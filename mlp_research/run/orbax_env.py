"""Orbax, imported on first use and kept quiet: its background threads' failures are said once, by the caller.

`load_orbax()` is the one way this project imports `orbax.checkpoint`: where no
framework has started JAX yet (another backend trains, or an evaluation), it
keeps JAX from reserving most of a GPU, and it filters the records and
tracebacks Orbax's worker threads print for a failure that the save or restore
itself reports as one line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from typing import Any


def load_orbax() -> Any:
    """`orbax.checkpoint`, with its background threads quieted."""
    if "jax" not in sys.modules:  # read when JAX first touches a device; a user's own setting stands
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import orbax.checkpoint as ocp

    _quiet_background_threads()
    return ocp


class _QuietOrbax(logging.Filter):
    """Orbax's background threads log a failed write at length (and tracebacks of closed event loops);
    the save's own exception says it once, as one line, so those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or "orbax" not in (record.pathname or "")


def _quiet_background_threads() -> None:
    """Keep Orbax's worker threads from printing tracebacks; any other thread's failure still prints."""
    previous = threading.excepthook
    if getattr(previous, "_mlp_research", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        frames = traceback.extract_tb(args.exc_traceback) if args.exc_traceback else []
        if any("orbax" in f.filename or "asyncio" in f.filename for f in frames):
            return
        previous(args)

    hook._mlp_research = True  # type: ignore[attr-defined]
    threading.excepthook = hook
    logging.getLogger("absl").addFilter(_QuietOrbax())
    previous_unraisable = sys.unraisablehook

    def unraisable(info) -> None:  # TensorStore's callbacks onto Orbax's already-closed event loops
        if isinstance(info.exc_value, RuntimeError) and "Event loop is closed" in str(info.exc_value):
            return
        previous_unraisable(info)

    sys.unraisablehook = unraisable
