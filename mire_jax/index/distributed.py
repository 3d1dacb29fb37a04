"""Which process serves which index shards, and the collectives of a search spread over processes.

Under `jax.distributed` (one process per host, or several on one machine), process p serves the index
shards g with g % process_count == p. A search is collective: every process calls it, the queries of
process 0 are broadcast, each process searches its own shards, and the per-process top k (global passage
positions with exact scores) are gathered and merged, so every process returns the same result. With one
process all of this reduces to plain local calls: the same code runs on a laptop and on a pod.
Collectives are `jax.experimental.multihost_utils` (`broadcast_one_to_all`, `process_allgather`).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ProcessLayout:
    """This process's place among the processes serving an index."""

    index: int = 0
    count: int = 1

    @property
    def distributed(self) -> bool:
        return self.count > 1

    def owns(self, shard_number: int) -> bool:
        """Whether this process serves (and builds) index shard `shard_number`."""
        return shard_number % self.count == self.index


def current_layout(distributed: bool | None = None) -> ProcessLayout:
    """The layout of this JAX process: `jax.process_index()` of `jax.process_count()`.

    Args:
        distributed: False forces a single-process layout (every shard served here); None or True follow
            JAX (one process unless `jax.distributed` was initialised).
    """
    if distributed is False:
        return ProcessLayout()
    import jax
    return ProcessLayout(jax.process_index(), jax.process_count())


def broadcast(array: np.ndarray | None, layout: ProcessLayout, shape=None, dtype=None) -> np.ndarray:
    """Process 0's `array`, on every process. Other processes may pass None if they give `shape` and `dtype`."""
    if not layout.distributed:
        return array
    from jax.experimental import multihost_utils

    if array is None or layout.index != 0:
        array = np.zeros(shape, dtype)
    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(array)))


def broadcast_queries(query_embs, query_mask, k: int, exact: bool, layout: ProcessLayout):
    """Process 0's (queries [B, Nq, dim] float32, mask [B, Nq] bool, k, exact) on every process."""
    if not layout.distributed:
        return query_embs, query_mask, k, exact
    header = None
    if layout.index == 0:
        header = np.array([*np.shape(query_embs), int(k), int(bool(exact))], np.int32)
    header = broadcast(header, layout, (5,), np.int32)
    b, nq, dim, k, exact = (int(v) for v in header)
    q = broadcast(None if query_embs is None else np.asarray(query_embs, np.float32), layout,
                  (b, nq, dim), np.float32)
    m = broadcast(None if query_mask is None else np.asarray(query_mask, np.int32), layout, (b, nq), np.int32)
    return q, m.astype(bool), k, bool(exact)


def allgather(array: np.ndarray, layout: ProcessLayout) -> np.ndarray:
    """[process_count, ...]: every process's `array` (same shape and dtype everywhere)."""
    array = np.asarray(array)
    if not layout.distributed:
        return array[None]
    import jax
    from jax.experimental import multihost_utils
    if array.dtype == np.int64 and not jax.config.jax_enable_x64:  # JAX would silently wrap it to int32
        if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
            raise ValueError("int64 values beyond int32 cannot be gathered without jax_enable_x64")
        return np.asarray(multihost_utils.process_allgather(array.astype(np.int32), tiled=False)).astype(np.int64)
    return np.asarray(multihost_utils.process_allgather(array, tiled=False))


def merge_topk(positions: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-part top lists [P, B, k'] into the best k per query: (positions [B, k], scores [B, k]).

    Padding (-1 positions, -inf scores) sorts last; ties keep the lower position first.
    """
    parts, batch, width = positions.shape
    pos = np.moveaxis(positions, 0, 1).reshape(batch, parts * width)
    sc = np.moveaxis(scores, 0, 1).reshape(batch, parts * width)
    order = np.lexsort((np.where(pos < 0, np.iinfo(np.int64).max, pos), -sc), axis=-1)[:, :k]
    out_pos = np.take_along_axis(pos, order, 1)
    out_sc = np.take_along_axis(sc, order, 1).astype(np.float32)
    if out_pos.shape[1] < k:
        pad = k - out_pos.shape[1]
        out_pos = np.pad(out_pos, ((0, 0), (0, pad)), constant_values=-1)
        out_sc = np.pad(out_sc, ((0, 0), (0, pad)), constant_values=-np.inf)
    out_pos[~np.isfinite(out_sc)] = -1
    return out_pos.astype(np.int64), out_sc


def gather_topk(positions: np.ndarray, scores: np.ndarray, k: int,
                layout: ProcessLayout) -> tuple[np.ndarray, np.ndarray]:
    """Every process's top k (global positions [B, k], exact scores [B, k]) merged into the global top k."""
    if not layout.distributed:
        return positions, scores
    if positions.size and positions.max() >= np.iinfo(np.int32).max:
        raise ValueError("passage positions beyond int32 cannot be gathered")
    gathered_pos = allgather(positions.astype(np.int32), layout).astype(np.int64)
    gathered_sc = allgather(scores.astype(np.float32), layout)
    return merge_topk(gathered_pos, gathered_sc, k)


def barrier(name: str, layout: ProcessLayout) -> None:
    """Wait until every process reaches this point."""
    if layout.distributed:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
