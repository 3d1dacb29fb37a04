"""The blocked attention against plain attention written out, and the hashed per-example dropout: statistics,
and masks that depend on an example's position in the global batch only."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mire_jax.models.blocked_attention import blocked_attention
from mire_jax.models.dropout import Dropout, dropout_keep_mask, dropout_keep_probability, example_keys

B, T, N, H = 4, 24, 3, 8


def _keys(rng, count=B, first=0):
    return example_keys(rng, jnp.arange(first, first + count, dtype=jnp.uint32))


def _plain(q, k, v, mask, keys, rate):
    """Attention as Hugging Face BERT computes it: additive finfo.min mask, softmax, dropout, weighted sum."""
    logits = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(q.shape[-1])
    logits = logits + jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
    probs = jax.nn.softmax(logits, axis=-1)
    if rate:
        keep, p = dropout_keep_mask(keys, probs.shape, rate)
        probs = jnp.where(keep, probs / p, 0.0)
    return jnp.einsum("bnts,bsnh->btnh", probs, v)


@pytest.fixture(scope="module")
def inputs():
    r = np.random.default_rng(0)
    q, k, v = (jnp.asarray(r.normal(size=(B, T, N, H)), jnp.float32) for _ in range(3))
    mask = np.ones((B, T), bool)
    mask[1, 15:] = False   # padding
    mask[3] = False        # no key at all: the row spreads uniformly, as with Hugging Face's additive mask
    return q, k, v, jnp.asarray(mask)


@pytest.mark.parametrize("rate", [0.0, 0.1])
@pytest.mark.parametrize("block_scores", [None, T * T, 3 * T * T, 5 * T * T])
def test_outputs_and_gradients_equal_plain_attention(inputs, rate, block_scores):
    q, k, v, mask = inputs
    rng = _keys(jax.random.PRNGKey(7))
    weights = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)
    ours = lambda q, k, v: blocked_attention(q, k, v, mask, rng, rate, block_scores)
    plain = lambda q, k, v: _plain(q, k, v, mask, rng, rate)
    np.testing.assert_allclose(ours(q, k, v), plain(q, k, v), atol=2e-6)
    grad = lambda f: jax.grad(lambda *a: jnp.sum(f(*a) * weights), argnums=(0, 1, 2))(q, k, v)
    for name, got, want in zip("qkv", grad(ours), grad(plain)):
        np.testing.assert_allclose(got, want, atol=5e-6, err_msg=f"d{name}")


def test_dropout_changes_with_the_key_and_is_off_without_one(inputs):
    q, k, v, mask = inputs
    a = blocked_attention(q, k, v, mask, _keys(jax.random.PRNGKey(1)), 0.1)
    b = blocked_attention(q, k, v, mask, _keys(jax.random.PRNGKey(2)), 0.1)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-2
    np.testing.assert_allclose(blocked_attention(q, k, v, mask, None, 0.1), _plain(q, k, v, mask, None, 0.0),
                               atol=2e-6)


def test_bfloat16_inputs_stay_close_to_float32(inputs):
    q, k, v, mask = inputs
    full = blocked_attention(q, k, v, mask, block_scores=T * T)
    half = blocked_attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), mask, block_scores=T * T)
    assert half.dtype == jnp.bfloat16
    assert float(jnp.max(jnp.abs(half.astype(jnp.float32) - full))) < 0.05
    grads = jax.grad(lambda q: jnp.sum(blocked_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask)
                                       .astype(jnp.float32)))(q.astype(jnp.bfloat16))
    assert grads.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(grads.astype(jnp.float32))))


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_hashed_dropout_statistics(rate):
    """Keep rate within 5 sigma of 1 - rate over a million draws; neighbours inside an example, neighbouring
    examples and two keys agree as often as independent draws would (p^2 + (1-p)^2)."""
    shape = (1024, 1024)
    keep, p = dropout_keep_mask(_keys(jax.random.PRNGKey(0), 1024), shape, rate)
    keep = np.asarray(keep)
    n = keep.size
    assert p == dropout_keep_probability(rate) and abs(p - (1 - rate)) < 1e-9
    assert abs(keep.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    agree = p * p + (1 - p) * (1 - p)
    other = np.asarray(dropout_keep_mask(_keys(jax.random.PRNGKey(1), 1024), shape, rate)[0])
    for pair_agreement in [(keep[:, 1:] == keep[:, :-1]).mean(), (keep[1:] == keep[:-1]).mean(),
                           (keep == other).mean()]:
        assert abs(pair_agreement - agree) < 5 * math.sqrt(agree * (1 - agree) / n)


def test_dropout_rate_out_of_range_is_refused():
    with pytest.raises(ValueError, match="dropout rate"):
        dropout_keep_mask(_keys(jax.random.PRNGKey(0), 4), (4, 2), 1.0)


def test_an_examples_mask_depends_on_its_global_position_only(inputs):
    """Rows 1..3 of a batch of 4 and the same examples alone in a batch of 3 that names their positions get the
    same masks (as on a device holding a shard that starts at example 1); other positions get other masks."""
    q, k, v, mask = inputs
    rng = jax.random.PRNGKey(3)
    whole = blocked_attention(q, k, v, mask, _keys(rng), 0.3, T * T)
    shard = blocked_attention(q[1:], k[1:], v[1:], mask[1:], _keys(rng, 3, first=1), 0.3, 2 * T * T)
    np.testing.assert_allclose(shard, whole[1:], atol=2e-6)
    moved = blocked_attention(q[1:], k[1:], v[1:], mask[1:], _keys(rng, 3, first=0), 0.3, 2 * T * T)
    assert float(jnp.max(jnp.abs(moved - whole[1:]))) > 1e-2

    x = jnp.asarray(np.random.default_rng(2).normal(size=(6, 5, 7)), jnp.float32)
    drop = lambda x, ids: Dropout(0.5).apply({}, x, False, ids, rngs={"dropout": rng})
    np.testing.assert_array_equal(drop(x[2:5], jnp.arange(2, 5, dtype=jnp.uint32)), drop(x, None)[2:5])
    assert not np.array_equal(drop(x[2:5], None), drop(x, None)[2:5])
