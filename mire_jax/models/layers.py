"""Pieces shared by the towers: activations by Hugging Face name, attention, L2 normalisation."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from mire_jax.models.blocked_attention import blocked_attention
from mire_jax.models.blocks import CPU_BLOCK_ELEMENTS, cpu_or_accelerator
from mire_jax.models.dropout import batch_positions, example_keys


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


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) along the last axis in float32, like torch's F.normalize; a zero vector stays zero
    and its gradient is finite (the max cuts the path through sqrt at 0)."""
    x = x.astype(jnp.float32)
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq, eps * eps))


def multi_head_attention(q, k, v, mask, dropout_keys=None, dropout_rate: float = 0.0, window: int | None = None):
    """q [B, T, N, H], k/v [B, S, N, H], mask [B, S] (True = attend) -> [B, T, N, H].

    CPU programs take the blocked attention in cache-sized blocks. GPU and TPU programs take
    `jax.nn.dot_product_attention` with `implementation=None` (the kernel the device has), or, with dropout on the
    probabilities (BERT in training), the blocked attention as one block. `dropout_keys` [B, 2]: the examples'
    dropout keys (`dropout.example_keys`). `window`: query t sees only the keys s with |t - s| <= window
    (ModernBERT's local layers; `local_window_size` of `jax.nn.dot_product_attention`).
    """
    if dropout_keys is not None and dropout_rate > 0.0:
        return cpu_or_accelerator(
            lambda *a: blocked_attention(*a, dropout_rate, CPU_BLOCK_ELEMENTS, window),
            lambda *a: blocked_attention(*a, dropout_rate, None, window), q, k, v, mask, dropout_keys)
    local = None if window is None else (window, window)
    return cpu_or_accelerator(
        lambda *a: blocked_attention(*a, block_scores=CPU_BLOCK_ELEMENTS, window=window),
        lambda q, k, v, mask: jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :].astype(bool),
                                                           local_window_size=local, implementation=None),
        q, k, v, mask)


class SelfAttention(nn.Module):
    """Projections query/key/value/out (with biases) around multi-head attention."""
    num_heads: int
    dtype: jnp.dtype = jnp.float32
    kernel_init: Callable = nn.initializers.normal(0.02)
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x, mask, deterministic: bool = True, example_ids=None):
        width = x.shape[-1]
        head_dim = width // self.num_heads
        dense = lambda name: nn.Dense(width, dtype=self.dtype, kernel_init=self.kernel_init, name=name)
        split = lambda y: y.reshape(*y.shape[:2], self.num_heads, head_dim)
        q, k, v = (split(dense(n)(x)) for n in ("query", "key", "value"))
        keys = None
        if not deterministic and self.dropout_rate > 0.0:
            keys = example_keys(self.make_rng("dropout"), batch_positions(x.shape[0], example_ids))
        out = multi_head_attention(q, k, v, mask, keys, self.dropout_rate)
        return dense("out")(out.reshape(*x.shape[:2], width))
