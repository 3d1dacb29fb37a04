"""The exact rerank: whole passages in fixed-size chunks (a longer passage in a chunk of its own), read from one array
or from several shards' arrays; checked against brute force."""
import numpy as np
import pytest

from mire_jax.index import rerank
from mire_jax.index.tokens import RowConcat
from mire_jax.scoring import MASKED_SCORE


def _brute(q, tokens, offsets, passages):
    return np.array([(tokens[offsets[p]:offsets[p + 1]].astype(np.float64) @ q.T).max(axis=0).sum()
                     if offsets[p + 1] > offsets[p] else MASKED_SCORE * len(q) for p in passages])


@pytest.mark.parametrize("chunk", [8, 24, 1 << 14])
@pytest.mark.parametrize("parts", [1, 3])
def test_chunked_rerank_equals_brute_force(monkeypatch, chunk, parts):
    monkeypatch.setattr(rerank, "CHUNK_TOKENS", chunk)
    rng = np.random.default_rng(chunk + parts)
    lengths = rng.integers(0, 20, size=60)
    lengths[7] = 50  # longer than the smallest chunks
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.standard_normal((int(offsets[-1]), 8)).astype(np.float16)
    if parts > 1:  # shards split between passages, as index shards are
        cuts = [0, int(offsets[20]), int(offsets[41]), len(tokens)]
        embeddings = RowConcat([tokens[a:b] for a, b in zip(cuts, cuts[1:])])
    else:
        embeddings = tokens
    q = rng.standard_normal((5, 8)).astype(np.float32)
    passages = np.sort(rng.choice(60, size=40, replace=False))
    passages = np.union1d(passages, [7])
    got = rerank.maxsim_passages(q, embeddings, offsets, passages)
    np.testing.assert_allclose(got, _brute(q, tokens, offsets, passages), rtol=1e-4, atol=1e-3)


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
