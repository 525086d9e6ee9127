"""The work directory of a run: creation and validation, without importing JAX."""

from __future__ import annotations

import os

from mlp_research.errors import ConfigError, WorkdirLockedError


def check_workdir(workdir: str) -> str:
    """Refuse an empty path or one that is a file, creating nothing (cheap: before any import of JAX)."""
    if not workdir:
        raise ConfigError("--workdir: must not be empty")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir: {workdir} exists and is not a directory")
    ancestor = os.path.dirname(os.path.abspath(workdir))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ConfigError(f"--workdir: cannot create {workdir} ({ancestor} is not a directory)")
    if not os.access(ancestor if not os.path.isdir(workdir) else workdir, os.W_OK):
        raise ConfigError(f"--workdir: cannot create or write {workdir} (permission denied)")
    return workdir


def prepare_workdir(workdir: str) -> str:
    """Create the work directory; refuse a path that is a file or cannot be created."""
    check_workdir(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--workdir: cannot create {workdir} ({e.strerror})") from None
    if not os.access(workdir, os.W_OK):
        raise ConfigError(f"--workdir: {workdir} is not writable")
    return workdir


class WorkdirLock:
    """An exclusive lock on a work directory, so two runs never write the same checkpoints.

    Uses `flock` on `<workdir>/.lock`: the kernel releases it when the holder
    exits for any reason (kill -9 included), so a stale lock never blocks a resume.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        self._fd: int | None = None

    def __enter__(self) -> "WorkdirLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise WorkdirLockedError(
                f"--workdir: {os.path.dirname(self.path)} is in use by process {holder}; "
                "wait for it to finish or use another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
