"""Sliding-window (local) attention, ModernBERT's: the blocked CPU path and the accelerator path's
`jax.nn.dot_product_attention(local_window_size=...)` against attention written out, outputs and gradients, with and
without dropout, and a window exactly |t - s| <= w."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mire_jax.models.blocked_attention import blocked_attention
from mire_jax.models.dropout import dropout_keep_mask, example_keys

B, T, N, H = 3, 13, 2, 6


def _plain(q, k, v, mask, window, keys=None, rate=0.0):
    """Hugging Face's eager attention with a bidirectional sliding window: one additive finfo.min bias for the keys
    that are padded or farther than `window`, softmax, dropout on the probabilities, weighted sum."""
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(q.shape[-1])
    t, s = np.arange(q.shape[1])[:, None], np.arange(k.shape[1])[None, :]
    allowed = mask[:, None, None, :] & jnp.asarray(np.abs(t - s) <= window)[None, None]
    probs = jax.nn.softmax(logits + jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min), axis=-1)
    if rate:
        keep, p = dropout_keep_mask(keys, probs.shape, rate)
        probs = jnp.where(keep, probs / p, 0.0)
    return jnp.einsum("bnts,bsnh->btnh", probs, v)


@pytest.fixture(scope="module")
def inputs():
    r = np.random.default_rng(0)
    q, k, v = (jnp.asarray(r.normal(size=(B, T, N, H)), jnp.float32) for _ in range(3))
    mask = np.ones((B, T), bool)
    mask[1, 8:] = False   # padding
    mask[2, 3:] = False   # short: rows past 3 + window have no key in their window
    return q, k, v, jnp.asarray(mask)


@pytest.mark.parametrize("window,rate,block_scores", [(3, 0.0, None), (3, 0.15, T * T), (0, 0.0, T * T),
                                                      (0, 0.15, None)])
def test_blocked_local_attention_equals_plain(inputs, window, rate, block_scores):
    q, k, v, mask = inputs
    keys = example_keys(jax.random.PRNGKey(3), jnp.arange(B, dtype=jnp.uint32))
    weights = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)
    ours = lambda q, k, v: blocked_attention(q, k, v, mask, keys, rate, block_scores, window=window)
    plain = lambda q, k, v: _plain(q, k, v, mask, window, keys, rate)
    np.testing.assert_allclose(ours(q, k, v), plain(q, k, v), atol=2e-6)
    grad = lambda f: jax.grad(lambda *a: jnp.sum(f(*a) * weights), argnums=(0, 1, 2))(q, k, v)
    for name, got, want in zip("qkv", grad(ours), grad(plain)):
        np.testing.assert_allclose(got, want, atol=5e-6, err_msg=f"d{name}")


def test_accelerator_path_window_is_the_same(inputs):
    """`local_window_size=(w, w)` of jax.nn.dot_product_attention (the GPU/TPU path) keeps the same keys."""
    q, k, v, mask = inputs
    got = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :], local_window_size=(2, 2),
                                       implementation="xla")
    real = np.asarray(mask)  # rows with no key in their window differ only in what "uniform" spreads over
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(_plain(q, k, v, mask, 2))[real], atol=2e-6)


def test_window_edges():
    """A key exactly `window` away is seen, one further is not (equal logits; value s is the one-hot of s)."""
    zeros = jnp.zeros((1, 9, 1, 9), jnp.float32)
    values = jnp.asarray(np.eye(9, dtype=np.float32))[None, :, None, :]
    out = blocked_attention(zeros, zeros, values, jnp.ones((1, 9), bool), window=2)
    seen = np.asarray(out)[0, 4, 0] > 0
    assert seen.tolist() == [False, False, True, True, True, True, True, False, False]
