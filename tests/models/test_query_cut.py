"""A query encoded cut to its own tokens (every later one masked [MASK] padding, as the published evaluation frames
queries) gives the full query's embeddings: the pooling still counts the full length's rows (`pooling_rows`)."""
import dataclasses

import jax
import numpy as np
import pytest

import mire_jax


@pytest.mark.parametrize("residual", [False, True])
def test_cut_query_equals_full_query(residual):
    config = mire_jax.MIReConfig.tiny(vocab_size=64)
    config = dataclasses.replace(config, head=dataclasses.replace(config.head, residual=residual))
    params = mire_jax.init_params(config, jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    full_len, size = 24, config.vision.image_size
    real = np.array([3, 9, 16, 24])  # tokens of each query; the rest is masked padding
    ids = rng.integers(5, 64, size=(len(real), full_len)).astype(np.int32)
    mask = (np.arange(full_len)[None, :] < real[:, None]).astype(np.int32)
    pixels = rng.standard_normal((len(real), size, size, 3)).astype(np.float32)
    full = np.asarray(mire_jax.encode_query(config, params, ids, mask, pixels))
    visual = full.shape[1] - full_len
    for cut in (16, 24):
        rows = real <= cut
        got = np.asarray(mire_jax.encode_query(config, params, ids[rows, :cut], mask[rows, :cut], pixels[rows],
                                               pooling_rows=full_len))
        assert got.shape == (rows.sum(), visual + cut, full.shape[2])
        np.testing.assert_allclose(got, full[rows, :visual + cut], atol=2e-5)
        text = np.asarray(mire_jax.encode_query(config, params, ids[rows, :cut], mask[rows, :cut]))
        np.testing.assert_allclose(text, full[rows, visual:visual + cut], atol=2e-5)
    # Without pooling_rows the pooling counts only the cut's rows: a different query (the QUIRK that needs it).
    short = np.asarray(mire_jax.encode_query(config, params, ids[:1, :16], mask[:1, :16], pixels[:1]))
    assert np.abs(short[0, :visual] - full[0, :visual]).max() > 1e-3
