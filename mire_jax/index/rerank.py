"""Exact MaxSim of a query against chosen passages, reading their float16 tokens from the index shards.

The passages' tokens are gathered into one flat block (padded to a multiple of `TOKEN_BUCKET` rows, so
few shapes are compiled) and scored in float32: one matrix product per query, then the best token per
passage and query token, summed over query tokens (MaxSim, as `mire_jax.scoring.maxsim` defines it).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mire_jax.scoring import MASKED_SCORE

TOKEN_BUCKET = 4096  # rerank blocks are padded to a multiple of this many token rows


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


@jax.jit
def _token_scores(q: jax.Array, tokens: jax.Array) -> jax.Array:
    """q [n, dim] float32 against stored tokens [T, dim] (float16): [n, T] float32 dot products."""
    return jnp.dot(q, tokens.astype(jnp.float32).T)


def gather_tokens(embeddings, offsets: np.ndarray, passages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tokens of `passages` (ascending positions read sequentially) as one padded float16 block.

    Returns:
        (block [ceil(T / TOKEN_BUCKET) * TOKEN_BUCKET, dim], lengths [P]); padding rows repeat row 0.
    """
    starts, stops = offsets[passages], offsets[passages + 1]
    lengths = stops - starts
    total = int(lengths.sum())
    padded = max(-(-total // TOKEN_BUCKET), 1) * TOKEN_BUCKET
    block = np.empty((padded, embeddings.shape[1]), np.float16)
    if isinstance(embeddings, np.ndarray):  # contiguous slices: fast sequential copies
        row = 0
        for start, stop in zip(starts.tolist(), stops.tolist()):
            block[row:row + stop - start] = embeddings[start:stop]
            row += stop - start
    else:
        seg = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        rows = np.arange(total) - np.repeat(seg - starts, lengths)
        block[:total] = embeddings[rows]
    block[total:] = block[0] if total else 0
    return block, lengths


def maxsim_passages(q: np.ndarray, embeddings, offsets: np.ndarray, passages: np.ndarray) -> np.ndarray:
    """Exact MaxSim of one query q [n, dim] (masked tokens zeroed) against `passages` -> [P] float32.

    `embeddings` holds every passage's tokens at `offsets` (one array, a memory map or a `RowConcat`).
    Passages without tokens score `MASKED_SCORE` per query token, as in the exact search.
    """
    passages = np.asarray(passages, np.int64)
    lengths = offsets[passages + 1] - offsets[passages]
    nonempty = lengths > 0
    scores = np.full(len(passages), MASKED_SCORE * len(q), np.float32)
    if not nonempty.any():
        return scores
    kept = passages[nonempty]
    block, lens = gather_tokens(embeddings, offsets, kept)
    total = int(lens.sum())
    sim = np.asarray(_token_scores(np.asarray(q, np.float32), block))[:, :total]
    seg = np.concatenate([[0], np.cumsum(lens)[:-1]])
    scores[nonempty] = np.maximum.reduceat(sim, seg, axis=1).sum(axis=0)
    return scores


def rerank(q: np.ndarray, q_mask: np.ndarray, candidates: Sequence[np.ndarray], k: int, embeddings,
           offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact MaxSim of each query over its candidate passages -> (positions [B, k], scores [B, k]).

    Rows with fewer than k candidates are padded with -1 and -inf.
    """
    ids_out = np.full((len(q), k), -1, np.int64)
    scores_out = np.full((len(q), k), -np.inf, np.float32)
    for b, cand in enumerate(candidates):
        if len(cand) == 0:
            continue
        cand = np.sort(np.asarray(cand, np.int64))  # ascending offsets: sequential reads
        scores = maxsim_passages(q[b] * q_mask[b][:, None], embeddings, offsets, cand)
        top = np.argsort(-scores, kind="stable")[:k]
        ids_out[b, :len(top)] = cand[top]
        scores_out[b, :len(top)] = scores[top]
    return ids_out, scores_out
