"""Dropout from a counter-based hash: element i of a tensor keeps when hash(i, key) >= rate * 2**32.

Two key words come from the JAX key; the bits of each element are a keyed integer hash of its index, which XLA
fuses into the consumer, so no random tensor is materialised and a backward pass can recompute the mask instead of
storing it. Drawing the bits with `jax.random.bits` costs more than the attention itself on CPU (about 12 ns a
word). The rate is resolved to 2**-32; rescaling uses the exact keep probability, so dropout stays unbiased.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn


def _mix32(x: jax.Array) -> jax.Array:
    """A bijective 32-bit integer finaliser with low bias (xor-shift / multiply, the "lowbias32" constants)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _threshold(rate: float) -> int:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    return min(int(round(rate * 2**32)), 2**32 - 1)


def dropout_keep_probability(rate: float) -> float:
    """The exact probability that an element is kept at this rate."""
    return 1.0 - _threshold(rate) / 2**32


def key_words(rng: jax.Array) -> jax.Array:
    """A JAX key -> the two uint32 words that key the hash."""
    return jax.random.bits(rng, (2,), jnp.uint32)


def keep_mask_at(words: jax.Array, index: jax.Array, rate: float) -> jax.Array:
    """The keep mask of the elements at these (uint32) row-major indices of a tensor keyed by `words`."""
    bits = _mix32(_mix32(index * jnp.uint32(0x9E3779B9) + words[0]) ^ words[1])
    return bits >= jnp.uint32(_threshold(rate))


def _index(shape: tuple[int, ...]) -> jax.Array:
    size = math.prod(shape)
    if size >= 2**32:
        raise ValueError(f"dropout over {size} elements: the counter is 32-bit; split the tensor")
    return jax.lax.iota(jnp.uint32, size).reshape(shape)


def dropout_keep_mask(rng: jax.Array, shape: tuple[int, ...], rate: float) -> tuple[jax.Array, float]:
    """-> (keep mask of `shape`, exact keep probability)."""
    return keep_mask_at(key_words(rng), _index(shape), rate), dropout_keep_probability(rate)


class Dropout(nn.Module):
    """Inverted dropout with `dropout_keep_mask` (rng stream "dropout")."""
    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        if deterministic or self.rate == 0.0:
            return x
        keep, p = dropout_keep_mask(self.make_rng("dropout"), x.shape, self.rate)
        return jnp.where(keep, x / jnp.asarray(p, x.dtype), jnp.zeros_like(x))
