"""Launcher detection (SLURM, Open MPI, Kubernetes, Cloud TPU), flag overrides, refusals and launch hints."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import pytest
from absl import flags

from conftest import REPO
from mlp_research import cli, launchers
from mlp_research.errors import ConfigError, WorkdirLockedError
from mlp_research.launchers import Launch, resolve

# What srun sets for task 1 of a two-task step on one node (the variables JAX's SLURM detection reads, and more).
SLURM_TASK_1 = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2",
                "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_STEP_NODELIST": "localhost",
                "SLURM_STEP_NUM_NODES": "1", "SLURM_STEP_TASKS_PER_NODE": "2"}
# What Open MPI 4's mpirun set for rank 1 of `mpirun -np 2` on this machine.
OMPI_RANK_1 = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
               "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "OMPI_MCA_orte_hnp_uri": "905379840.0;tcp://127.0.0.1:57541"}
# The variables srun sets in a batch script (no step): one process, not a task of a step.
SLURM_BATCH = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "8", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
               "SLURM_JOB_NODELIST": "gpu[01-02]"}


def auto(environ: dict, address=None, num=None, pid=None) -> Launch:
    return resolve("auto", address, num, pid, environ)


def test_no_launcher_is_one_process():
    assert auto({}) == launchers.SINGLE
    assert not auto({}).joins
    assert auto(SLURM_BATCH) == launchers.SINGLE  # a batch script is not a task of a step


def test_slurm_step_is_detected_with_the_port_every_task_computes():
    first, second = auto({**SLURM_TASK_1, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}), auto(SLURM_TASK_1)
    assert (second.launcher, second.num_processes, second.process_id) == ("slurm", 2, 1)
    assert second.joins and (second.local_process_id, second.local_process_count) == (1, 2)
    assert first.coordinator_address == second.coordinator_address
    host, port = second.coordinator_address.rsplit(":", 1)
    assert host == "localhost" and 61440 <= int(port) < 65536
    other_job = auto({**SLURM_TASK_1, "SLURM_JOB_ID": "4243"})
    assert other_job.coordinator_address != second.coordinator_address
    pinned = auto({**SLURM_TASK_1, "JAX_COORDINATOR_PORT": "12345"})
    assert pinned.coordinator_address == "localhost:12345"
    assert "launcher slurm, process 1 of 2" == second.describe()
    assert second.to_dict() == {"launcher": "slurm", "num_processes": 2, "process_id": 1,
                                "coordinator_address": second.coordinator_address}


@pytest.mark.parametrize("change, variable", [
    ({"SLURM_PROCID": None}, "SLURM_PROCID: not set"),
    ({"SLURM_NTASKS": None}, "SLURM_NTASKS: not set"),
    ({"SLURM_LOCALID": None}, "SLURM_LOCALID: not set"),
    ({"SLURM_JOB_ID": None}, "SLURM_JOB_ID: not set"),
    ({"SLURM_PROCID": "2"}, "SLURM_PROCID: 2 is outside 0..1 (SLURM_NTASKS=2)"),
    ({"SLURM_PROCID": "one"}, "SLURM_PROCID: 'one' is not a whole number"),
    ({"SLURM_NTASKS": "0", "SLURM_STEP_NUM_TASKS": None}, "SLURM_NTASKS: 0 must be at least 1"),
    ({"SLURM_STEP_NUM_TASKS": "4"}, "SLURM_NTASKS: 2 contradicts SLURM_STEP_NUM_TASKS=4"),
    ({"SLURM_LOCALID": "2"}, "SLURM_LOCALID: 2 is outside 0..1"),
    ({"SLURM_STEP_NODELIST": ""}, "SLURM_STEP_NODELIST: cannot read a host"),
    ({"JAX_COORDINATOR_PORT": "http"}, "JAX_COORDINATOR_PORT: 'http' is not a port number"),
])
def test_partial_or_inconsistent_slurm_environment_is_refused_naming_the_variable(change, variable):
    environ = {k: v for k, v in {**SLURM_TASK_1, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as refused:
        auto(environ)
    assert str(refused.value).startswith(variable) and "\n" not in str(refused.value)


def test_open_mpi_is_detected_and_wins_over_the_slurm_step_of_its_daemons():
    launch = auto(OMPI_RANK_1)
    assert (launch.launcher, launch.num_processes, launch.process_id) == ("openmpi", 2, 1)
    host, port = launch.coordinator_address.rsplit(":", 1)
    assert host == "127.0.0.1" and 61440 <= int(port) < 65536
    assert auto({**OMPI_RANK_1, **SLURM_TASK_1, "SLURM_PROCID": "0"}).launcher == "openmpi"


@pytest.mark.parametrize("uri, host", [
    ("1531576320.0;tcp://10.96.0.1,10.148.0.1,10.108.0.1:34911", "10.96.0.1"),
    ("1314521088.0;tcp6://[fe80::b9b:ac5d:9cf0:b858,2620:10d:c083:150e::3000:2]:43370", "[fe80::b9b:ac5d:9cf0:b858]"),
    ("1314521088.0;tcp6://[::1]:43370", "[::1]"),
])
def test_mpirun_address_is_read_from_its_uri(uri, host):
    launch = auto({**OMPI_RANK_1, "OMPI_MCA_orte_hnp_uri": uri, "JAX_COORDINATOR_PORT": "999"})
    assert launch.coordinator_address == f"{host}:999"


@pytest.mark.parametrize("change, message", [
    ({"OMPI_COMM_WORLD_RANK": None}, "OMPI_COMM_WORLD_RANK: not set"),
    ({"OMPI_COMM_WORLD_SIZE": None}, "OMPI_COMM_WORLD_SIZE: not set"),
    ({"OMPI_COMM_WORLD_RANK": "2"}, "OMPI_COMM_WORLD_RANK: 2 is outside 0..1 (OMPI_COMM_WORLD_SIZE=2)"),
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "5"}, "OMPI_COMM_WORLD_LOCAL_RANK: 5 is outside 0..1"),
    ({"OMPI_MCA_orte_hnp_uri": "garbage"}, "OMPI_MCA_orte_hnp_uri: cannot read mpirun's address"),
    # Open MPI 5 no longer says where rank 0 runs:
    ({"OMPI_MCA_orte_hnp_uri": None}, "--coordinator_address: openmpi started 2 processes but says nothing"),
])
def test_half_set_open_mpi_environment_is_refused(change, message):
    environ = {k: v for k, v in {**OMPI_RANK_1, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        auto(environ)


def test_open_mpi_5_runs_with_an_explicit_coordinator():
    environ = {k: v for k, v in OMPI_RANK_1.items() if k != "OMPI_MCA_orte_hnp_uri"}
    launch = auto(environ, address="node1:7000")
    assert (launch.launcher, launch.coordinator_address, launch.process_id) == ("openmpi", "node1:7000", 1)


def test_explicit_flags_override_the_launcher():
    launch = auto(SLURM_TASK_1, address="10.0.0.5:9000", num=4, pid=3)
    assert (launch.launcher, launch.coordinator_address, launch.num_processes, launch.process_id) == \
        ("slurm", "10.0.0.5:9000", 4, 3)
    assert auto({**SLURM_TASK_1, "JAX_COORDINATOR_ADDRESS": "h:1"}).coordinator_address == "h:1"
    with pytest.raises(ConfigError, match=r"^--process_id: process id 5 \(slurm process\) is outside 0..1"):
        auto(SLURM_TASK_1, pid=5)
    with pytest.raises(ConfigError, match=r"^--num_processes: process id 1 \(slurm process\) is outside 0..0"):
        auto(SLURM_TASK_1, num=1)


def test_distributed_off_runs_alone_and_refuses_process_flags():
    assert resolve("off", None, None, None, SLURM_TASK_1) == launchers.SINGLE
    assert resolve("off", None, None, None, OMPI_RANK_1) == launchers.SINGLE
    with pytest.raises(ConfigError, match="^--distributed=off: runs one process alone; drop --num_processes"):
        resolve("off", None, 2, None, {})


def test_flags_alone_describe_a_run():
    launch = auto({}, address="127.0.0.1:1234", num=2, pid=0)
    assert (launch.launcher, launch.num_processes, launch.joins) == ("flags", 2, True)
    assert auto({}, num=1, pid=0) == launchers.SINGLE
    with pytest.raises(ConfigError, match="^--coordinator_address: required"):
        auto({}, num=2, pid=1)
    with pytest.raises(ConfigError, match="^--num_processes and --process_id: both required"):
        auto({}, address="h:1", num=2)
    with pytest.raises(ConfigError, match="^--process_id: process id 2 is outside 0..1"):
        auto({}, address="h:1", num=2, pid=2)


def test_kubernetes_indexed_job_needs_its_client_like_jax(monkeypatch):
    environ = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "3"}
    real_find_spec = launchers.importlib.util.find_spec
    monkeypatch.setattr(launchers.importlib.util, "find_spec",
                        lambda name: None if name in ("kubernetes", "libtpu") else real_find_spec(name))
    assert auto(environ) == launchers.SINGLE
    assert "index 3 of a Kubernetes Indexed Job but runs alone" in launchers.launch_hint(environ)
    monkeypatch.setattr(launchers.importlib.util, "find_spec",
                        lambda name: object() if name == "kubernetes" else None)
    launch = auto(environ)
    assert (launch.launcher, launch.process_id, launch.num_processes, launch.delegated) == ("kubernetes", 3, None, True)
    assert launch.joins and launch.describe() == "launcher kubernetes, process 3"
    with pytest.raises(ConfigError, match="^JOB_COMPLETION_INDEX: 'x' is not a whole number"):
        auto({**environ, "JOB_COMPLETION_INDEX": "x"})


def test_cloud_tpu_slice_numbers_come_from_its_environment(monkeypatch):
    monkeypatch.setattr(launchers.importlib.util, "find_spec", lambda name: object() if name == "libtpu" else None)
    monkeypatch.setattr(launchers, "_tpu_chips_present", lambda: True)
    assert auto({}) == Launch("cloud_tpu", None, None, delegated=True)  # a TPU VM: JAX asks the metadata server
    gke = {"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3", "TPU_WORKER_ID": "2", "MEGASCALE_NUM_SLICES": "2",
           "MEGASCALE_SLICE_ID": "1"}
    launch = auto(gke)
    assert (launch.launcher, launch.num_processes, launch.process_id) == ("cloud_tpu", 8, 6)
    with pytest.raises(ConfigError, match="^TPU_WORKER_ID: 4 is outside 0..3"):
        auto({**gke, "TPU_WORKER_ID": "4"})
    monkeypatch.setattr(launchers, "_tpu_chips_present", lambda: False)
    assert auto(gke) == launchers.SINGLE  # libtpu installed on a machine without TPUs


@pytest.mark.parametrize("nodelist, host", [
    ("node001", "node001"), ("node001,host2", "node001"), ("node[001-015],host2", "node001"),
    ("node[007,009-015]", "node007"), ("rack[1-2]-node[01-04],x", "rack1-node01"), ("gpu-a[3]", "gpu-a3"),
])
def test_first_host_of_a_slurm_host_list(nodelist, host):
    assert launchers.first_host(nodelist) == host


def test_tasks_per_node():
    assert [launchers.tasks_on_node("2(x3),1", i) for i in range(5)] == [2, 2, 2, 1, None]
    assert launchers.tasks_on_node("", 0) is None and launchers.tasks_on_node("4(x", 0) is None


def test_gpus_per_process():
    per_gpu = auto(SLURM_TASK_1)
    assert launchers.local_device_ids(per_gpu, {}) == [1]  # two tasks on the node: one GPU each
    assert launchers.local_device_ids(per_gpu, {"CUDA_VISIBLE_DEVICES": "5"}) is None  # srun bound it already
    per_node = auto({**SLURM_TASK_1, "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NUM_NODES": "2",
                     "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_NODEID": "1", "SLURM_LOCALID": "0"})
    assert launchers.local_device_ids(per_node, {}) is None  # one task per node keeps all of its GPUs


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    (SLURM_TASK_1, "this process is task 1 of a SLURM step with 2 tasks but runs alone (--distributed=off?)"),
    (OMPI_RANK_1, "this process is rank 1 of 2 started by mpirun but runs alone"),
    (SLURM_BATCH, "this process is the batch script of SLURM job 4242 (8 tasks) and runs outside srun: start the "
                  "run with `srun python -m experiments.train ...`"),
    ({"PMI_RANK": "3", "PMI_SIZE": "4"}, "this process is rank 3 of 4 of an MPI launcher JAX does not detect"),
    ({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "this process is rank 1 of 2 of a PyTorch-style launcher"),
    ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}, None),
])
def test_launch_hint(environ, expected):
    hint = launchers.launch_hint(environ)
    assert hint == expected if expected is None else hint.startswith(expected)


def test_flags_are_defined_once_for_an_entry_point():
    values = flags.FlagValues()
    cli.define_launch_flags(values)
    values(["prog", "--coordinator_address=127.0.0.1:5000", "--num_processes=2", "--process_id=1"])
    assert cli.launch_from_flags(values, {}) == Launch("flags", 2, 1, "127.0.0.1:5000")
    values(["prog", "--distributed=off", "--coordinator_address=127.0.0.1:5000"])
    with pytest.raises(ConfigError, match="^--distributed=off"):
        cli.launch_from_flags(values, {})
    with pytest.raises(flags.IllegalFlagValueError):
        values(["prog", "--distributed=maybe"])


def clean_environ(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables (the tests may themselves run under one)."""
    prefixes = ("SLURM_", "OMPI_", "PMI_", "PMIX_", "JAX_COORDINATOR", "TPU_", "MEGASCALE_")
    names = ("KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX", "RANK", "WORLD_SIZE", "XLA_FLAGS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in names}
    env.update(extra)
    return env


def test_train_refuses_a_partial_slurm_environment_before_writing(tmp_path):
    workdir = tmp_path / "run"
    partial = {k: v for k, v in SLURM_TASK_1.items() if k != "SLURM_PROCID"}
    done = subprocess.run([sys.executable, "-m", "experiments.train", "--dataset=synthetic", f"--workdir={workdir}"],
                          cwd=REPO, env=clean_environ(**partial), capture_output=True, text=True, timeout=120)
    assert done.returncode == ConfigError.exit_code, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "error: SLURM_PROCID: not set, yet this process runs in a SLURM step (SLURM_STEP_NODELIST is set); "
        "launch it with the launcher itself, or give --distributed=off to run alone"]
    assert not workdir.exists()


def test_lone_task_of_a_step_is_refused_by_the_lock_with_how_to_launch(tmp_path):
    """A task that does not join its step's runtime (here --distributed=off) meets a workdir in use."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    with open(workdir / ".lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write("12345")
        holder.flush()
        done = subprocess.run(
            [sys.executable, "-m", "experiments.train", "--dataset=synthetic", "--synthetic_train_size=200",
             "--synthetic_test_size=50", "--batch_size=50", "--distributed=off", f"--workdir={workdir}"],
            cwd=REPO, env=clean_environ(**SLURM_TASK_1), capture_output=True, text=True, timeout=300)
    assert done.returncode == WorkdirLockedError.exit_code, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert "is in use by process" in line
    assert line.endswith(launchers.launch_hint(SLURM_TASK_1))
