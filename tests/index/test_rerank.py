"""The exact rerank: whole passages of the stored tokens in fixed-size chunks (a longer passage in a chunk of its own),
read from one shard's store or from several; checked against brute force over the decoded stores."""
import numpy as np
import pytest

from mire_jax.index import rerank
from mire_jax.index.token_store import TokenStore
from mire_jax.index.tokens import LocalView, RowConcat
from mire_jax.scoring import MASKED_SCORE


def _brute(q, tokens, offsets, passages):
    return np.array([(tokens[offsets[p]:offsets[p + 1]].astype(np.float64) @ q.T).max(axis=0).sum()
                     if offsets[p + 1] > offsets[p] else MASKED_SCORE * len(q) for p in passages])


class _Shard:
    def __init__(self, store, first):
        self.store, self.offsets, self.first_passage = store, store.offsets, first
        self.num_passages = store.num_passages


@pytest.mark.parametrize("chunk", [8, 24, 1 << 14])
@pytest.mark.parametrize("codec", ["int8", "float16"])
def test_chunked_rerank_equals_brute_force(monkeypatch, chunk, codec):
    monkeypatch.setattr(rerank, "CHUNK_TOKENS", chunk)
    rng = np.random.default_rng(chunk)
    lengths = rng.integers(0, 20, size=60)
    lengths[7] = 50  # longer than the smallest chunks
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.standard_normal((int(offsets[-1]), 8)).astype(np.float32)
    store = TokenStore.encode(tokens, lengths, codec)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    passages = np.union1d(np.sort(rng.choice(60, size=40, replace=False)), [7])
    got = rerank.maxsim_passages(q, store, passages)
    np.testing.assert_allclose(got, _brute(q, np.asarray(store), offsets, passages), rtol=1e-4, atol=1e-3)


def test_rerank_over_several_shards_equals_one():
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 20, size=60)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.standard_normal((int(offsets[-1]), 8)).astype(np.float32)
    whole = TokenStore.encode(tokens, lengths)
    groups = [b.length for b in whole.layout.buckets]
    cuts = [0, 20, 41, 60]
    shards = [_Shard(TokenStore.encode(tokens[offsets[a]:offsets[b]], lengths[a:b], groups=groups), a)
              for a, b in zip(cuts, cuts[1:])]
    q = rng.standard_normal((3, 5, 8)).astype(np.float32)
    mask = np.ones((3, 5), bool)
    candidates = [np.sort(rng.choice(60, size=30, replace=False)) for _ in range(3)]
    split = rerank.rerank(q, mask, candidates, 10, LocalView.of(shards, 8))
    one = rerank.rerank(q, mask, candidates, 10, LocalView.of([_Shard(whole, 0)], 8))
    np.testing.assert_array_equal(split[0], one[0])
    np.testing.assert_allclose(split[1], one[1], rtol=1e-6)
    view = LocalView.of(shards, 8)  # the decoded tokens read in corpus order across shards
    np.testing.assert_array_equal(view.embeddings[offsets[18]:offsets[45]], np.asarray(whole)[offsets[18]:offsets[45]])


def test_chunks_hold_whole_passages_within_capacity():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(1, 40, size=rng.integers(1, 50))
        capacity = int(rng.integers(10, 100))
        runs = rerank.chunks(lengths, capacity)
        assert [i for r in runs for i in range(r.start, r.stop)] == list(range(len(lengths)))
        for r in runs:
            assert lengths[r].sum() <= capacity or r.stop - r.start == 1


def test_row_concat_slices_are_views_within_a_part_and_copies_across():
    a, b = np.arange(12.0).reshape(6, 2), np.arange(12.0, 20.0).reshape(4, 2)
    rows = RowConcat([a, b])
    assert np.shares_memory(rows[2:5], a) and np.shares_memory(rows[6:9], b)
    np.testing.assert_array_equal(rows[4:8], np.concatenate([a, b])[4:8])
    assert rows[10:10].shape == (0, 2)
