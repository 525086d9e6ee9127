"""The fault suite, checkpoint integrity: flipped bits in array data and items swapped in from another run are
caught by the checksums stored with the checkpoint, never restored or evaluated silently."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from faults import SMALL, checkpoint_steps, one_line_error, rows, run, train_cmd, uninterrupted_rows

from mlp_research.errors import CheckpointError

ARGS = [*SMALL, "--max_epochs=3"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    return uninterrupted_rows(tmp_path_factory.mktemp("reference"), *ARGS)


def two_epochs(workdir: Path, *args: str) -> Path:
    """Train two of the three epochs; the newest checkpoint's directory."""
    done = run(train_cmd(workdir, *SMALL, "--max_epochs=2", *args))
    assert done.returncode == 0, done.stderr[-2000:]
    return workdir / "checkpoints" / str(checkpoint_steps(workdir)[-1])


def flip_low_bits(item: Path) -> Path:
    """Flip the 3 low bits of the middle byte of the largest data file under `item`: values change, the
    storage format still reads."""
    largest = max((p for p in item.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0b111
    largest.write_bytes(bytes(data))
    return largest


def assert_resumed_past(workdir: Path, corrupt: Path, reference: list[dict]) -> None:
    """The same command resumes from the step before `corrupt`, saying so, to the rows of an uninterrupted run."""
    done = run(train_cmd(workdir, *ARGS))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"checkpoint {corrupt} is unreadable" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert rows(workdir) == reference
    moved = [p.name.split("-")[0] for p in (workdir / "checkpoints_set_aside").iterdir()]
    assert moved == [corrupt.name]


@pytest.mark.parametrize("item", ["state", "canonical"])
def test_flipped_bits_in_array_data_fall_back_to_the_previous_step(tmp_path, reference, item):
    workdir = tmp_path / "w"
    newest = two_epochs(workdir)
    flip_low_bits(newest / item)
    assert_resumed_past(workdir, newest, reference)


def test_a_state_swapped_in_from_another_seed_is_detected(tmp_path, reference):
    """The other run's state is a valid checkpoint item; only the checksums in this run's meta tell them apart."""
    workdir, other = tmp_path / "w", tmp_path / "seed1"
    newest = two_epochs(workdir)
    theirs = two_epochs(other, "--seed=1")
    shutil.rmtree(newest / "state")
    shutil.copytree(theirs / "state", newest / "state")
    assert_resumed_past(workdir, newest, reference)


def evaluate(workdir: Path, *args: str):
    return run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}", *args])


def test_evaluate_never_reports_flipped_parameters(tmp_path):
    """latest falls back to the previous checkpoint with a warning; a named step is refused in one line."""
    workdir = tmp_path / "w"
    newest = two_epochs(workdir)
    before = json.loads(evaluate(workdir, "--checkpoint=" + str(checkpoint_steps(workdir)[-2])).stdout)
    flip_low_bits(newest / "canonical")
    done = evaluate(workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == before  # the previous step's numbers, not the corrupt ones
    assert f"checkpoint {newest} cannot be read" in done.stderr
    refused = evaluate(workdir, f"--checkpoint={newest.name}")
    assert refused.returncode == CheckpointError.exit_code
    line = one_line_error(refused)
    assert str(newest) in line and "does not match the checksum" in line


def test_a_checkpoint_from_before_checksums_is_used_with_a_warning(tmp_path, reference):
    """Checkpoints of format 2 carry no checksums: accepted, unverified, with one line saying so."""
    workdir = tmp_path / "w"
    newest = two_epochs(workdir)
    for step in checkpoint_steps(workdir):
        path = workdir / "checkpoints" / str(step) / "meta" / "metadata"
        meta = json.loads(path.read_text())
        del meta["checksums"]
        meta["format"] = 2
        path.write_text(json.dumps(meta))
    done = run(train_cmd(workdir, *ARGS))
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if "has no checksums" in line]
    assert warnings == [f"warning: checkpoint {newest} has no checksums (written before format 3); its arrays are "
                        "used unverified"]
    assert rows(workdir) == reference
