"""Pieces shared by the towers: activations by Hugging Face name, attention, L2 normalisation, PyTorch init."""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from mire_jax.models.blocked_attention import blocked_attention, default_block_scores


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


def multi_head_attention(q, k, v, mask, dropout_rng=None, dropout_rate: float = 0.0):
    """q [B, T, N, H], k/v [B, S, N, H], mask [B, S] (True = attend) -> [B, T, N, H].

    On GPU and TPU without dropout, `jax.nn.dot_product_attention` with `implementation=None` picks the kernel the
    device has (cuDNN flash attention on GPU, XLA elsewhere). Dropout on the probabilities (BERT in training) and
    every CPU call take the blocked attention, which is cache-sized on CPU.
    """
    dropping = dropout_rng is not None and dropout_rate > 0.0
    if dropping or jax.default_backend() == "cpu":
        return blocked_attention(q, k, v, mask, dropout_rng, dropout_rate, default_block_scores())
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :].astype(bool), implementation=None)


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
