"""Which launcher started this process, how many processes it started, and which one this is.

Clusters start the processes of one run with a launcher (srun, mpirun, a
Kubernetes Indexed Job, a Cloud TPU pod) that tells each process its place
through environment variables. `resolve` reads them the way JAX's own
`jax.distributed.initialize()` would, so `srun -n 8 python -m experiments.train`
is one run of 8 processes rather than 8 runs fighting over one workdir.
Explicit flags override what was detected; `--distributed=off` runs alone.

Framework-neutral and flag-free: nothing here imports a framework or absl (the flags
are `cli.define_launch_flags`), so the driver and the backends share it. A partial or contradictory
environment is refused with `ConfigError` naming the variable, before anything
is written.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import re
from typing import Any, Mapping

from mlp_research.errors import ConfigError

MODES = ("auto", "off")
PORT_ENV = "JAX_COORDINATOR_PORT"  # the port JAX's own detection uses too, when set
ADDRESS_ENV = "JAX_COORDINATOR_ADDRESS"
# Launchers that pick no port choose one from the job's id in this range, the same on every process.
PORT_RANGE = (61440, 4096)


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process takes part in a run: one per process, the same launcher and count in all.

    `num_processes`/`process_id` are None only for launchers whose numbers come from
    the runtime (Kubernetes, Cloud TPU) until `join` has run.
    """

    launcher: str  # "none", "flags", "openmpi", "slurm", "kubernetes", "cloud_tpu"
    num_processes: int | None = 1
    process_id: int | None = 0
    coordinator_address: str | None = None
    local_process_id: int | None = None  # index among the processes on this machine
    local_process_count: int | None = None  # processes of the run on this machine
    delegated: bool = False  # JAX's own cluster detection fills in what is None

    @property
    def joins(self) -> bool:
        """Whether this process must join a multi-process runtime."""
        return self.delegated or (self.num_processes or 1) > 1

    def describe(self) -> str:
        """For the run's header line: `launcher openmpi, process 0 of 2` (what is known before joining)."""
        process = "" if self.process_id is None else f", process {self.process_id}"
        count = "" if self.num_processes is None or not process else f" of {self.num_processes}"
        return f"launcher {self.launcher}{process}{count}"

    def to_dict(self) -> dict[str, Any]:
        """For summary.json."""
        return {"launcher": self.launcher, "num_processes": self.num_processes, "process_id": self.process_id,
                "coordinator_address": self.coordinator_address}


SINGLE = Launch("none")


def resolve(mode: str, coordinator_address: str | None, num_processes: int | None, process_id: int | None,
            environ: Mapping[str, str] = os.environ) -> Launch:
    """Combine the detected launcher with explicit values (which win); raise `ConfigError` if inconsistent."""
    given = [f"--{name}" for name, value in (("coordinator_address", coordinator_address),
                                             ("num_processes", num_processes), ("process_id", process_id))
             if value is not None]
    if mode == "off":
        if given:
            raise ConfigError(f"--distributed=off: runs one process alone; drop {', '.join(given)}")
        return SINGLE
    if mode != "auto":
        raise ConfigError(f"--distributed: {mode!r} is not one of {', '.join(MODES)}")
    detected = detect(environ)
    address = coordinator_address or environ.get(ADDRESS_ENV) or None
    if address is not None:
        check_address(address, "--coordinator_address" if coordinator_address else f"${ADDRESS_ENV}")
    if detected is None:
        return _from_values(address, num_processes, process_id)
    launch = dataclasses.replace(
        detected, coordinator_address=address or detected.coordinator_address,
        num_processes=detected.num_processes if num_processes is None else num_processes,
        process_id=detected.process_id if process_id is None else process_id)
    if launch.num_processes is not None and launch.process_id is not None:
        name = "--process_id" if process_id is not None else "--num_processes"
        _check_index(name, launch.process_id, launch.num_processes, f" ({launch.launcher} process)")
    if not launch.delegated and launch.joins and launch.coordinator_address is None:
        raise ConfigError(f"--coordinator_address: {launch.launcher} started {launch.num_processes} processes "
                          "but says nothing of where process 0 runs; give --coordinator_address=HOST:PORT")
    return launch


