"""The exact search over stored tokens: blocks of the store's groups over the devices of a mesh, a running top k per
device and one merge. Checked against brute force over the decoded stores, across codecs, shards, block sizes, pieces
kept on the devices or copied at each search, and against itself on 8 virtual devices (a subprocess)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mire_jax.index import exact
from mire_jax.index.token_store import TokenStore
from mire_jax.scoring import MASKED_SCORE


def _corpus(seed, num_passages=300, dim=16, max_len=30, empty=6):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, size=num_passages)
    lengths[rng.choice(num_passages, size=empty, replace=False)] = 0
    lengths[3] = 3 * max_len  # one long passage, in a group of its own
    # Mostly negative similarities: a padding row that scored 0 (a zero row) would win the maxima and show.
    tokens = (rng.standard_normal((int(lengths.sum()), dim)) - 1.5).astype(np.float32)
    queries = rng.standard_normal((7, 6, dim)).astype(np.float32)
    mask = rng.random((7, 6)) > 0.3
    mask[:, 0] = True
    return tokens, lengths, queries, mask


def _brute(decoded, lengths, queries, mask):
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    out = np.full((len(queries), len(lengths)), MASKED_SCORE * queries.shape[1])
    for p in np.flatnonzero(lengths):
        sim = np.einsum("bqd,td->bqt", (queries * mask[..., None]).astype(np.float64),
                        decoded[offsets[p]:offsets[p + 1]].astype(np.float64))
        out[:, p] = sim.max(-1).sum(-1)
    return out


def _top(brute, k):
    order = np.argsort(-brute, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(brute, order, axis=1)


@pytest.mark.parametrize("codec", ["int8", "int4", "float16"])
def test_exact_search_equals_brute_force_over_the_stored_tokens(codec):
    tokens, lengths, queries, mask = _corpus(1)
    store = TokenStore.encode(tokens, lengths, codec)
    brute = _brute(np.asarray(store), lengths, queries, mask)
    order, scores = _top(brute, 40)
    for block_tokens in (None, 40):  # one block per group, or many (a scan over blocks with a running top k)
        searcher = exact.ExactSearcher([store], [0], block_tokens=block_tokens)
        positions, found = searcher.search(queries, mask, 40)
        np.testing.assert_array_equal(positions, order)
        np.testing.assert_allclose(found, scores, rtol=1e-5, atol=1e-4)


def test_shards_pieces_and_streaming_give_the_same_top_k(monkeypatch):
    tokens, lengths, queries, mask = _corpus(2, num_passages=400)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    whole = TokenStore.encode(tokens, lengths)
    reference = exact.ExactSearcher([whole], [0]).search(queries, mask, 50)
    # Three shards sharing the corpus's groups, searched as one; global positions come back.
    cuts = [0, 150, 260, 400]
    groups = [b.length for b in whole.layout.buckets]
    stores = [TokenStore.encode(tokens[offsets[a]:offsets[b]], lengths[a:b], groups=groups)
              for a, b in zip(cuts, cuts[1:])]
    monkeypatch.setattr(exact, "PIECE_BYTES", 2000)  # several pieces per group
    for resident in (None, 0):  # pieces kept on the device, or copied to it at each search
        searcher = exact.ExactSearcher(stores, cuts[:-1], resident_bytes=resident, block_tokens=64)
        assert searcher.describe()["groups"] == len(groups) and searcher.describe()["pieces"] > len(groups)
        assert searcher.describe()["resident_pieces"] == (0 if resident == 0 else searcher.describe()["pieces"])
        positions, scores = searcher.search(queries, mask, 50)
        np.testing.assert_array_equal(positions, reference[0])
        np.testing.assert_allclose(scores, reference[1], rtol=1e-6)


def test_k_beyond_the_corpus_and_empty_passages():
    tokens, lengths, queries, mask = _corpus(3, num_passages=20, empty=3)
    positions, scores = exact.exact_search(tokens, np.concatenate([[0], np.cumsum(lengths)]), queries, mask, 30,
                                           progress=False)
    assert (positions[:, 20:] == -1).all() and np.isneginf(scores[:, 20:]).all()
    assert (scores[:, 17:20] == MASKED_SCORE * queries.shape[1]).all()  # passages without tokens, last
    assert sorted(positions[0, 17:20]) == sorted(np.flatnonzero(lengths == 0))
    np.testing.assert_allclose(scores[:, :17], _top(_brute(tokens, lengths, queries, mask), 17)[1], rtol=1e-5,
                               atol=1e-5)


def test_compiled_ahead_a_search_lowers_nothing():
    from mire_jax.serve.compile_watch import CompileWatch

    tokens, lengths, queries, mask = _corpus(4, dim=24)  # a size no other test compiled
    searcher = exact.ExactSearcher([TokenStore.encode(tokens, lengths)], [0])
    searcher.compile(len(queries), queries.shape[1], 10)
    watch = CompileWatch()
    searcher.search(queries, mask, 10)
    assert watch.total == 0


def test_compiled_shapes_are_few():
    assert [exact.query_batch_size(n, 64) for n in (1, 2, 4, 5, 16, 17, 64, 300)] == [1, 4, 4, 16, 16, 64, 64, 64]
    assert [exact.result_width(k) for k in (1, 10, 16, 17, 100, 128)] == [16, 16, 16, 32, 128, 128]


EIGHT_DEVICES = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_exact_kernel import _corpus
from mire_jax.index import exact
from mire_jax.index.token_store import TokenStore
import jax
tokens, lengths, queries, mask = _corpus(5, num_passages=500)
searcher = exact.ExactSearcher([TokenStore.encode(tokens, lengths)], [0], block_tokens=48)
positions, scores = searcher.search(queries, mask, 50)
print("RESULT " + json.dumps({{"devices": jax.device_count(), "positions": positions.tolist(),
                               "scores": scores.tolist(), "describe": searcher.describe()}}))
"""


def test_eight_virtual_devices_give_the_same_top_k_as_one():
    tokens, lengths, queries, mask = _corpus(5, num_passages=500)
    one = exact.ExactSearcher([TokenStore.encode(tokens, lengths)], [0], block_tokens=48)
    positions, scores = one.search(queries, mask, 50)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    code = EIGHT_DEVICES.format(tests=os.path.dirname(__file__))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT "):])
    assert result["devices"] == 8 and result["describe"]["devices"] == 8
    np.testing.assert_array_equal(result["positions"], positions)
    np.testing.assert_allclose(result["scores"], scores, rtol=1e-6)
