"""The reproduction on several hosts: every process runs the same graph, in the same order, and takes the same
decisions, which process 0 makes and the others follow. Process 0 alone writes records and the report; the stages
themselves share their work as the project's tools do (training and the vision cache over every process, the corpus
encoding and the index sharded over processes), except the stages that build files alone (`Stage.hosts ==
"writer"`: ViD2R construction, the generated world), which the other processes wait for.

The output folder and the data root must be the same path on every host (a shared filesystem).
"""
from __future__ import annotations

import numpy as np


def process_index() -> int:
    import jax
    return jax.process_index()


def process_count() -> int:
    import jax
    return jax.process_count()


def is_writer() -> bool:
    return process_index() == 0


def agree(value: int) -> int:
    """Process 0's `value` (a small int), on every process."""
    if process_count() == 1:
        return value
    from jax.experimental import multihost_utils
    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name`."""
    if process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"reproduce: {name}")
