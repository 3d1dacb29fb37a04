"""Exact late-interaction (MaxSim) search: blocked brute force in JAX over `mire_jax.scoring.maxsim`.

Passages of different lengths are scored in blocks of a fixed number of passages, each block padded to
its longest passage rounded up to a multiple of `LENGTH_QUANTUM`; passages are visited in length order
so that padding stays small and only a handful of block shapes are ever compiled.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mire_jax.scoring import maxsim

LENGTH_QUANTUM = 16


def maxsim_scores(q: jax.Array, q_mask: jax.Array, d: jax.Array, d_mask: jax.Array) -> jax.Array:
    """MaxSim of every query against every passage, honouring a query mask.

    Masked query tokens are zeroed, so they add 0 to the score of any passage with at least one kept
    token (a passage with no kept token scores `mire_jax.scoring.MASKED_SCORE` per query token).

    Args:
        q: query token embeddings [Bq, Nq, dim].
        q_mask: [Bq, Nq] bool (or 0/1), True where the query token counts.
        d: passage token embeddings [Bd, Ld, dim].
        d_mask: [Bd, Ld] bool, True on kept tokens.

    Returns:
        float32 scores [Bq, Bd].
    """
    q = jnp.asarray(q, jnp.float32) * jnp.asarray(q_mask, jnp.float32)[..., None]
    return maxsim(q, jnp.asarray(d, jnp.float32), jnp.asarray(d_mask, bool))


@functools.partial(jax.jit, static_argnames=("k",))
def _block_topk(q, q_mask, d, d_mask, block_ids, best_scores, best_ids, *, k):
    scores = maxsim_scores(q, q_mask, d, d_mask)  # [B, P]
    scores = jnp.where(block_ids[None, :] >= 0, scores, -jnp.inf)
    all_scores = jnp.concatenate([best_scores, scores], axis=1)
    all_ids = jnp.concatenate([best_ids, jnp.broadcast_to(block_ids, scores.shape)], axis=1)
    top_scores, pos = jax.lax.top_k(all_scores, k)
    return top_scores, jnp.take_along_axis(all_ids, pos, axis=1)


def padded_length(max_len: int) -> int:
    """`max_len` rounded up to a multiple of LENGTH_QUANTUM (at least one quantum)."""
    return max(LENGTH_QUANTUM, -(-int(max_len) // LENGTH_QUANTUM) * LENGTH_QUANTUM)


def gather_padded(embeddings: np.ndarray, offsets: np.ndarray, passages: np.ndarray,
                  pad_to: int) -> tuple[np.ndarray, np.ndarray]:
    """Passages' token embeddings as a padded float32 block.

    Args:
        embeddings: [total_tokens, dim] token embeddings (any float dtype, may be a memmap).
        offsets: [N + 1] int64, passage p owns rows offsets[p]:offsets[p + 1].
        passages: [P] passage indices; -1 gives an empty (fully masked) row.
        pad_to: padded length (>= the longest selected passage).

    Returns:
        (block [P, pad_to, dim] float32, mask [P, pad_to] bool).
    """
    dim = embeddings.shape[1]
    block = np.zeros((len(passages), pad_to, dim), np.float32)
    mask = np.zeros((len(passages), pad_to), bool)
    for row, p in enumerate(passages):
        if p < 0:
            continue
        start, stop = int(offsets[p]), int(offsets[p + 1])
        block[row, :stop - start] = embeddings[start:stop]
        mask[row, :stop - start] = True
    return block, mask


def exact_search(embeddings: np.ndarray, offsets: np.ndarray, queries: np.ndarray,
                 query_mask: np.ndarray, k: int, *, passages_per_block: int = 512,
                 query_batch: int = 64, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-k passages of every query by exact MaxSim over the whole corpus.

    Args:
        embeddings: [total_tokens, dim] every passage's kept tokens, concatenated in passage order.
        offsets: [N + 1] token offsets of the passages.
        queries: [B, Nq, dim] query token embeddings.
        query_mask: [B, Nq] bool.
        k: results per query (at most N; fewer passages give -1 ids with -inf scores).
        passages_per_block: passages scored per step.
        query_batch: queries scored together against each block.
        progress: show a progress bar over blocks.

    Returns:
        (passage indices [B, k] int64, scores [B, k] float32), best first.
    """
    offsets = np.asarray(offsets, np.int64)
    lengths = np.diff(offsets)
    num_passages = len(lengths)
    order = np.argsort(lengths, kind="stable")
    num_queries = queries.shape[0]
    # A few queries are padded to the next power of two, not to a whole `query_batch`: one query then costs
    # one query's work (a server answering single requests), with few compiled shapes.
    query_batch = max(1, min(query_batch, 1 << max(num_queries - 1, 0).bit_length()))
    passages_per_block = max(1, min(passages_per_block, -(-num_passages // 64) * 64))  # a small corpus: one block
    out_ids = np.full((num_queries, k), -1, np.int64)
    out_scores = np.full((num_queries, k), -np.inf, np.float32)
    batches = [slice(s, min(s + query_batch, num_queries)) for s in range(0, num_queries, query_batch)]
    best = [(jnp.full((query_batch, k), -jnp.inf, jnp.float32), jnp.full((query_batch, k), -1, jnp.int32))
            for _ in batches]
    padded_q = []
    for sl in batches:
        q = np.zeros((query_batch,) + queries.shape[1:], np.float32)
        m = np.zeros((query_batch, queries.shape[1]), bool)
        q[:sl.stop - sl.start] = queries[sl]
        m[:sl.stop - sl.start] = query_mask[sl]
        padded_q.append((jnp.asarray(q), jnp.asarray(m)))
    starts = range(0, num_passages, passages_per_block)
    for start in tqdm(starts, desc="exact MaxSim", unit="block", disable=not progress):
        ids = np.full(passages_per_block, -1, np.int64)
        chunk = order[start:start + passages_per_block]
        ids[:len(chunk)] = chunk
        block, mask = gather_padded(embeddings, offsets, ids, padded_length(lengths[chunk].max()))
        block, mask, block_ids = jnp.asarray(block), jnp.asarray(mask), jnp.asarray(ids, jnp.int32)
        for i, (q, m) in enumerate(padded_q):
            best[i] = _block_topk(q, m, block, mask, block_ids, *best[i], k=k)
    for sl, (scores, ids) in zip(batches, best):
        n = sl.stop - sl.start
        out_scores[sl] = np.asarray(scores)[:n]
        out_ids[sl] = np.asarray(ids)[:n]
    out_ids[~np.isfinite(out_scores)] = -1
    return out_ids, out_scores


def exact_search_shards(shards, queries: np.ndarray, query_mask: np.ndarray, k: int, *,
                        passages_per_block: int = 512, query_batch: int = 64,
                        progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`exact_search` over several index shards (objects with `embeddings`, `offsets`, `first_passage`),
    merged into one top k of global passage positions."""
    from mire_jax.index.distributed import merge_topk

    if not shards:
        return (np.full((len(queries), k), -1, np.int64), np.full((len(queries), k), -np.inf, np.float32))
    parts_pos, parts_sc = [], []
    for shard in shards:
        pos, sc = exact_search(shard.embeddings, shard.offsets, queries, query_mask, k,
                               passages_per_block=passages_per_block, query_batch=query_batch, progress=progress)
        parts_pos.append(np.where(pos >= 0, pos + shard.first_passage, -1))
        parts_sc.append(sc)
    if len(shards) == 1:
        return parts_pos[0], parts_sc[0]
    return merge_topk(np.stack(parts_pos), np.stack(parts_sc), k)
