"""Exact late-interaction (MaxSim) search: blocked brute force in JAX, the value of `mire_jax.scoring.maxsim`.

Passages of different lengths are scored in blocks of a fixed number of passages, each block padded to
its longest passage rounded up to a multiple of `LENGTH_QUANTUM`; passages are visited in length order
so that padding stays small and only a handful of block shapes are ever compiled. A corpus whose blocks
take at most `KEEP_BLOCKS_BYTES` keeps them on the device between searches (a server's index), a larger
one is read block by block at every search.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mire_jax.index.distributed import merge_topk
from mire_jax.models.blocks import cpu_or_accelerator, largest_divisor_block
from mire_jax.scoring import MASKED_SCORE

LENGTH_QUANTUM = 8
CPU_TILE_ELEMENTS = 1 << 22
KEEP_BLOCKS_BYTES = 512 << 20


def padded_maxsim(q: jax.Array, q_mask: jax.Array, d: jax.Array, nonempty: jax.Array) -> jax.Array:
    """MaxSim of every query against every passage of a padded block (forward only), as `mire_jax.scoring.maxsim`.

    The block's padding rows repeat a kept token of their own passage (`gather_padded`), so they never change a
    maximum and no mask is applied: one product of every query token against every passage token, then the
    maxima (on CPU about twice the speed of masking and of the batched product the training loss needs).
    Masked query tokens are zeroed, so they add 0; a passage without tokens scores
    `mire_jax.scoring.MASKED_SCORE` per query token.

    Args:
        q: query token embeddings [Bq, Nq, dim].
        q_mask: [Bq, Nq] bool (or 0/1), True where the query token counts.
        d: passage tokens [Bd, Ld, dim], padding rows repeating a token of the same passage.
        nonempty: [Bd] bool, False for passages without tokens.

    Returns:
        float32 scores [Bq, Bd].
    """
    bq, nq, dim = q.shape
    bd, ld, _ = d.shape
    q = jnp.asarray(q, jnp.float32) * jnp.asarray(q_mask, jnp.float32)[..., None]
    sim = jnp.dot(q.reshape(bq * nq, dim), jnp.asarray(d, jnp.float32).reshape(bd * ld, dim).T)
    scores = sim.reshape(bq * nq, bd, ld).max(-1).reshape(bq, nq, bd).sum(1)
    return jnp.where(nonempty[None, :], scores, MASKED_SCORE * nq)


def tiled_maxsim(q: jax.Array, q_mask: jax.Array, d: jax.Array, nonempty: jax.Array) -> jax.Array:
    """`padded_maxsim`; on CPU a few queries at a time, so that each similarity tile holds at most
    `CPU_TILE_ELEMENTS` values: a tile past glibc's 32 MB mmap threshold is mapped and faulted in at every call,
    which halved the speed of the product."""
    def cpu(q, q_mask, d, nonempty):
        per_query = q.shape[1] * d.shape[0] * d.shape[1]
        step = largest_divisor_block(q.shape[0], per_query, CPU_TILE_ELEMENTS)
        return jnp.concatenate([padded_maxsim(q[i:i + step], q_mask[i:i + step], d, nonempty)
                                for i in range(0, q.shape[0], step)])

    return cpu_or_accelerator(cpu, padded_maxsim, q, q_mask, d, nonempty)


@functools.partial(jax.jit, static_argnames=("k",))
def _block_topk(q, q_mask, d, nonempty, block_ids, best_scores, best_ids, *, k):
    scores = tiled_maxsim(q, q_mask, d, nonempty)  # [B, P]
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
    """Passages' token embeddings as a padded float32 block whose padding repeats each passage's first token.

    Args:
        embeddings: [total_tokens, dim] token embeddings (any float dtype, may be a memmap).
        offsets: [N + 1] int64, passage p owns rows offsets[p]:offsets[p + 1].
        passages: [P] passage indices; -1 gives an empty row.
        pad_to: padded length (>= the longest selected passage).

    Returns:
        (block [P, pad_to, dim] float32, nonempty [P] bool: the passage has tokens).
    """
    passages = np.asarray(passages, np.int64)
    valid = passages >= 0
    starts = np.where(valid, np.asarray(offsets)[np.maximum(passages, 0)], 0)
    lengths = np.where(valid, np.asarray(offsets)[np.maximum(passages, 0) + 1] - starts, 0)
    nonempty = lengths > 0
    # Row j of passage i reads token starts[i] + j, or its first token past its end.
    column = np.arange(pad_to)[None, :]
    rows = starts[:, None] + np.where(column < lengths[:, None], column, 0)
    block = np.zeros((len(passages), pad_to, embeddings.shape[1]), np.float32)
    block[nonempty] = embeddings[rows[nonempty].reshape(-1)].reshape(-1, pad_to, embeddings.shape[1])
    return block, nonempty


def iter_blocks(embeddings: np.ndarray, offsets: np.ndarray, passages_per_block: int):
    """The corpus as padded blocks for `exact_search`: passages in length order, `passages_per_block` per block,
    each block padded to its longest passage rounded up to LENGTH_QUANTUM. Yields (block, nonempty, ids) as
    device arrays (ids -1 past the corpus end)."""
    order = np.argsort(np.diff(np.asarray(offsets, np.int64)), kind="stable")
    pads = block_lengths(offsets, passages_per_block)
    for start, pad_to in zip(range(0, len(order), passages_per_block), pads):
        ids = np.full(passages_per_block, -1, np.int64)
        chunk = order[start:start + passages_per_block]
        ids[:len(chunk)] = chunk
        block, nonempty = gather_padded(embeddings, offsets, ids, pad_to)
        yield jnp.asarray(block), jnp.asarray(nonempty), jnp.asarray(ids, jnp.int32)


def block_lengths(offsets: np.ndarray, per_block: int) -> list[int]:
    """The padded length of every block `iter_blocks(..., per_block)` makes of a corpus, in order."""
    lengths = np.sort(np.diff(np.asarray(offsets, np.int64)))
    return [padded_length(lengths[start:start + per_block].max()) for start in range(0, len(lengths), per_block)]


def padded_bytes(offsets: np.ndarray, per_block: int, dim: int) -> int:
    """Bytes of the float32 blocks `iter_blocks(..., per_block)` makes of a corpus of `dim`-d tokens."""
    return sum(block_lengths(offsets, per_block)) * per_block * dim * 4


def block_size(num_passages: int, passages_per_block: int) -> int:
    """Passages per exact-search block: at most `passages_per_block` (rounded up to 8), the corpus split into
    blocks as even as possible, so that the last one is not mostly empty rows."""
    blocks = max(1, -(-num_passages // max(1, passages_per_block)))
    return max(8, -(-(-(-num_passages // blocks)) // 8) * 8)


def compile_search(offsets: np.ndarray, num_queries: int, query_len: int, dim: int, k: int, *,
                   passages_per_block: int = 128, query_batch: int = 64) -> None:
    """Compile every program `exact_search` runs for these queries over this corpus, on zero inputs made the way it
    makes its own (host arrays put on the device), so that a timed search measures search, not compilation."""
    batch = max(1, min(query_batch, 1 << max(num_queries - 1, 0).bit_length()))
    q = jnp.asarray(np.zeros((batch, query_len, dim), np.float32))
    m = jnp.asarray(np.ones((batch, query_len), bool))
    best = (jnp.full((batch, k), -jnp.inf, jnp.float32), jnp.full((batch, k), -1, jnp.int32))
    per_block = block_size(len(offsets) - 1, passages_per_block)
    for length in sorted(set(block_lengths(offsets, per_block))):
        block = jnp.asarray(np.zeros((per_block, length, dim), np.float32))
        ids = jnp.asarray(np.zeros(per_block, np.int64), jnp.int32)
        jax.block_until_ready(_block_topk(q, m, block, jnp.asarray(np.ones(per_block, bool)), ids, *best, k=k))


def exact_search(embeddings: np.ndarray, offsets: np.ndarray, queries: np.ndarray,
                 query_mask: np.ndarray, k: int, *, passages_per_block: int = 128,
                 query_batch: int = 64, progress: bool = True, blocks=None) -> tuple[np.ndarray, np.ndarray]:
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
        blocks: the corpus's `iter_blocks(embeddings, offsets, block_size(N, passages_per_block))`, kept by a
            caller that searches the same corpus again; None reads them from `embeddings`.

    Returns:
        (passage indices [B, k] int64, scores [B, k] float32), best first.
    """
    offsets = np.asarray(offsets, np.int64)
    num_passages = len(offsets) - 1
    num_queries = queries.shape[0]
    # A few queries are padded to the next power of two, not to a whole `query_batch`: one query then costs
    # one query's work (a server answering single requests), with few compiled shapes.
    query_batch = max(1, min(query_batch, 1 << max(num_queries - 1, 0).bit_length()))
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
    per_block = block_size(num_passages, passages_per_block)
    if blocks is None:
        blocks = iter_blocks(embeddings, offsets, per_block)
    for block, nonempty, block_ids in tqdm(blocks, desc="exact MaxSim", unit="block", disable=not progress,
                                           total=-(-num_passages // per_block)):
        for i, (q, m) in enumerate(padded_q):
            best[i] = _block_topk(q, m, block, nonempty, block_ids, *best[i], k=k)
    for sl, (scores, ids) in zip(batches, best):
        n = sl.stop - sl.start
        out_scores[sl] = np.asarray(scores)[:n]
        out_ids[sl] = np.asarray(ids)[:n]
    out_ids[~np.isfinite(out_scores)] = -1
    return out_ids, out_scores


def exact_search_shards(shards, queries: np.ndarray, query_mask: np.ndarray, k: int, *,
                        passages_per_block: int = 128, query_batch: int = 64,
                        progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`exact_search` over several index shards (`IndexShard`s: their blocks are kept when small), merged into one
    top k of global passage positions."""
    if not shards:
        return (np.full((len(queries), k), -1, np.int64), np.full((len(queries), k), -np.inf, np.float32))
    parts_pos, parts_sc = [], []
    for shard in shards:
        pos, sc = exact_search(shard.embeddings, shard.offsets, queries, query_mask, k,
                               passages_per_block=passages_per_block, query_batch=query_batch, progress=progress,
                               blocks=shard.exact_blocks(passages_per_block))
        parts_pos.append(np.where(pos >= 0, pos + shard.first_passage, -1))
        parts_sc.append(sc)
    if len(shards) == 1:
        return parts_pos[0], parts_sc[0]
    return merge_topk(np.stack(parts_pos), np.stack(parts_sc), k)
