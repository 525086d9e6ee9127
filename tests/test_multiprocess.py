"""Multi-process runs on 127.0.0.1: agreed decisions, a lost peer ends the others in one line, and real
launchers (mpirun, a SLURM step's environment) give the results of one process with as many devices."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from multiprocess_worker import votes
from test_launchers import clean_environ

from conftest import REPO
from mlp_research.errors import DataError, PeerProcessError

MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "oob_tcp_if_include", "lo",
          "--mca", "btl_tcp_if_include", "lo"]
needs_mpirun = pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed (apt-get install "
                                  "openmpi-bin; .ci/run installs it)")
SMALL = ["--dataset=synthetic", "--synthetic_train_size=1000", "--synthetic_test_size=301", "--batch_size=64",
         "--max_epochs=2"]
TRAIN = [sys.executable, "-m", "experiments.train"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_workers(tmp_path: Path, rounds: int, pause: float, heartbeat: int,
                  fail_round: int = -1) -> list[subprocess.Popen]:
    """Two `multiprocess_worker.py` processes; their stdout/stderr go to tmp_path/out{i}, err{i}."""
    port = free_port()
    return [subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests", "multiprocess_worker.py"), str(port), str(i), str(rounds),
         str(pause), str(heartbeat), str(fail_round)],
        cwd=REPO, env=clean_environ(), stdout=open(tmp_path / f"out{i}", "w"), stderr=open(tmp_path / f"err{i}", "w"))
        for i in range(2)]


def rounds_done(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith('{"round"')]


def stop_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_agree_gives_every_process_the_stop_of_any_and_the_save_of_the_primary(tmp_path):
    procs = start_workers(tmp_path, rounds=40, pause=0, heartbeat=30)
    try:
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        stop_all(procs)
    assert codes == [0, 0], [(tmp_path / f"err{i}").read_text()[-2000:] for i in range(2)]
    answers = [[tuple(r["agreed"]) for r in rounds_done(tmp_path / f"out{i}")] for i in range(2)]
    expected = [(votes(0, r)[0] or votes(1, r)[0], votes(0, r)[1]) for r in range(40)]
    assert answers[0] == answers[1] == expected
    assert sum(votes(0, r) != votes(1, r) for r in range(40)) >= 20  # the processes did disagree


def wait_for_rounds(tmp_path: Path, procs: list[subprocess.Popen], count: int) -> None:
    deadline = time.monotonic() + 120
    while min(len(rounds_done(tmp_path / f"out{i}")) for i in range(2)) < count:
        assert all(p.poll() is None for p in procs), [(tmp_path / f"err{i}").read_text()[-2000:] for i in range(2)]
        assert time.monotonic() < deadline, "the workers did not start their loop"
        time.sleep(0.1)


def assert_one_line_exit(tmp_path: Path, survivor: subprocess.Popen, index: int, limit: float) -> str:
    start = time.monotonic()
    code = survivor.wait(timeout=limit + 30)
    elapsed = time.monotonic() - start
    lines = [line for line in (tmp_path / f"err{index}").read_text().splitlines() if line.strip()]
    assert code == PeerProcessError.exit_code, lines
    assert elapsed < limit, elapsed
    assert len(lines) == 1 and lines[0].startswith(f"error: process {index} of 2: "), lines
    return lines[0]


@pytest.mark.parametrize("victim", [0, 1])
def test_a_killed_process_ends_the_other_with_one_line(tmp_path, victim):
    """kill -9 mid-loop: the survivor's next collective fails, or (victim 0) its runtime loses the coordinator."""
    procs = start_workers(tmp_path, rounds=10**6, pause=0.01, heartbeat=30)
    try:
        wait_for_rounds(tmp_path, procs, 5)
        procs[victim].send_signal(signal.SIGKILL)
        line = assert_one_line_exit(tmp_path, procs[1 - victim], 1 - victim, limit=60)
    finally:
        stop_all(procs)
    assert "relaunch every process to resume from the last checkpoint" in line


def test_a_hung_process_is_noticed_within_the_heartbeat_timeout(tmp_path):
    """SIGSTOP: no connection breaks; the coordination service misses the heartbeats and the survivor says so."""
    procs = start_workers(tmp_path, rounds=10**6, pause=0.01, heartbeat=5)
    try:
        wait_for_rounds(tmp_path, procs, 5)
        procs[1].send_signal(signal.SIGSTOP)
        line = assert_one_line_exit(tmp_path, procs[0], 0, limit=5 + 20)
    finally:
        stop_all(procs)
    assert "process 1 stopped answering" in line


