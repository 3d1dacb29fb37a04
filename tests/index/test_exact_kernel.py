"""The exact search's kernel: padded blocks whose padding repeats a passage's own token, one product per tile, and
blocks kept between searches; each checked against `mire_jax.scoring.maxsim` or against the unkept search."""
import jax.numpy as jnp
import numpy as np
import pytest

from mire_jax.index import exact
from mire_jax.scoring import MASKED_SCORE, maxsim


def _corpus(rng, num_passages, dim, max_len, empty=0):
    lengths = rng.integers(1, max_len + 1, size=num_passages)
    lengths[rng.choice(num_passages, size=empty, replace=False)] = 0
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # Mostly negative similarities: padding that scored 0 (zero rows) would win the maxima and show.
    tokens = rng.standard_normal((int(offsets[-1]), dim)).astype(np.float32) - 2.0
    return tokens, offsets, lengths


@pytest.mark.parametrize("num_queries,nq,num_passages,dim,max_len,empty",
                         [(3, 5, 40, 8, 9, 3), (1, 32, 17, 16, 40, 0), (8, 7, 64, 4, 1, 2)])
def test_padded_maxsim_equals_maxsim(num_queries, nq, num_passages, dim, max_len, empty):
    rng = np.random.default_rng(num_passages)
    tokens, offsets, lengths = _corpus(rng, num_passages, dim, max_len, empty)
    queries = rng.standard_normal((num_queries, nq, dim)).astype(np.float32) + 1.0
    q_mask = rng.random((num_queries, nq)) > 0.3
    q_mask[:, 0] = True
    passages = np.arange(num_passages)
    block, nonempty = exact.gather_padded(tokens, offsets, passages, exact.padded_length(lengths.max()))
    assert nonempty.tolist() == (lengths > 0).tolist()
    got = np.asarray(exact.tiled_maxsim(jnp.asarray(queries), jnp.asarray(q_mask), jnp.asarray(block),
                                        jnp.asarray(nonempty)))
    # The reference: masked padding and masked query tokens zeroed, as the training loss scores.
    pad = exact.padded_length(lengths.max())
    d_mask = np.arange(pad)[None, :] < lengths[:, None]
    reference = np.array(maxsim(jnp.asarray(queries * q_mask[..., None]), jnp.asarray(block), jnp.asarray(d_mask)))
    reference[:, lengths == 0] = MASKED_SCORE * nq  # every query token of an empty passage scores the fill
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("num_queries", [1, 3, 70])
@pytest.mark.parametrize("per_block", [8, 128])
def test_kept_blocks_search_as_blocks_read_each_time(monkeypatch, num_queries, per_block):
    rng = np.random.default_rng(num_queries)
    tokens, offsets, _ = _corpus(rng, 300, 16, 30, empty=4)
    queries = rng.standard_normal((num_queries, 6, 16)).astype(np.float32)
    q_mask = np.ones(queries.shape[:2], bool)
    blocks = list(exact.iter_blocks(tokens, offsets, exact.block_size(300, per_block)))
    kept = exact.exact_search(tokens, offsets, queries, q_mask, 50, passages_per_block=per_block, progress=False,
                              blocks=blocks)
    read = exact.exact_search(tokens, offsets, queries, q_mask, 50, passages_per_block=per_block, progress=False)
    np.testing.assert_array_equal(kept[0], read[0])
    np.testing.assert_allclose(kept[1], read[1], rtol=1e-6)
    brute = np.array([[(tokens[offsets[p]:offsets[p + 1]] @ q.T).max(axis=0).sum() if offsets[p + 1] > offsets[p]
                       else MASKED_SCORE * len(q) for p in range(300)] for q in queries])
    np.testing.assert_allclose(read[1], -np.sort(-brute, axis=1)[:, :50], rtol=1e-4, atol=1e-3)


def test_block_sizes_split_the_corpus_evenly():
    for num_passages in (1, 7, 8, 100, 129, 300, 1000, 100_003):
        for per_block in (8, 32, 128, 512):
            size = exact.block_size(num_passages, per_block)
            blocks = -(-num_passages // size)
            assert size % 8 == 0 and size <= max(8, -(-per_block // 8) * 8)
            assert blocks == max(1, -(-num_passages // per_block))  # no more blocks than the limit needs
            assert blocks * size - num_passages < 8 * blocks  # empty rows: under 8 per block


def test_kept_blocks_are_bounded(monkeypatch):
    from mire_jax.index.index_shard import IndexShard
    rng = np.random.default_rng(0)
    tokens, offsets, _ = _corpus(rng, 50, 8, 10)
    shard = IndexShard(tokens.astype(np.float16), offsets)
    assert shard.exact_blocks(16) is shard.exact_blocks(16)  # made once
    assert exact.padded_bytes(offsets, 16, 8) == sum(int(np.prod(b.shape)) * 4 for b, _, _ in shard.exact_blocks(16))
    monkeypatch.setattr(exact, "KEEP_BLOCKS_BYTES", exact.padded_bytes(offsets, 24, 8) - 1)
    assert IndexShard(tokens.astype(np.float16), offsets).exact_blocks(24) is None  # too big: read at each search
