"""Data parallelism over this process's devices, for inference (encoding passages, queries, images).

Each process works alone on its own devices: the parameters are replicated on them and every batch is split
along its first axis. Batches always have the same number of rows (the last one is zero-padded and the padding
rows dropped from the outputs), so the jitted function is compiled once per input shape.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    return np.pad(array, [(0, rows - len(array))] + [(0, 0)] * (array.ndim - 1))


class DataParallel:
    """`fn(params, *arrays)` over fixed-size batches split across this process's devices.

    Args:
        fn: a jitted function of (params, *arrays) whose outputs (any pytree of arrays) have one row per input row,
            e.g. `functools.partial(mire_jax.encode_doc, config)`.
        params: its parameters, replicated once on every device (instances sharing params share the copies).
        batch_size: rows per call of `fn`, rounded up to a multiple of the device count (`self.batch_size`).
        devices: the devices to use; default `jax.local_devices()`.
    """

    def __init__(self, fn: Callable[..., Any], params: Any, batch_size: int, *,
                 devices: Sequence[jax.Device] | None = None):
        devices = list(devices) if devices is not None else jax.local_devices()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        mesh = Mesh(np.asarray(devices), (DATA_AXIS,))
        self.fn = fn
        self.num_devices = len(devices)
        self.batch_size = -(-batch_size // self.num_devices) * self.num_devices
        self.params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        self._rows = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    def __call__(self, *arrays: np.ndarray) -> Any:
        """`fn`'s outputs (as numpy arrays) for arrays of any common number of rows, one batch at a time."""
        arrays = [np.asarray(a) for a in arrays]
        rows = {len(a) for a in arrays}
        if len(rows) != 1:
            raise ValueError(f"the arrays have different numbers of rows: {sorted(rows)}")
        total = rows.pop()
        # An empty input still runs one (all-padding) batch, so the outputs have their shapes and dtypes.
        outputs = [self._run_batch([a[start:start + self.batch_size] for a in arrays])
                   for start in range(0, max(total, 1), self.batch_size)]
        if len(outputs) == 1:
            return jax.tree_util.tree_map(lambda x: x[:total], outputs[0])
        return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *outputs)

    def _run_batch(self, batch: list[np.ndarray]) -> Any:
        rows = len(batch[0])
        padded = [jax.device_put(_pad_rows(a, self.batch_size), self._rows) for a in batch]
        return jax.tree_util.tree_map(lambda x: np.asarray(x)[:rows], self.fn(self.params, *padded))