def test_an_error_of_one_process_ends_it_at_once_and_the_other_in_one_line(tmp_path):
    """Process 1 fails alone: it skips the shutdown barrier (process 0 would never reach it) and exits with its
    own code and line; process 0 learns from its next collective."""
    procs = start_workers(tmp_path, rounds=10**6, pause=0.01, heartbeat=30, fail_round=20)
    try:
        start = time.monotonic()
        code = procs[1].wait(timeout=120)
        line = assert_one_line_exit(tmp_path, procs[0], 0, limit=30)
    finally:
        stop_all(procs)
    assert code == DataError.exit_code
    assert (tmp_path / "err1").read_text().strip().splitlines() == [
        "error: process 1 cannot read its data (a failure of this process alone)"]
    assert time.monotonic() - start < 30  # not the 30 s shutdown timeout plus the 30 s heartbeat timeout
    assert "a collective with the other processes failed" in line


def final_metrics(workdir: Path) -> dict:
    return json.loads((workdir / "summary.json").read_text())["final"]


def assert_same_metrics(got: dict, reference: dict) -> None:
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert got[key] == pytest.approx(reference[key], abs=1e-5), key


def two_devices(args: list[str], workdir: Path) -> dict:
    """One process with 2 forced CPU devices, --parallel=sharded: what 2 processes x 1 device must equal."""
    done = subprocess.run([*TRAIN, *args, "--parallel=sharded", f"--workdir={workdir}"], cwd=REPO,
                          env=clean_environ(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return final_metrics(workdir)


def assert_joined(workdir: Path, header: str, launcher: str) -> None:
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["launch"]["launcher"] == launcher
    assert (summary["launch"]["num_processes"], summary["launch"]["process_id"]) == (2, 0)
    assert summary["device"]["process_count"] == 2 and summary["num_devices"] == 2
    assert f"process 0 of 2, launcher {launcher}" in header


def test_the_tasks_of_a_slurm_step_join_into_one_run(tmp_path):
    """Two local processes with the variables srun sets for a two-task step on one node."""
    step = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2",
            "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_NUM_NODES": "1", "SLURM_STEP_TASKS_PER_NODE": "2",
            "SLURM_NODEID": "0", "JAX_COORDINATOR_PORT": str(free_port())}
    procs = [subprocess.Popen([*TRAIN, *SMALL, f"--workdir={tmp_path / 'run'}"], cwd=REPO,
                              env=clean_environ(**step, SLURM_PROCID=str(i), SLURM_LOCALID=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        stop_all(procs)
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    header = next(line for line in outputs[0][0].splitlines() if line.startswith("jax/"))
    assert_joined(tmp_path / "run", header, "slurm")
    assert_same_metrics(final_metrics(tmp_path / "run"), two_devices(SMALL, tmp_path / "reference"))


@needs_mpirun
def test_sigterm_to_mpirun_checkpoints_every_rank_and_the_same_command_resumes(tmp_path):
    """mpirun forwards SIGTERM after odls_base_sigkill_timeout seconds and SIGKILLs as many seconds later:
    both ranks must agree to stop, save one checkpoint collectively and exit 5 within that grace."""
    args = ["--dataset=synthetic", "--synthetic_train_size=8000", "--synthetic_test_size=301", "--batch_size=64",
            "--max_epochs=12", "--steps_per_chunk=25"]
    command = [*MPIRUN, "--mca", "odls_base_sigkill_timeout", "4", "-np", "2", *TRAIN, *args,
               f"--workdir={tmp_path / 'run'}"]
    env = clean_environ(JAX_COORDINATOR_PORT=str(free_port()))
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        launcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while "epoch   1/12" not in log.read_text():
                assert launcher.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
            launcher.send_signal(signal.SIGTERM)
            launcher.wait(timeout=60)
        finally:
            stop_all([launcher])
    first = log.read_text()
    assert first.count("error: stopped by SIGTERM; checkpoint saved in") == 2, first[-3000:]  # both ranks, exit 5
    assert "exited on signal" not in first  # neither was killed
    checkpoints = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert checkpoints and checkpoints[-1] < 12 * 125, checkpoints  # stopped before the end (125 steps an epoch)
    second = subprocess.run(command, cwd=REPO, env={**env, "JAX_COORDINATOR_PORT": str(free_port())},
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "resuming from" in second.stdout
    assert_joined(tmp_path / "run", next(line for line in second.stdout.splitlines() if line.startswith("jax/")),
                  "openmpi")
    assert_same_metrics(final_metrics(tmp_path / "run"), two_devices(args, tmp_path / "whole"))


@needs_mpirun
def test_done_when_mpirun_on_the_real_data_equals_two_devices(tmp_path, data_dir):
    """The issue's check: mpirun -np 2, 2 epochs of Fashion-MNIST, equal to 1 process x 2 devices within 1e-5."""
    args = [f"--data_dir={data_dir}", "--max_epochs=2"]
    done = subprocess.run([*MPIRUN, "-np", "2", *TRAIN, *args, f"--workdir={tmp_path / 'W'}"], cwd=REPO,
                          env=clean_environ(JAX_COORDINATOR_PORT=str(free_port())), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    header = next(line for line in done.stdout.splitlines() if line.startswith("jax/"))
    assert_joined(tmp_path / "W", header, "openmpi")
    assert_same_metrics(final_metrics(tmp_path / "W"), two_devices(args, tmp_path / "reference"))


def processes_naming(marker: str) -> list[int]:
    """Live processes (zombies aside) whose command line contains `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if entry.isdigit() and marker in cmdline and state != "Z" and int(entry) != os.getpid():
            found.append(int(entry))
    return found


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def kill_all(marker: str) -> None:
    """Clean up after a failed test: a hung run's processes must not outlive it."""
    for pid in processes_naming(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


THREE = ["--dataset=synthetic", "--synthetic_train_size=1000", "--synthetic_test_size=301",
         "--checkpoint_min_seconds=0", "--batch_size=63", "--max_epochs=6", "--steps_per_chunk=4",
         "--checkpoint_every_steps=4"]


@needs_mpirun
def test_three_processes_save_and_prune_together_and_never_hang(tmp_path):
    """Issue 23, defect 1: with a save every chunk and --keep_checkpoints=3, each process used to list the disk
    at its own moment and prune from that list; a process could stat() a step another was deleting (a traceback,
    or Orbax's "Metadata file does not exist") or wait in a collective delete the others skipped (a hang).
    Repeated with a CPU load beside the run, so that the processes drift apart as they did."""
    load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    results = []
    try:
        for trial in range(5):
            workdir = tmp_path / f"run{trial}"
            command = [*MPIRUN, "-np", "3", *TRAIN, *THREE, f"--workdir={workdir}"]
            try:
                done = subprocess.run(command, cwd=REPO, env=clean_environ(JAX_COORDINATOR_PORT=str(free_port())),
                                      capture_output=True, text=True, timeout=120)
            except subprocess.TimeoutExpired:
                pytest.fail(f"trial {trial}: no exit within 120 s (a hang)")
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"trial {trial}: {output[-3000:]}"
            assert "Traceback" not in output and "Metadata file does not exist" not in output, output[-3000:]
            results.append(final_metrics(workdir))
    finally:
        load.kill()
        load.wait()
        kill_all(str(tmp_path))
    assert all(r == results[0] for r in results)


@needs_mpirun
def test_a_killed_mpirun_takes_its_processes_with_it(tmp_path):
    """Open MPI starts each process in a process group of its own and forwards signals itself: an mpirun killed
    outright (SIGKILL, a timeout's kill) left its processes running, orphaned, unless they happened to write to
    its closed pipes. Quiet ones (--progress=false here, or hung ones) ran on. They end with it now."""
    args = ["--dataset=synthetic", "--synthetic_train_size=8000", "--synthetic_test_size=301", "--max_epochs=100",
            "--progress=false", "--checkpoint_min_seconds=0"]
    workdir = tmp_path / "run"
    launcher = subprocess.Popen([*MPIRUN, "-np", "2", *TRAIN, *args, f"--workdir={workdir}"], cwd=REPO,
                                env=clean_environ(JAX_COORDINATOR_PORT=str(free_port())), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (workdir / "checkpoints").is_dir() or not any(p.name.isdigit() for p in
                                                                 (workdir / "checkpoints").iterdir()):
            assert launcher.poll() is None and time.monotonic() < deadline, "the run did not start training"
            time.sleep(0.1)
        ranks = [pid for pid in processes_naming(str(workdir)) if pid != launcher.pid]
        assert len(ranks) == 2 and {parent_of(pid) for pid in ranks} == {launcher.pid}, ranks
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 20
        while processes_naming(str(workdir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_naming(str(workdir)) == [], "orphaned ranks are still running"
    finally:
        stop_all([launcher])
        kill_all(str(workdir))
