"""The token matrix of a corpus held as several shards, read as one: passage offsets, a concatenation of shards'
rows without copying them, and the view of the shards one process serves."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


def concat_offsets(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Token offsets of consecutive parts (each [n_i + 1], starting at 0) as one [sum n_i + 1] array."""
    out, base = [np.zeros(1, np.int64)], 0
    for offsets in parts:
        out.append(np.asarray(offsets[1:], np.int64) + base)
        base += int(offsets[-1])
    return np.concatenate(out)


class RowConcat:
    """Several [rows, dim] arrays (e.g. memory maps of index shards) read as one, without copying them.

    Supports `shape`, `dtype`, `len`, and indexing by an int, a slice (step 1) or an integer array.
    """

    def __init__(self, parts: Sequence[np.ndarray]):
        if not parts:
            raise ValueError("RowConcat needs at least one part")
        self.parts = list(parts)
        self.starts = np.concatenate([[0], np.cumsum([p.shape[0] for p in self.parts])]).astype(np.int64)
        self.shape = (int(self.starts[-1]),) + tuple(self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step != 1:
                raise IndexError("RowConcat slices must have step 1")
            if stop <= start:
                return np.empty((0,) + self.shape[1:], self.dtype)
            part = int(np.searchsorted(self.starts, start, side="right") - 1)
            if stop <= self.starts[part + 1]:  # within one part: a view of it
                return self.parts[part][start - self.starts[part]:stop - self.starts[part]]
            return self[np.arange(start, stop)]
        if isinstance(index, (int, np.integer)):
            index = int(index) + (self.shape[0] if index < 0 else 0)
            part = int(np.searchsorted(self.starts, index, side="right") - 1)
            return self.parts[part][index - self.starts[part]]
        rows = np.asarray(index, np.int64)
        out = np.empty((len(rows),) + self.shape[1:], self.dtype)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for p in np.unique(part):
            sel = part == p
            out[sel] = self.parts[p][rows[sel] - self.starts[p]]
        return out

    def __array__(self, dtype=None, copy=None):
        out = np.concatenate([np.asarray(p) for p in self.parts])
        return out if dtype is None else out.astype(dtype)


@dataclasses.dataclass(frozen=True)
class LocalView:
    """The passages of the shards this process serves, as one corpus of consecutive local positions.

    Attributes:
        embeddings: every local passage's tokens as one [tokens, dim] float32 array view (a shard's
            `mire_jax.index.token_store.TokenStore`, or a `RowConcat` of them), read in corpus order.
        offsets: [local passages + 1] token offsets into `embeddings`.
        first_passages: [shards] the global position of each local shard's first passage.
        local_starts: [shards + 1] the local position of each local shard's first passage (and the total).
        stores: [shards] each local shard's stored tokens.
    """

    embeddings: object
    offsets: np.ndarray
    first_passages: np.ndarray
    local_starts: np.ndarray
    stores: tuple = ()

    @classmethod
    def of(cls, shards: Sequence, dim: int) -> "LocalView":
        """The view of `shards` (objects with `store`, `offsets`, `first_passage` and `num_passages`)."""
        shards = sorted(shards, key=lambda s: s.first_passage)
        parts = [s.store for s in shards] or [np.zeros((0, dim), np.float32)]
        embeddings = parts[0] if len(parts) == 1 else RowConcat(parts)
        offsets = concat_offsets([s.offsets for s in shards]).astype(np.int64)
        firsts = np.array([s.first_passage for s in shards], np.int64)
        starts = np.concatenate([[0], np.cumsum([s.num_passages for s in shards])]).astype(np.int64)
        return cls(embeddings, offsets, firsts, starts, tuple(s.store for s in shards))

    def by_store(self, local: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Local positions split by shard: [(shard number, positions within that shard, their indices in
        `local`)] for the shards that hold some."""
        local = np.asarray(local, np.int64)
        shard = np.searchsorted(self.local_starts, local, side="right") - 1
        out = []
        for number in np.unique(shard).tolist():
            where = np.flatnonzero(shard == number)
            out.append((number, local[where] - self.local_starts[number], where))
        return out

    @property
    def lengths(self) -> np.ndarray:
        """[local passages] tokens per passage."""
        return np.diff(self.offsets)

    def to_local(self, positions: np.ndarray) -> np.ndarray:
        """Global passage positions of the local shards -> local positions."""
        shard = np.searchsorted(self.first_passages, positions, side="right") - 1
        return self.local_starts[shard] + positions - self.first_passages[shard]

    def to_global(self, local: np.ndarray) -> np.ndarray:
        """Local positions -> global passage positions (-1 stays -1)."""
        shard = np.searchsorted(self.local_starts, np.maximum(local, 0), side="right") - 1
        return np.where(local >= 0, self.first_passages[shard] + local - self.local_starts[shard], -1)
