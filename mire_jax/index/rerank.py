"""Exact MaxSim of a query against chosen passages, reading their stored tokens from the index shards.

The passages' stored rows (`mire_jax.index.token_store`: codes and per-token scales; a passage's own tokens are one
contiguous run of rows) are copied, whole passages at a time and in store order, into chunks of `CHUNK_TOKENS` rows
(one compiled shape; a passage longer than that gets a chunk of its own, rounded up to a multiple of it), decoded
and scored in float32: one matrix product per chunk, then the best token per passage and query token, summed over
query tokens (MaxSim, as `mire_jax.scoring.maxsim` defines it). Chunks keep every buffer under glibc's 32 MB mmap
threshold: one block of all candidates (130k tokens for 800 long passages) was mapped and faulted in anew at every
query, which took longer than the product. The scores are those of exact search over the same stored tokens.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mire_jax.index.token_store import Codec, TokenStore
from mire_jax.scoring import MASKED_SCORE

CHUNK_TOKENS = 16384  # token rows scored per product


@functools.partial(jax.jit, static_argnames=("codec", "dim"))
def _token_scores(q: jax.Array, codes: jax.Array, scales, *, codec: Codec, dim: int) -> jax.Array:
    """q [n, dim] float32 against stored rows (codes [T, width], scales [T]): [n, T] float32 dot products."""
    return jnp.dot(q, codec.decode_jax(codes, scales, dim).T)


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


def maxsim_passages(q: np.ndarray, store: TokenStore, passages: np.ndarray) -> np.ndarray:
    """Exact MaxSim of one query q [n, dim] (masked tokens zeroed) against `passages` of a store -> [P] float32.

    Passages are read in store order (sequential reads of the mapped files). Passages without tokens score
    `MASKED_SCORE` per query token, as in the exact search.
    """
    passages = np.asarray(passages, np.int64)
    lengths, rows = store.layout.lengths[passages], store.layout.rows[passages]
    scores = np.full(len(passages), MASKED_SCORE * len(q), np.float32)
    kept = np.flatnonzero(lengths > 0)
    kept = kept[np.argsort(rows[kept], kind="stable")]
    codec, width = store.codec, store.codes.shape[1]
    q = jnp.asarray(np.asarray(q, np.float32))
    codes_buffer = np.zeros((CHUNK_TOKENS, width), store.codes.dtype)
    scales_buffer = np.zeros(CHUNK_TOKENS, np.float16) if store.scales is not None else None
    for run in chunks(lengths[kept]):
        members = kept[run]
        total = int(lengths[members].sum())
        if total <= CHUNK_TOKENS:
            codes, scales = codes_buffer, scales_buffer
        else:
            size = -(-total // CHUNK_TOKENS) * CHUNK_TOKENS
            codes = np.zeros((size, width), store.codes.dtype)
            scales = None if scales_buffer is None else np.zeros(size, np.float16)
        row = 0
        for start, n in zip(rows[members].tolist(), lengths[members].tolist()):
            codes[row:row + n] = store.codes[start:start + n]
            if scales is not None:
                scales[row:row + n] = store.scales[start:start + n]
            row += n
        sim = np.asarray(_token_scores(q, codes, scales, codec=codec, dim=store.dim))[:, :total]
        seg = np.concatenate([[0], np.cumsum(lengths[members])[:-1]])
        scores[members] = np.maximum.reduceat(sim, seg, axis=1).sum(axis=0)
    return scores


def rerank(q: np.ndarray, q_mask: np.ndarray, candidates: Sequence[np.ndarray], k: int,
           view) -> tuple[np.ndarray, np.ndarray]:
    """Exact MaxSim of each query over its candidate passages (local positions of `view`, a
    `mire_jax.index.tokens.LocalView`) -> (local positions [B, k], scores [B, k]).

    Rows with fewer than k candidates are padded with -1 and -inf.
    """
    ids_out = np.full((len(q), k), -1, np.int64)
    scores_out = np.full((len(q), k), -np.inf, np.float32)
    for b, cand in enumerate(candidates):
        if len(cand) == 0:
            continue
        cand = np.sort(np.asarray(cand, np.int64))
        scores = np.empty(len(cand), np.float32)
        query = q[b] * q_mask[b][:, None]
        for number, within, where in view.by_store(cand):
            scores[where] = maxsim_passages(query, view.stores[number], within)
        top = np.argsort(-scores, kind="stable")[:k]
        ids_out[b, :len(top)] = cand[top]
        scores_out[b, :len(top)] = scores[top]
    return ids_out, scores_out
