"""Dropout from a counter-based hash, keyed per example: element i of example e keeps when
hash(i, key_e) >= rate * 2**32.

Each example's key is a hash of the JAX key and the example's position in the GLOBAL batch, so the mask of an
example does not depend on how many devices or hosts hold the batch, on where its shard starts, or on gradient
accumulation: training is the same computation on 1 device and on a pod. The bits of each element are a keyed
integer hash of its index inside its example, which XLA fuses into the consumer, so no random tensor is
materialised and a backward pass can recompute the mask instead of storing it (drawing bits with
`jax.random.bits` costs more than the attention itself on CPU, about 12 ns a word). The rate is resolved to
2**-32; rescaling uses the exact keep probability, so dropout stays unbiased.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

GOLDEN = 0x9E3779B9


def _mix32(x: jax.Array) -> jax.Array:
    """A bijective 32-bit integer finaliser with low bias (xor-shift / multiply, the "lowbias32" constants)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _hash(counter: jax.Array, key0: jax.Array, key1: jax.Array) -> jax.Array:
    return _mix32(_mix32(counter * jnp.uint32(GOLDEN) + key0) ^ key1)


def _threshold(rate: float) -> int:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    return min(int(round(rate * 2**32)), 2**32 - 1)


def dropout_keep_probability(rate: float) -> float:
    """The exact probability that an element is kept at this rate."""
    return 1.0 - _threshold(rate) / 2**32


def example_keys(rng: jax.Array, example_ids: jax.Array) -> jax.Array:
    """A JAX key and the examples' positions in the global batch [B] -> their hash keys [B, 2] uint32."""
    words = jax.random.bits(rng, (2,), jnp.uint32)
    e = example_ids.astype(jnp.uint32)
    return jnp.stack([_hash(2 * e, words[0], words[1]), _hash(2 * e + 1, words[0], words[1])], axis=-1)


def keep_mask_at(keys: jax.Array, index: jax.Array, rate: float) -> jax.Array:
    """The keep mask of elements at these uint32 indices inside their example; `keys` [..., 2] are the keys of
    their examples, broadcast against `index`."""
    return _hash(index, keys[..., 0], keys[..., 1]) >= jnp.uint32(_threshold(rate))


def _example_index(shape: tuple[int, ...]) -> jax.Array:
    """Row-major index of every element inside its example (axis 0 is the example)."""
    size = math.prod(shape[1:])
    if size >= 2**32:
        raise ValueError(f"dropout over {size} elements per example: the counter is 32-bit; split the tensor")
    return jax.lax.iota(jnp.uint32, size).reshape(shape[1:])


def dropout_keep_mask(keys: jax.Array, shape: tuple[int, ...], rate: float) -> tuple[jax.Array, float]:
    """keys [B, 2] (`example_keys`), shape [B, ...] -> (keep mask of `shape`, exact keep probability)."""
    keys = keys.reshape(keys.shape[0], *([1] * (len(shape) - 1)), 2)
    return keep_mask_at(keys, _example_index(shape)[None], rate), dropout_keep_probability(rate)


def batch_positions(batch_size: int, example_ids: jax.Array | None) -> jax.Array:
    """The examples' positions in the global batch: `example_ids`, or 0..B-1 when the batch is the whole one."""
    return jnp.arange(batch_size, dtype=jnp.uint32) if example_ids is None else example_ids


class Dropout(nn.Module):
    """Inverted dropout over [B, ...] with per-example hash keys (rng stream "dropout"); `example_ids` [B] are the
    examples' positions in the global batch (default 0..B-1)."""
    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool = True, example_ids=None):
        if deterministic or self.rate == 0.0:
            return x
        keys = example_keys(self.make_rng("dropout"), batch_positions(x.shape[0], example_ids))
        keep, p = dropout_keep_mask(keys, x.shape, self.rate)
        return jnp.where(keep, x / jnp.asarray(p, x.dtype), jnp.zeros_like(x))
