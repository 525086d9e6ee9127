"""Atomic file writes (a reader sees the old file or the new one, never half of either), and the
tolerant reader of the JSON files they leave.

Every output of the project (metrics, summaries, figures, exports, report
sections) goes through `atomic_write`: the content is written to a temporary
file beside the target, flushed to disk with fsync, renamed over the target,
and the directory entry is fsynced too, so a crash or a full disk at any moment
leaves either the previous file or the new one. A failed write removes its
temporary file and raises `StorageError` naming the path and the errno.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from typing import Callable, Iterator

from mlp_research.errors import StorageError, warn


def fsync_dir(path: str) -> None:
    """fsync a directory, so a rename inside it survives a crash (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def storage_error(path: str, error: OSError) -> StorageError:
    """One line naming the path and the errno, for any failed write."""
    name = errno.errorcode.get(error.errno or 0, "EIO")
    reason = error.strerror or str(error) or name
    return StorageError(f"{path}: cannot write ({name}: {reason})")


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`.

    For writers that want a file name (matplotlib, numpy). `suffix` keeps an
    extension those writers look at (".png", ".npz").
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}", dir=directory)
    except OSError as e:
        raise storage_error(path, e) from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(directory)
    except OSError as e:
        _remove_quietly(tmp)
        raise storage_error(path, e) from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write(path: str, content: str | bytes | Callable[[object], None]) -> None:
    """Replace `path` by `content` (text, bytes, or a function that writes to an open binary file)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def error_reason(error: Exception) -> str:
    """An exception as a short phrase for a one-line message: the OS's words, or the first line of its text."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return (str(error).splitlines() or [type(error).__name__])[0][:120]


def read_json_object(path: str, warning: str = "cannot read it ({reason}); ignoring it") -> dict | None:
    """A JSON object file; None if there is none, and None with a one-line warning if it cannot be read.

    For files that can be rebuilt or done without (summaries, trial records, stored measurements):
    damage is reported and the caller goes on. `warning` follows "PATH: " and may use {reason}.
    """
    if not os.path.lexists(path):
        return None
    try:
        with open(path) as f:
            value = json.load(f)
        if not isinstance(value, dict):
            raise ValueError(f"a JSON {type(value).__name__}, not an object")
        return value
    except (OSError, ValueError) as e:
        warn(f"{path}: " + warning.format(reason=error_reason(e)))
        return None
