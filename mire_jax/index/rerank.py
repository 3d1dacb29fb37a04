"""Exact MaxSim of a query against chosen passages, reading their float16 tokens from the index shards.

The passages' tokens are copied, whole passages at a time, into chunks of `CHUNK_TOKENS` rows (one compiled
shape; a passage longer than that gets a chunk of its own, rounded up to a multiple of it) and scored in
float32: one matrix product per chunk, then the best token per passage and query token, summed over query
tokens (MaxSim, as `mire_jax.scoring.maxsim` defines it). Chunks keep every buffer under glibc's 32 MB mmap
threshold: one block of all candidates (130k tokens for 800 long passages) was mapped and faulted in anew at
every query, which took longer than the product.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mire_jax.scoring import MASKED_SCORE

CHUNK_TOKENS = 16384  # token rows scored per product


@jax.jit
def _token_scores(q: jax.Array, tokens: jax.Array) -> jax.Array:
    """q [n, dim] float32 against stored tokens [T, dim] (float16): [n, T] float32 dot products."""
    return jnp.dot(q, tokens.astype(jnp.float32).T)


def chunks(lengths: np.ndarray, capacity: int = CHUNK_TOKENS) -> list[slice]:
    """Consecutive runs of passages (of these token counts) holding at most `capacity` tokens each; a longer
    passage is a run of its own."""
    out, start, filled = [], 0, 0
    for i, n in enumerate(lengths.tolist()):
        if i > start and filled + n > capacity:
            out.append(slice(start, i))
            start, filled = i, 0
        filled += n
    if len(lengths):
        out.append(slice(start, len(lengths)))
    return out


def maxsim_passages(q: np.ndarray, embeddings, offsets: np.ndarray, passages: np.ndarray) -> np.ndarray:
    """Exact MaxSim of one query q [n, dim] (masked tokens zeroed) against `passages` -> [P] float32.

    `embeddings` holds every passage's tokens at `offsets` (one array, a memory map or a `RowConcat`); passages
    in ascending order are read sequentially. Passages without tokens score `MASKED_SCORE` per query token, as in
    the exact search.
    """
    passages = np.asarray(passages, np.int64)
    starts, stops = offsets[passages], offsets[passages + 1]
    lengths = stops - starts
    scores = np.full(len(passages), MASKED_SCORE * len(q), np.float32)
    kept = np.flatnonzero(lengths > 0)
    q = jnp.asarray(np.asarray(q, np.float32))
    buffer = np.zeros((CHUNK_TOKENS, embeddings.shape[1]), np.float16)
    for run in chunks(lengths[kept]):
        members = kept[run]
        total = int(lengths[members].sum())
        block = buffer if total <= CHUNK_TOKENS else np.zeros((-(-total // CHUNK_TOKENS) * CHUNK_TOKENS,
                                                                embeddings.shape[1]), np.float16)
        row = 0
        for start, stop in zip(starts[members].tolist(), stops[members].tolist()):
            block[row:row + stop - start] = embeddings[start:stop]
            row += stop - start
        sim = np.asarray(_token_scores(q, block))[:, :total]
        seg = np.concatenate([[0], np.cumsum(lengths[members])[:-1]])
        scores[members] = np.maximum.reduceat(sim, seg, axis=1).sum(axis=0)
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