def check_address(address: str, name: str) -> None:
    """HOST:PORT with a port in 1..65535 (an IPv6 host in brackets), or ConfigError naming where it came from."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535 or \
            not re.fullmatch(r"[A-Za-z0-9._:-]+", host):
        raise ConfigError(f"{name}: {address!r} is not HOST:PORT (e.g. 10.0.0.1:61000 or node1:61000)")


def _from_values(address: str | None, num_processes: int | None, process_id: int | None) -> Launch:
    if not address:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise ConfigError("--coordinator_address: required with --num_processes/--process_id "
                              "(no cluster launcher was detected)")
        return SINGLE
    if num_processes is None or process_id is None:
        raise ConfigError("--num_processes and --process_id: both required with --coordinator_address "
                          "(no cluster launcher was detected)")
    _check_index("--process_id", process_id, num_processes)
    return Launch("flags", num_processes, process_id, address)


def _check_index(name: str, index: int, count: int, what: str = "") -> None:
    if count < 1:
        raise ConfigError(f"--num_processes: {count} must be at least 1")
    if not 0 <= index < count:
        raise ConfigError(f"{name}: process id {index}{what} is outside 0..{count - 1} ({count} processes)")


def detect(environ: Mapping[str, str] = os.environ) -> Launch | None:
    """The launcher that started this process, in JAX's order of precedence; None when there is none.

    Open MPI first: mpirun inside a SLURM allocation starts its daemons with srun,
    so its ranks also carry SLURM step variables.
    """
    for probe in (_openmpi, _slurm, _cloud_tpu, _kubernetes):
        launch = probe(environ)
        if launch is not None:
            return launch
    return None


def _openmpi(environ: Mapping[str, str]) -> Launch | None:
    names = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_MCA_orte_hnp_uri")
    if not any(name in environ for name in names):
        return None
    size = _env_int(environ, "OMPI_COMM_WORLD_SIZE", "Open MPI", minimum=1)
    rank = _env_int(environ, "OMPI_COMM_WORLD_RANK", "Open MPI")
    _check_env_index(environ, "OMPI_COMM_WORLD_RANK", rank, "OMPI_COMM_WORLD_SIZE", size)
    local_size = _env_int(environ, "OMPI_COMM_WORLD_LOCAL_SIZE", "Open MPI", minimum=1, required=False)
    local_rank = _env_int(environ, "OMPI_COMM_WORLD_LOCAL_RANK", "Open MPI", required=False)
    if local_rank is not None and local_size is not None:
        _check_env_index(environ, "OMPI_COMM_WORLD_LOCAL_RANK", local_rank, "OMPI_COMM_WORLD_LOCAL_SIZE", local_size)
    address = None
    uri = environ.get("OMPI_MCA_orte_hnp_uri")
    if uri is not None:  # Open MPI 4: "<jobfamily>.0;tcp://IP[,IP...]:PORT" of mpirun, on rank 0's machine
        match = re.match(r"(\d+)\.\d+;tcp6?://\[?([^,\]/]+?)(?:[,\]]|:\d+$)", uri)
        if match is None:
            raise ConfigError(f"OMPI_MCA_orte_hnp_uri: cannot read mpirun's address from {uri!r}")
        host = match.group(2)
        host = f"[{host}]" if ":" in host else host
        address = f"{host}:{_port(environ, int(match.group(1)) >> 16)}"
    return Launch("openmpi", size, rank, address, local_rank, local_size)


def _slurm(environ: Mapping[str, str]) -> Launch | None:
    # srun sets SLURM_STEP_NODELIST for the tasks of a step; a batch script or salloc shell has SLURM_JOB_ID
    # (and often SLURM_NTASKS, SLURM_PROCID=0) but is a single process, not a task of a step.
    if "SLURM_STEP_NODELIST" not in environ:
        return None
    where = "a SLURM step (SLURM_STEP_NODELIST is set)"
    job = _env_int(environ, "SLURM_JOB_ID", where)
    ntasks = _env_int(environ, "SLURM_NTASKS", where, minimum=1)
    step_tasks = _env_int(environ, "SLURM_STEP_NUM_TASKS", where, minimum=1, required=False)
    if step_tasks is not None and step_tasks != ntasks:
        raise ConfigError(f"SLURM_NTASKS: {ntasks} contradicts SLURM_STEP_NUM_TASKS={step_tasks}")
    procid = _env_int(environ, "SLURM_PROCID", where)
    _check_env_index(environ, "SLURM_PROCID", procid, "SLURM_NTASKS", ntasks)
    localid = _env_int(environ, "SLURM_LOCALID", where)
    nodes = _env_int(environ, "SLURM_STEP_NUM_NODES", where, minimum=1, required=False)
    local_count = tasks_on_node(environ.get("SLURM_STEP_TASKS_PER_NODE", ""),
                                _env_int(environ, "SLURM_NODEID", where, required=False) or 0)
    if local_count is None and nodes is not None:
        local_count = -(-ntasks // nodes)
    if local_count is not None and localid >= local_count:
        raise ConfigError(f"SLURM_LOCALID: {localid} is outside 0..{local_count - 1} "
                          f"({local_count} tasks on this node)")
    host = first_host(environ["SLURM_STEP_NODELIST"])
    step = _env_int(environ, "SLURM_STEP_ID", where, required=False) or 0
    address = f"{host}:{_port(environ, job * 16 + step)}"
    return Launch("slurm", ntasks, procid, address, localid, local_count)


def _cloud_tpu(environ: Mapping[str, str]) -> Launch | None:
    if importlib.util.find_spec("libtpu") is None or not _tpu_chips_present():
        return None
    hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES")
    if not hosts:  # a TPU VM: the metadata server says the rest, JAX asks it
        return Launch("cloud_tpu", None, None, delegated=True)
    where = "a Cloud TPU slice (TPU_WORKER_HOSTNAMES is set)"
    per_slice = len(hosts.split(","))
    worker = _env_int(environ, "TPU_WORKER_ID", where)
    _check_env_index(environ, "TPU_WORKER_ID", worker, "TPU_WORKER_HOSTNAMES", per_slice)
    slices = _env_int(environ, "MEGASCALE_NUM_SLICES", where, minimum=1, required=False) or 1
    slice_id = _env_int(environ, "MEGASCALE_SLICE_ID", where, required=False) or 0
    _check_env_index(environ, "MEGASCALE_SLICE_ID", slice_id, "MEGASCALE_NUM_SLICES", slices)
    return Launch("cloud_tpu", per_slice * slices, slice_id * per_slice + worker, None, delegated=True)


def _kubernetes(environ: Mapping[str, str]) -> Launch | None:
    # Like JAX: an Indexed Job's pods, when the `kubernetes` client that asks for the Job's size is installed.
    if "KUBERNETES_SERVICE_HOST" not in environ or "JOB_COMPLETION_INDEX" not in environ:
        return None
    if importlib.util.find_spec("kubernetes") is None:
        return None
    index = _env_int(environ, "JOB_COMPLETION_INDEX", "a Kubernetes Indexed Job")
    return Launch("kubernetes", None, index, None, delegated=True)


def _tpu_chips_present() -> bool:
    """Google's PCI vendor id on any device: the machine has TPU chips."""
    for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(path) as f:
                if f.read().strip() == "0x1ae0":
                    return True
        except OSError:
            continue
    return False


