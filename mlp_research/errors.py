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


def warn(message: str) -> None:
    """A one-line warning on stderr: something was recovered from, the run goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
