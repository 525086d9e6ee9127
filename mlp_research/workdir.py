"""The work directory of a run: creation and validation, without importing JAX."""

from __future__ import annotations

import os

from mlp_research.errors import ConfigError


def prepare_workdir(workdir: str) -> str:
    """Create the work directory; refuse a path that is a file or cannot be created."""
    if not workdir:
        raise ConfigError("--workdir: must not be empty")
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir: {workdir} exists and is not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--workdir: cannot create {workdir} ({e.strerror})") from None
    if not os.access(workdir, os.W_OK):
        raise ConfigError(f"--workdir: {workdir} is not writable")
    return workdir
