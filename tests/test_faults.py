"""The fault suite: signals at random moments, damaged work directories, a full disk, lost saves.

Every case runs the real entry point and ends in a documented exit code with at
most a few lines of message, no traceback, no hang, and no lost or half-written
file; where a checkpoint was saved, the same command resumes to the rows of an
uninterrupted run.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from faults import (
    SMALL,
    checkpoint_steps,
    leftovers,
    named_checkpoint_exists,
    one_line_error,
    rows,
    run,
    signal_after,
    snapshot,
    tmpfs_at,
    train_cmd,
    uninterrupted_rows,
)

from conftest import REPO
from mlp_research.data import idx
from mlp_research.errors import (
    CheckpointError,
    ConfigError,
    OutOfMemoryError,
    PreemptedError,
    StoppedBeforeCheckpointError,
    StorageError,
    WorkdirDamagedError,
    WorkdirLockedError,
)
from mlp_research.exercises.report import REPORT, REPORT_LOCK
from mlp_research.run.workdir import WorkdirLock

ARGS = [*SMALL, "--max_epochs=3", "--steps_per_chunk=8"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    return uninterrupted_rows(tmp_path_factory.mktemp("reference"), *ARGS)


# ------------------------------------------------------------------ signals
@pytest.mark.parametrize("trial", range(6))
def test_a_signal_at_a_random_moment_ends_cleanly_and_resumes(tmp_path, reference, trial):
    """Start-up, data, compilation, training, saving and the end: every moment answers with 0, 5 or 9."""
    rng = random.Random(trial)
    delay, sig = rng.uniform(0.2, 6.0), rng.choice([signal.SIGTERM, signal.SIGINT])
    workdir = tmp_path / "w"
    done = signal_after(train_cmd(workdir, *ARGS), delay, sig)
    codes = (0, PreemptedError.exit_code, StoppedBeforeCheckpointError.exit_code)
    assert done.returncode in codes, (delay, done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 4, done.stderr
    assert leftovers(workdir) == []
    assert named_checkpoint_exists(done.stderr)
    if done.returncode == StoppedBeforeCheckpointError.exit_code:
        assert checkpoint_steps(workdir) == []
    again = run(train_cmd(workdir, *ARGS))
    assert again.returncode == 0, again.stderr[-2000:]
    assert rows(workdir) == reference


def test_sigterm_right_after_the_last_epoch_completes_every_output(tmp_path, reference):
    """The final save, the plot and the summary are written whatever arrives during them."""
    workdir = tmp_path / "w"
    proc = subprocess.Popen(train_cmd(workdir, *ARGS), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:
        if "epoch   3/3" in line:
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, PreemptedError.exit_code), err
    assert (workdir / "summary.json").is_file() and leftovers(workdir) == []
    assert checkpoint_steps(workdir)[-1] == 3 * 32 and rows(workdir) == reference


# ----------------------------------------------------------- damaged workdirs
def _file_for_dir(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("not a directory")


def _dir_for_file(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _symlink_loop(path: Path) -> None:
    newest = path / str(checkpoint_steps(path.parent)[-1] + 32)
    os.symlink(newest, newest)


DAMAGE = {
    "checkpoints is a file": ("checkpoints", _file_for_dir),
    "tensorboard is a file": ("tensorboard", _file_for_dir),
    ".lock is a directory": (".lock", _dir_for_file),
    "metrics.jsonl is a directory": ("metrics.jsonl", _dir_for_file),
    "summary.json is a directory": ("summary.json", _dir_for_file),
    "a symlink loop as the newest checkpoint": ("checkpoints", _symlink_loop),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damage_is_refused_naming_the_path_before_anything_changes(tmp_path, case):
    workdir = tmp_path / "w"
    assert run(train_cmd(workdir, *SMALL, "--max_epochs=1")).returncode == 0
    name, damage = DAMAGE[case]
    damage(workdir / name)
    before = snapshot(workdir)
    done = run(train_cmd(workdir, *SMALL, "--max_epochs=2"))
    assert done.returncode == WorkdirDamagedError.exit_code, done.stderr[-2000:]
    line = one_line_error(done)
    assert str(workdir / name) in line
    assert snapshot(workdir) == before


def test_corrupt_newest_checkpoint_is_set_aside_and_written_again(tmp_path):
    """Defect 1a: the fallback must not leave the corrupt step in place to swallow the next save of it."""
    workdir = tmp_path / "w"
    assert run(train_cmd(workdir, *SMALL, "--max_epochs=2")).returncode == 0
    newest = workdir / "checkpoints" / str(checkpoint_steps(workdir)[-1])
    for f in (newest / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    done = run(train_cmd(workdir, *SMALL, "--max_epochs=2"))
    assert done.returncode == 0 and "unreadable" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr  # defect 11
    assert checkpoint_steps(workdir)[-1] == int(newest.name)
    summary = (workdir / "summary.json").read_text()
    assert str(newest) in summary and (newest / "state").is_dir()
    again = run(train_cmd(workdir, *SMALL, "--max_epochs=2"))
    assert again.returncode == 0 and "already trained 2 epochs" in again.stdout  # no retraining any more


def test_an_empty_step_directory_does_not_swallow_later_saves(tmp_path):
    """Defect 1d."""
    workdir = tmp_path / "w"
    assert run(train_cmd(workdir, *SMALL, "--max_epochs=1")).returncode == 0
    (workdir / "checkpoints" / "999").mkdir()
    done = run(train_cmd(workdir, *SMALL, "--max_epochs=2"))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert checkpoint_steps(workdir)[-1] == 2 * 32 and 999 not in checkpoint_steps(workdir)


def test_a_refused_resume_moves_nothing_first(tmp_path):
    """Exit 2 promises nothing written: the newest checkpoint is corrupt, and the one to fall back to stops at a
    step this --steps_per_chunk cannot continue from; the corrupt one stays where it is."""
    workdir = tmp_path / "w"
    args = [*SMALL, "--max_epochs=1", "--steps_per_chunk=8", "--checkpoint_every_steps=8", "--keep_checkpoints=0"]
    assert run(train_cmd(workdir, *args)).returncode == 0
    newest = workdir / "checkpoints" / str(checkpoint_steps(workdir)[-1])
    for f in (newest / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    before = snapshot(workdir)
    done = run(train_cmd(workdir, *SMALL, "--max_epochs=2", "--steps_per_chunk=16"))
    assert done.returncode == ConfigError.exit_code, done.stderr[-2000:]
    assert "error: --steps_per_chunk: " in done.stderr and "Traceback" not in done.stderr
    after = snapshot(workdir)
    assert after.pop(".lock")[:2] == before.pop(".lock")[:2]  # the lock file names its holder: rewritten
    assert after == before

def test_steps_never_go_backwards_when_the_training_set_shrinks(tmp_path):
    """Defect 1c: resuming with another --data_dir (a changeable field) of fewer examples."""
    import numpy as np

    for name, n in (("big", 300), ("small", 100)):
        d = tmp_path / name
        d.mkdir()
        rng = np.random.default_rng(n)
        for split, size in (("train", n), ("t10k", 50)):
            idx.write_idx(str(d / f"{split}-images-idx3-ubyte"), rng.integers(0, 255, (size, 28, 28), np.uint8))
            idx.write_idx(str(d / f"{split}-labels-idx1-ubyte"), rng.integers(0, 10, size, np.uint8))
    workdir = tmp_path / "w"
    common = ["--data_source=idx", "--batch_size=64", "--checkpoint_min_seconds=0"]
    assert run(train_cmd(workdir, *common, f"--data_dir={tmp_path / 'big'}", "--max_epochs=1")).returncode == 0
    done = run(train_cmd(workdir, *common, f"--data_dir={tmp_path / 'small'}", "--max_epochs=2"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert checkpoint_steps(workdir)[-1] == 5 + 2  # ceil(300/64) + ceil(100/64): counted on, never restarted
    assert [r["step"] for r in rows(workdir)] == [5, 7]


# ------------------------------------------------------------------ disk full
@pytest.fixture
def tiny_disk(tmp_path):
    with tmpfs_at(tmp_path / "disk", "3m") as mount:
        yield mount


def test_a_full_disk_is_one_line_with_the_errno_and_loses_nothing(tiny_disk):
    workdir = tiny_disk / "w"
    args = [*SMALL, "--num_hiddens=512", "--max_epochs=30"]
    done = run(train_cmd(workdir, *args))
    assert done.returncode == StorageError.exit_code, done.stderr[-2000:]
    line = one_line_error(done)
    assert "ENOSPC" in line and str(workdir) in line
    assert leftovers(workdir) == []
    kept = checkpoint_steps(workdir)
    assert kept, "the previous checkpoint is intact"
    before = rows(workdir)
    again = run(train_cmd(workdir, *args))  # resuming on the full disk
    assert again.returncode == StorageError.exit_code and leftovers(workdir) == []
    assert checkpoint_steps(workdir) == kept and rows(workdir) == before


# ---------------------------------------------------------------- evaluation
def test_evaluate_falls_back_past_corrupt_parameters(tmp_path):
    """Defect 5: the newest checkpoint's parameters are corrupt, an older one is intact."""
    workdir = tmp_path / "w"
    assert run(train_cmd(workdir, *SMALL, "--max_epochs=2")).returncode == 0
    steps = checkpoint_steps(workdir)
    for f in (workdir / "checkpoints" / str(steps[-1]) / "canonical").rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    done = run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert f'"step": {steps[-2]}' in done.stdout and "cannot be read" in done.stderr


