"""Errors a user can cause, each with its own process exit code.

Entry points catch `UserError` and print its one-line message; the exit code
tells scripts and schedulers what kind of failure happened without parsing text.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """A failure the user can fix; `exit_code` is what the process exits with."""

    exit_code: int = 1


class ConfigError(UserError):
    """An invalid flag or config value (raised before any data is loaded)."""

    exit_code = 2


class DataError(UserError):
    """Data missing, unreachable or malformed."""

    exit_code = 3


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite."""

    exit_code = 4


class PreemptedError(UserError):
    """The run stopped on SIGTERM/SIGINT after saving a checkpoint."""

    exit_code = 5


class WorkdirLockedError(UserError):
    """Another live process is using the same work directory."""

    exit_code = 6


class CheckpointMismatchError(UserError):
    """A checkpoint in the workdir was written by a different configuration."""

    exit_code = 7


class CheckpointError(UserError):
    """No usable checkpoint could be restored."""

    exit_code = 8


class StoppedBeforeCheckpointError(UserError):
    """The run stopped on SIGTERM/SIGINT before it had saved any checkpoint (nothing new to resume)."""

    exit_code = 9


class StorageError(UserError):
    """A write failed (disk full, I/O error, read-only file system); the message names the path and errno."""

    exit_code = 10


class WorkdirDamagedError(UserError):
    """Something in the work directory is not what a run wrote there (a file where a directory belongs, ...)."""

    exit_code = 11


class PeerProcessError(UserError):
    """Another process of a multi-process run failed or stopped answering."""

    exit_code = 12


class SearchError(UserError):
    """A hyperparameter search ended short of its number of finished trials (a worker failed); rerun to continue."""

    exit_code = 13


class StudyStorageError(UserError):
    """A search's study storage (database or journal file) cannot be reached; the message names it, redacted."""

    exit_code = 14


class OutOfMemoryError(UserError):
    """The model, its optimiser state or a batch did not fit in memory (a failed allocation)."""

    exit_code = 15


EXIT_CODES = {cls.exit_code: cls for cls in (
    UserError, ConfigError, DataError, NonFiniteLossError, PreemptedError, WorkdirLockedError,
    CheckpointMismatchError, CheckpointError, StoppedBeforeCheckpointError, StorageError, WorkdirDamagedError,
    PeerProcessError, SearchError, StudyStorageError, OutOfMemoryError)}


def warn(message: str) -> None:
    """A one-line warning on stderr: something was recovered from, the run goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
