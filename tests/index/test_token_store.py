"""Stored tokens: codecs within their error bounds (numpy and JAX decode alike), the grouped layout (padding repeats a
passage's first token, fewest padded rows), files that round-trip, and the decoded view read in corpus order."""
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from mire_jax.index import config as config_lib
from mire_jax.index import token_store as ts


@pytest.mark.parametrize("name,dim", [("int8", 16), ("int4", 9), ("float16", 8)])
def test_codecs_decode_within_their_bounds(name, dim):
    codec = ts.codec_of(name)
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((50, dim)).astype(np.float32)
    x[3] = 0.0  # a zero token stays zero
    codes, scales = codec.encode(x)
    assert codes.shape == (50, codec.width(dim)) and codes.dtype == codec.dtype
    decoded = codec.decode(codes, scales, dim)
    if codec.quantised:
        step = np.abs(x).max(axis=1) / codec.levels
        assert (np.abs(decoded - x) <= step[:, None] * 0.5 * (1 + 1e-3) + 1e-7).all()
        assert codec.bytes_per_token(dim) == codes.shape[1] + 2
    else:
        np.testing.assert_array_equal(decoded, x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(decoded[3], 0.0)
    np.testing.assert_allclose(np.asarray(codec.decode_jax(jnp.asarray(codes), None if scales is None
                                                           else jnp.asarray(scales), dim)), decoded, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown token codec 'int7'"):
        ts.codec_of("int7")


def test_config_names_every_index_codec():
    assert set(config_lib.TOKEN_CODECS) == {"auto", *ts.CODECS}
    with pytest.raises(ValueError, match="token_codec"):
        config_lib.IndexConfig(token_codec="int7").validate()


def _padded_rows(lengths, groups):
    groups = np.asarray(sorted(groups))
    return int(groups[np.searchsorted(groups, lengths[lengths > 0])].sum())


def test_groups_pad_the_fewest_rows():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = rng.integers(0, 12, size=int(rng.integers(1, 40)))
        if not (lengths > 0).any():
            continue
        values = np.unique(lengths[lengths > 0])
        for count in (1, 2, 3):
            groups = ts.group_lengths(lengths, count)
            assert groups[-1] == lengths.max() and len(groups) <= count
            best = min(_padded_rows(lengths, list(c) + [values[-1]])
                       for r in range(min(count, len(values)))
                       for c in itertools.combinations(values[:-1], r))
            assert _padded_rows(lengths, groups) == best
    many = np.clip(np.round(rng.lognormal(np.log(64), 0.6, 20000)), 4, 512).astype(int)
    groups = ts.group_lengths(many)
    assert len(groups) <= ts.MAX_GROUPS and _padded_rows(many, groups) <= 1.1 * many.sum()


def test_layout_keeps_passages_whole_and_pads_with_their_first_token(tmp_path):
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 25, size=120)
    lengths[:3] = [0, 40, 1]
    x = rng.standard_normal((int(lengths.sum()), 6)).astype(np.float32)
    store = ts.TokenStore.encode(x, lengths, "int8")
    layout = store.layout
    assert [b.length for b in layout.buckets] == sorted(b.length for b in layout.buckets)
    empty = int((lengths == 0).sum())  # no rows for passages without tokens, last in store order
    assert (layout.rows[lengths == 0] == -1).all() and sorted(layout.order[-empty:]) == list(np.flatnonzero(lengths == 0))
    for bucket in layout.buckets:
        codes, scales = store.bucket_arrays(bucket)
        for slot, p in enumerate(layout.order[bucket.start:bucket.start + bucket.count]):
            n = lengths[p]
            assert layout.rows[p] == bucket.row + slot * bucket.length and n <= bucket.length
            assert (codes[slot, n:] == codes[slot, 0]).all() and (scales[slot, n:] == scales[slot, 0]).all()
    decoded = np.asarray(store)  # read in corpus order
    offsets = store.offsets
    np.testing.assert_allclose(decoded, x, atol=np.abs(x).max() / 254 + 1e-6)
    np.testing.assert_array_equal(store[offsets[5]:offsets[9]], decoded[offsets[5]:offsets[9]])
    np.testing.assert_array_equal(store[[7, 3, -1]], decoded[[7, 3, -1]])
    np.testing.assert_array_equal(store.passage(1), decoded[offsets[1]:offsets[2]])
    # Written straight to files (as a build writes a shard) and opened, memory-mapped: the same store.
    description = ts.TokenStore.write(tmp_path, x, lengths, "int8")
    assert description == store.describe() and description["files"] == ["tokens.npy", "scales.npy"]
    opened = ts.TokenStore.open(tmp_path, lengths, description)
    np.testing.assert_array_equal(opened.codes, store.codes)
    np.testing.assert_array_equal(np.asarray(opened), decoded)
    with pytest.raises(ValueError, match="groups do not match"):
        ts.TokenStore.open(tmp_path, lengths[:-2], description)
