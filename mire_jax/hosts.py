"""Hosts: multi-host initialisation and which process writes shared files."""
from __future__ import annotations

import os

import jax


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, auto: bool = False) -> None:
    """`jax.distributed.initialize` from arguments or the environment (MIRE_COORDINATOR, MIRE_NUM_PROCESSES,
    MIRE_PROCESS_ID). `auto`: let JAX detect the cluster (TPU pods, SLURM, Open MPI). Otherwise a no-op."""
    coordinator = coordinator or os.environ.get("MIRE_COORDINATOR")
    if num_processes is None and "MIRE_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["MIRE_NUM_PROCESSES"])
    if process_id is None and "MIRE_PROCESS_ID" in os.environ:
        process_id = int(os.environ["MIRE_PROCESS_ID"])
    if not (coordinator or auto):
        return
    _lengthen_cpu_collective_timeouts()
    if coordinator:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    else:
        jax.distributed.initialize()
    # The first collective creates the CPU (gloo) communicators and waits only 30 s for every process to arrive:
    # run it now, while the processes are in step, not after work that takes them apart (building index shards).
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("distributed initialised")


CPU_COLLECTIVE_TIMEOUT_S = 4 * 3600  # processes may reach a collective hours apart (one builds more index shards)


def _lengthen_cpu_collective_timeouts() -> None:
    """CPU collectives time out after 30 s by default; let processes arrive `CPU_COLLECTIVE_TIMEOUT_S` apart
    (XLA reads XLA_FLAGS when the backend starts, which `jax.distributed.initialize` precedes)."""
    flags = os.environ.get("XLA_FLAGS", "")
    for name in ("xla_cpu_collective_timeout_seconds", "xla_cpu_collective_call_terminate_timeout_seconds"):
        if f"--{name}=" not in flags:
            flags += f" --{name}={CPU_COLLECTIVE_TIMEOUT_S}"
    os.environ["XLA_FLAGS"] = flags.strip()


def is_writer() -> bool:
    """Only process 0 writes logs and files that are not per-process."""
    return jax.process_index() == 0
