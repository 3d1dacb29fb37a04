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
    if coordinator:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    elif auto:
        jax.distributed.initialize()


def is_writer() -> bool:
    """Only process 0 writes logs and files that are not per-process."""
    return jax.process_index() == 0