def _env_int(environ: Mapping[str, str], name: str, where: str, minimum: int = 0,
             required: bool = True) -> int | None:
    value = environ.get(name)
    if value is None:
        if required:
            raise ConfigError(f"{name}: not set, yet this process runs in {where}; launch it with the "
                              "launcher itself, or give --distributed=off to run alone")
        return None
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a whole number") from None
    if number < minimum:
        raise ConfigError(f"{name}: {number} must be at least {minimum}")
    return number


def _check_env_index(environ: Mapping[str, str], name: str, index: int, count_name: str, count: int) -> None:
    if index >= count:
        raise ConfigError(f"{name}: {index} is outside 0..{count - 1} ({count_name}={environ.get(count_name, count)})")


def _port(environ: Mapping[str, str], seed: int) -> int:
    """$JAX_COORDINATOR_PORT, or a port derived from the job's id: every process computes the same one."""
    value = environ.get(PORT_ENV)
    if value is None:
        return PORT_RANGE[0] + seed % PORT_RANGE[1]
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{PORT_ENV}: {value!r} is not a port number")
    return int(value)


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: `node[007-009,012],gpu1` -> `node007`, `r[1-2]-n[01-04]` -> `r1-n01`."""
    head = re.match(r"(?:[^,\[]|\[[^\]]*\])+", nodelist.strip())
    if head is None or not head.group(0):
        raise ConfigError(f"SLURM_STEP_NODELIST: cannot read a host from {nodelist!r}")
    return re.sub(r"\[([^\],\-]+)[^\]]*\]", r"\1", head.group(0))


def tasks_on_node(spec: str, node_index: int) -> int | None:
    """SLURM's `2(x3),1` (tasks per node, run-length encoded) at `node_index`; None if not given or too short."""
    counts: list[int] = []
    for part in filter(None, spec.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            return None
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts[node_index] if node_index < len(counts) else None


def local_device_ids(launch: Launch, environ: Mapping[str, str] = os.environ) -> list[int] | None:
    """The accelerators this process should use, or None for all it sees.

    Several processes on one machine that the launcher did not bind to one GPU each
    get one each, by local index; a single process per machine keeps every GPU of it
    (JAX's own detection would restrict it to the first). CPUs ignore this.
    """
    if (launch.local_process_count or 1) <= 1 or launch.local_process_id is None:
        return None
    for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        visible = environ.get(name)
        if visible is not None and len([d for d in visible.split(",") if d.strip()]) == 1:
            return None  # already bound by the launcher (e.g. srun --gpus-per-task=1)
    return [launch.local_process_id]


def launch_hint(environ: Mapping[str, str] = os.environ) -> str | None:
    """How to launch correctly, for a process that runs alone but whose environment says it has siblings.

    Appended to the workdir lock's refusal: processes a launcher started that did
    not join one runtime each train alone and collide on the workdir.
    """
    def number(name: str) -> int:
        value = environ.get(name, "")
        return int(value) if value.isdigit() else 0

    alone = "but runs alone (--distributed=off?): drop --distributed=off so they join one run, or give each " \
            "its own --workdir"
    if number("OMPI_COMM_WORLD_SIZE") > 1:
        return f"this process is rank {number('OMPI_COMM_WORLD_RANK')} of {number('OMPI_COMM_WORLD_SIZE')} " \
               f"started by mpirun {alone}"
    if "SLURM_STEP_NODELIST" in environ and number("SLURM_NTASKS") > 1:
        return f"this process is task {number('SLURM_PROCID')} of a SLURM step with {number('SLURM_NTASKS')} " \
               f"tasks {alone}"
    if "SLURM_JOB_ID" in environ and number("SLURM_NTASKS") > 1:
        return f"this process is the batch script of SLURM job {environ['SLURM_JOB_ID']} " \
               f"({number('SLURM_NTASKS')} tasks) and runs outside srun: start the run with " \
               "`srun python -m experiments.train ...` so that the job's tasks join one run"
    if number("PMI_SIZE") > 1:
        return f"this process is rank {number('PMI_RANK')} of {number('PMI_SIZE')} of an MPI launcher JAX does " \
               "not detect (PMI_RANK/PMI_SIZE, e.g. MPICH or Intel MPI): give every rank --coordinator_address=" \
               f"HOST0:PORT --num_processes={number('PMI_SIZE')} --process_id=$PMI_RANK"
    if "KUBERNETES_SERVICE_HOST" in environ and "JOB_COMPLETION_INDEX" in environ:
        return f"this pod is index {number('JOB_COMPLETION_INDEX')} of a Kubernetes Indexed Job but runs alone: " \
               "install the kubernetes client (pip install kubernetes) so that the pods join one run, or give " \
               "--coordinator_address, --num_processes and --process_id"
    if number("WORLD_SIZE") > 1:
        return f"this process is rank {number('RANK')} of {number('WORLD_SIZE')} of a PyTorch-style launcher " \
               "(RANK/WORLD_SIZE), which JAX does not detect: give every rank --coordinator_address=" \
               f"$MASTER_ADDR:PORT --num_processes={number('WORLD_SIZE')} --process_id=$RANK"
    return None
