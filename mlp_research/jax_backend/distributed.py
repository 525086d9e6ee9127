"""Multi-process (multi-host) start-up: `jax.distributed.initialize` before anything touches a device.

Given a coordinator address (flag or `JAX_COORDINATOR_ADDRESS`), every process
joins one JAX runtime; `jax.devices()` then lists the devices of all
processes and `--parallel=sharded` spans them. On CPU the processes exchange
gradients through gloo collectives, so the path is testable on one machine
with two processes on the loopback interface.
"""

from __future__ import annotations

import os

from mlp_research.errors import ConfigError


def check_args(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> str | None:
    """Validate the multi-process flags (before anything is written); the coordinator address or None."""
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise ConfigError("--coordinator_address: required with --num_processes/--process_id")
        return None
    if num_processes is None or process_id is None:
        raise ConfigError("--num_processes and --process_id: both required with --coordinator_address")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process_id: {process_id} is outside 0..{num_processes - 1}")
    return address


def initialize(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> bool:
    """Join the multi-process runtime if a coordinator is given; return whether one was joined."""
    address = check_args(coordinator_address, num_processes, process_id)
    if address is None:
        return False
    import jax

    # CPU devices of different processes talk through gloo; GPUs/TPUs bring their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(address, num_processes=num_processes, process_id=process_id)
    return True
