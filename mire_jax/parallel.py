"""Devices and hosts: the data-parallel mesh, multi-host initialisation, host-local -> global batches."""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


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


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over every device of every process, axis `data`."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def global_batch(mesh: Mesh, local_batch: dict) -> dict:
    """This process's batch (a dict of numpy arrays, leading axis = local examples) -> global jax arrays sharded
    over `data`. Every process must pass the same number of local examples."""
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}


def replicated(mesh: Mesh, tree):
    return jax.device_put(tree, NamedSharding(mesh, P()))


def is_writer() -> bool:
    """Only process 0 writes logs and files that are not per-process."""
    return jax.process_index() == 0