@pytest.mark.parametrize("target", ["missing/dir/p.npz", "adir", "", "/proc/p.npz"])
def test_evaluate_export_to_an_unusable_place_is_one_line(tmp_path, target):
    """Defect 9: nothing half-written anywhere, exit 2."""
    workdir = tmp_path / "w"
    assert run(train_cmd(workdir, *SMALL, "--max_epochs=1")).returncode == 0
    (tmp_path / "adir").mkdir()
    path = target if target.startswith("/") or not target else str(tmp_path / target)
    before = snapshot(tmp_path)
    done = run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}", f"--export={path}"])
    assert done.returncode == 2, done.stderr[-2000:]
    assert one_line_error(done).startswith("error: --export: ")
    assert snapshot(tmp_path) == before


def test_evaluate_with_no_checkpoint_and_a_bad_choice(tmp_path):
    done = run([sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path}", "--checkpoint=newest"])
    assert done.returncode == 2 and one_line_error(done).startswith("error: --checkpoint: ")
    done = run([sys.executable, "-m", "experiments.evaluate", f"--workdir={tmp_path}"])
    assert done.returncode == CheckpointError.exit_code


# ------------------------------------------------------- memory, data, places
def test_a_model_that_does_not_fit_in_memory_is_one_line_and_leaves_nothing(tmp_path):
    """Issue 23, defect 4: past the size check, the first allocation fails (`ulimit -v 6000000`, set by a shell:
    a preexec_fn would fork this multithreaded process); the workdir it created is gone, and what it added to an
    existing one too."""
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine\n")
    before = snapshot(existing)
    del before["."]  # the directory's own mtime moves as entries come and go
    for workdir in (tmp_path / "fresh", existing):
        done = subprocess.run(["bash", "-c", 'ulimit -v 6000000 && exec "$@"', "bash",
                               *train_cmd(workdir, *SMALL, "--num_hiddens=32768,16384")], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == OutOfMemoryError.exit_code, done.stderr[-2000:]
        line = one_line_error(done)
        assert line.startswith("error: --num_hiddens: the model (562,774,026 parameters)") and "memory" in line
    assert not (tmp_path / "fresh").exists()
    assert {k: v for k, v in snapshot(existing).items() if k != "."} == before


def test_a_training_subset_larger_than_the_training_set_is_refused(tmp_path):
    """Issue 23, defect 6: it used to train on all 2,000 examples without a word."""
    done = run(train_cmd(tmp_path / "w", *SMALL, "--train_subset=5000"))
    assert done.returncode == ConfigError.exit_code, done.stderr[-2000:]
    assert one_line_error(done).startswith("error: --train_subset: 5000 is larger than the training set (2000 ")
    assert not (tmp_path / "w").exists()


@pytest.fixture
def tmpfs(tmp_path):
    with tmpfs_at(tmp_path / "fs", "32m") as mount:
        yield mount


def remount_read_only(mount: Path) -> None:
    assert subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True).returncode == 0


def test_a_workdir_on_a_read_only_file_system_names_erofs(tmp_path, tmpfs):
    """Issue 23, defect 7: a new workdir, and a run to resume, on a file system mounted read-only: exit 10."""
    trained = tmpfs / "trained"
    assert run(train_cmd(trained, *SMALL, "--max_epochs=1")).returncode == 0
    remount_read_only(tmpfs)
    before = snapshot(tmpfs)
    for workdir in (tmpfs / "new", trained):
        done = run(train_cmd(workdir, *SMALL, "--max_epochs=2"))
        assert done.returncode == StorageError.exit_code, done.stderr[-2000:]
        line = one_line_error(done)
        assert str(workdir) in line and "EROFS" in line, line
    assert snapshot(tmpfs) == before


def test_a_second_report_on_one_workdir_exits_in_use_and_writes_nothing(tmp_path):
    """Issue 23, defect 5: the report holds a lock of its own; the loser never rewrites REPORT.md."""
    workdir = tmp_path / "report"
    workdir.mkdir()
    (workdir / REPORT).write_text("the first report's\n")
    with WorkdirLock(str(workdir), name=REPORT_LOCK):
        before = snapshot(workdir)
        done = run([sys.executable, "-m", "experiments.report", "--synthetic", "--smoke", "--only=q7",
                    f"--workdir={workdir}"])
        assert snapshot(workdir) == before
    assert done.returncode == WorkdirLockedError.exit_code, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"is in use by process {os.getpid()}" in one_line_error(done)
