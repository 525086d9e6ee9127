"""Helpers of the fault tests: run the real entry points in subprocesses and inspect what they left."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO

SMALL = ["--dataset=synthetic", "--synthetic_train_size=2000", "--synthetic_test_size=500",
         "--checkpoint_min_seconds=0", "--batch_size=64"]


def train_cmd(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *args]


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The process's error line; fails the test if stderr holds a traceback or more than a few lines."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(lines) <= 3, done.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors, done.stderr[-3000:]
    return errors[-1]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root` with its kind, size and mtime: "nothing changed" is an equality of two."""
    if not root.exists() and not root.is_symlink():
        return {}
    out = {}
    for path in [root, *root.rglob("*")]:
        stat = path.lstat()
        out[str(path.relative_to(root))] = (stat.st_mode, stat.st_size, stat.st_mtime_ns)
    return out


def leftovers(workdir: Path) -> list[str]:
    """Temporary files or unfinished saves a clean exit must not leave."""
    if not workdir.exists():
        return []
    return [str(p) for p in workdir.rglob("*") if ".tmp" in p.name or "orbax-checkpoint-tmp" in p.name]


def rows(workdir: Path) -> list[dict]:
    """metrics.jsonl rows without timings; every line must parse (never half a row)."""
    with open(workdir / "metrics.jsonl") as f:
        return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "examples_per_second")}
                for line in f]


def signal_after(cmd: list[str], delay: float, sig: int, timeout: float = 120) -> subprocess.CompletedProcess:
    """Start `cmd`, send `sig` after `delay` seconds, wait (bounded: a hang fails the test)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"no exit within {timeout} s after {signal.Signals(sig).name}: {err[-2000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def checkpoint_steps(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def named_checkpoint_exists(text: str) -> bool:
    """Every checkpoints/<step> path a message names exists on disk."""
    import re

    paths = re.findall(r"(/\S+/checkpoints/\d+)", text)
    return all(os.path.isdir(p) for p in paths)


def uninterrupted_rows(workdir: Path, *args: str) -> list[dict]:
    """The rows of a run of `args` from start to end: what every interrupted and resumed run must equal."""
    done = run(train_cmd(workdir, *args))
    assert done.returncode == 0, done.stderr[-2000:]
    return rows(workdir)


@contextlib.contextmanager
def tmpfs_at(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `mount` for the duration (the test is skipped where mounting needs root)."""
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
