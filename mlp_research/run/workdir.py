"""The work directory of a run: checks, damage detection and the lock, without importing JAX.

Every path a run writes is checked before anything is changed: a path of the
wrong kind (a file where the checkpoints directory belongs, a directory where
`.lock` or `metrics.jsonl` belongs, a symlink loop among the checkpoints) is
refused with one line naming it, instead of a traceback half-way through.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import Callable

from mlp_research.errors import ConfigError, WorkdirDamagedError, WorkdirLockedError
from mlp_research.files import storage_error

LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoints"
# What a run writes, and whether each is a file or a directory.
FILES = (LOCK_FILE, "metrics.jsonl", "summary.json", "curves.png", "group.json")
DIRECTORIES = (CHECKPOINT_DIR, "tensorboard")


def check_workdir(workdir: str) -> None:
    """Refuse an empty path, a file, or a place this process cannot write (a read-only file system: a
    `StorageError` naming EROFS), creating nothing (cheap: before any import of JAX)."""
    if not workdir:
        raise ConfigError("--workdir: must not be empty")
    if os.path.lexists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir: {workdir} exists and is not a directory")
    ancestor = os.path.dirname(os.path.abspath(workdir))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ConfigError(f"--workdir: cannot create {workdir} ({ancestor} is not a directory)")
    place = workdir if os.path.isdir(workdir) else ancestor
    if not os.access(place, os.W_OK):
        if os.statvfs(place).f_flag & os.ST_RDONLY:  # not the user's mistake in a flag: a place that takes no writes
            raise storage_error(workdir, OSError(errno.EROFS, os.strerror(errno.EROFS)))
        raise ConfigError(f"--workdir: cannot create or write {workdir} (permission denied)")


def prepare_workdir(workdir: str) -> None:
    """Create the work directory (`check_workdir` has passed)."""
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise storage_error(workdir, e) from None


def _kind_error(path: str, want: str) -> str | None:
    """Why `path` cannot serve as a `want` ("file" or "directory"), or None if it can (or is absent)."""
    if not os.path.lexists(path):
        return None
    try:
        os.stat(path)
    except OSError as e:
        what = "a symlink loop" if e.errno == errno.ELOOP else "a dangling symlink" if e.errno == errno.ENOENT \
            else f"unreadable ({e.strerror})"
        return f"is {what}"
    if want == "file" and not os.path.isfile(path):
        return "is a directory (or special file) where the run keeps a file"
    if want == "directory" and not os.path.isdir(path):
        return "is a file where the run keeps a directory"
    return None


def find_damage(workdir: str) -> list[tuple[str, str]]:
    """(path, problem) for every output path of the wrong kind, the checkpoint entries included."""
    found = []
    for names, want in ((FILES, "file"), (DIRECTORIES, "directory")):
        for name in names:
            path = os.path.join(workdir, name)
            problem = _kind_error(path, want)
            if problem:
                found.append((path, problem))
    checkpoints = os.path.join(workdir, CHECKPOINT_DIR)
    if os.path.isdir(checkpoints) and not any(p == checkpoints for p, _ in found):
        for entry in sorted(os.listdir(checkpoints)):
            path = os.path.join(checkpoints, entry)
            problem = _kind_error(path, "directory")
            if problem and entry.split(".")[0].isdigit():
                found.append((path, problem))
    return found


def refuse_damage(workdir: str, restart: bool = False) -> None:
    """WorkdirDamagedError naming the first damaged path (with --restart only the lock must be sound)."""
    for path, problem in find_damage(workdir):
        if restart and os.path.basename(path) != LOCK_FILE:
            continue
        remedy = ("remove it" if os.path.basename(path) == LOCK_FILE
                  else "move it away, or use --restart to discard the run")
        raise WorkdirDamagedError(f"--workdir: {path} {problem}; {remedy}")


def discard(workdir: str) -> None:
    """`--restart`: remove checkpoints and the outputs they produced (whatever their kind)."""
    for name in (*FILES[1:], *DIRECTORIES):
        path = os.path.join(workdir, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        except OSError as e:
            raise storage_error(path, e) from None


class WorkdirLock:
    """An exclusive lock on a work directory, so two runs never write the same checkpoints.

    Uses `flock` on `<workdir>/.lock`: the kernel releases it when the holder
    exits for any reason (kill -9 included), so a stale lock never blocks a resume.
    `hint` may add a line on how to launch correctly (a cluster launcher's processes
    that did not join one runtime). `name` is the lock file: another tool that owns a
    directory (the exercise report) takes its own, apart from any run's.
    """

    def __init__(self, workdir: str, hint: Callable[[], str | None] = lambda: None, name: str = LOCK_FILE):
        self.path = os.path.join(workdir, name)
        self._hint = hint
        self._fd: int | None = None

    def __enter__(self) -> "WorkdirLock":
        import fcntl

        problem = _kind_error(self.path, "file")
        if problem:
            raise WorkdirDamagedError(f"--workdir: {self.path} {problem}; remove it")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise storage_error(self.path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            hint = self._hint()
            raise WorkdirLockedError(
                f"--workdir: {os.path.dirname(self.path)} is in use by process {holder}; "
                + (hint if hint else "wait for it to finish or use another --workdir")
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None
