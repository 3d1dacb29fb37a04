"""Pieces shared by the towers: activations by Hugging Face name, attention, L2 normalisation, PyTorch init."""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn


def quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable] = {
    "gelu": lambda x: nn.gelu(x, approximate=False),  # BERT and the pooling head: exact erf GELU
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "quick_gelu": quick_gelu,                         # CLIP
    "relu": nn.relu,
}


def activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def torch_linear_init(fan_in: int):
    """PyTorch's nn.Linear default: weight and bias uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) along the last axis in float32, like torch's F.normalize; a zero vector stays zero
    and its gradient is finite (the max cuts the path through sqrt at 0)."""
    x = x.astype(jnp.float32)
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq, eps * eps))


def dropout_keep_mask(rng: jax.Array, shape: tuple[int, ...], rate: float) -> tuple[jax.Array, float]:
    """-> (keep mask, exact keep probability) from 16 random bits per element.

    XLA's CPU random generator costs per 32-bit word it emits; drawing half as many words and splitting each
    into two 16-bit draws is several times cheaper than `jax.random.bernoulli` (one float per element), with
    the rate resolved to 1/65536 (the returned probability is the exact one, for unbiased rescaling).
    """
    size = int(np.prod(shape))
    words = jax.random.bits(rng, ((size + 1) // 2,), jnp.uint32)
    halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:size].reshape(shape)
    threshold = int(round(rate * 65536))
    return halves >= threshold, 1.0 - threshold / 65536


class Dropout(nn.Module):
    """Inverted dropout with `dropout_keep_mask` (rng stream "dropout")."""
    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        if deterministic or self.rate == 0.0:
            return x
        keep, p = dropout_keep_mask(self.make_rng("dropout"), x.shape, self.rate)
        return jnp.where(keep, x / jnp.asarray(p, x.dtype), jnp.zeros_like(x))


def multi_head_attention(q, k, v, mask, dropout_rng=None, dropout_rate: float = 0.0):
    """q [B, T, N, H], k/v [B, S, N, H], mask [B, S] (True = attend) -> [B, T, N, H].

    `implementation=None` lets JAX pick the kernel the device has (cuDNN flash attention on GPU, XLA elsewhere).
    Dropout on the attention probabilities (BERT in training) needs the probabilities, so it takes a plain path.
    """
    mask = mask[:, None, None, :].astype(bool)
    if dropout_rng is None or dropout_rate == 0.0:
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=None)
    logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
    probs = jax.nn.softmax(jnp.where(mask, logits, jnp.finfo(jnp.float32).min), axis=-1)
    keep, p = dropout_keep_mask(dropout_rng, probs.shape, dropout_rate)
    probs = jnp.where(keep, probs / p, 0.0).astype(v.dtype)
    return jnp.einsum("bnts,bsnh->btnh", probs, v)


class SelfAttention(nn.Module):
    """Projections query/key/value/out (with biases) around multi-head attention."""
    num_heads: int
    dtype: jnp.dtype = jnp.float32
    kernel_init: Callable = nn.initializers.normal(0.02)
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, mask, deterministic: bool = True):
        width = x.shape[-1]
        head_dim = width // self.num_heads
        dense = lambda name: nn.Dense(width, dtype=self.dtype, kernel_init=self.kernel_init, name=name)
        split = lambda y: y.reshape(*y.shape[:2], self.num_heads, head_dim)
        q, k, v = (split(dense(n)(x)) for n in ("query", "key", "value"))
        rng = None if deterministic or self.dropout_rate == 0.0 else self.make_rng("dropout")
        out = multi_head_attention(q, k, v, mask, rng, self.dropout_rate)
        return dense("out")(out.reshape(*x.shape[:2], width))
