"""ModernBERT encoder (Hugging Face `ModernBertModel` semantics): pre-norm layers, rotary position embeddings,
GeGLU MLP, global attention every `global_attn_every_n_layers` layers and sliding-window (local) attention in the
others, LayerNorms without bias and linear layers without bias unless the config has them, a final LayerNorm.

Parameters (`params["bert"]` in MIRe, the text tower's usual place):

    tok_embeddings/embedding, embeddings_norm/scale
    layer_{i}/attn_norm/scale (not in layer 0, whose attention input is the embeddings as they are)
    layer_{i}/attn/Wqkv/kernel, layer_{i}/attn/Wo/kernel
    layer_{i}/mlp_norm/scale, layer_{i}/mlp/Wi/kernel, layer_{i}/mlp/Wo/kernel
    final_norm/scale
    (+ bias where the config's norm_bias / attention_bias / mlp_bias say so)

Dropout (training only, rng stream "dropout") sits where Hugging Face has it: after the embedding LayerNorm
(`embedding_dropout`), on the attention probabilities and after `Wo` (`attention_dropout`), between the GeGLU and the
MLP's `Wo` (`mlp_dropout`); every mask is keyed by the example's position in the global batch (`dropout.py`), as the
BERT tower's, so that any device layout trains alike.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from mire_jax.config import ModernBertConfig
from mire_jax.models.dropout import Dropout, batch_positions, example_keys
from mire_jax.models.layers import activation, multi_head_attention


def rotary_tables(length: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) [length, head_dim] float32 of the rotary embedding at positions 0..length-1: frequencies
    theta^(-2i/head_dim), each used for the two halves of a head (Hugging Face's `rotate_half` layout)."""
    inv_freq = 1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    freqs = np.arange(length, dtype=np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]
    angles = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rotary(x, cos, sin):
    """x [B, L, N, H] rotated by position in float32 (as Hugging Face does) and returned in x's dtype; cos/sin
    [L, H] already rounded to the compute dtype."""
    half = x.shape[-1] // 2
    xf = x.astype(jnp.float32)
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return (xf * cos[None, :, None, :] + rotated * sin[None, :, None, :]).astype(x.dtype)


class ModernBertAttention(nn.Module):
    cfg: ModernBertConfig
    is_global: bool
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic: bool = True, example_ids=None):
        c = self.cfg
        b, length, width = x.shape
        heads, head_dim = c.num_attention_heads, width // c.num_attention_heads
        init = nn.initializers.truncated_normal(0.02)
        out_init = nn.initializers.truncated_normal(0.02 / np.sqrt(2.0 * c.num_hidden_layers))
        qkv = nn.Dense(3 * width, use_bias=c.attention_bias, dtype=self.dtype, kernel_init=init, name="Wqkv")(x)
        q, k, v = (qkv[..., i * width:(i + 1) * width].reshape(b, length, heads, head_dim) for i in range(3))
        theta = c.global_rope_theta if self.is_global else c.local_rope_theta
        cos, sin = rotary_tables(length, head_dim, theta)
        # Hugging Face builds the tables in float32 and casts them to the hidden states' dtype.
        cos, sin = (jnp.asarray(t).astype(self.dtype).astype(jnp.float32) for t in (cos, sin))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        keys = None
        if not deterministic and c.attention_dropout > 0.0:
            keys = example_keys(self.make_rng("dropout"), batch_positions(b, example_ids))
        out = multi_head_attention(q, k, v, mask, keys, c.attention_dropout,
                                   window=None if self.is_global else c.window)
        out = nn.Dense(width, use_bias=c.attention_bias, dtype=self.dtype, kernel_init=out_init,
                       name="Wo")(out.reshape(b, length, width))
        return Dropout(c.attention_dropout)(out, deterministic, example_ids)


class ModernBertMLP(nn.Module):
    cfg: ModernBertConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool = True, example_ids=None):
        c = self.cfg
        init = nn.initializers.truncated_normal(0.02)
        out_init = nn.initializers.truncated_normal(0.02 / np.sqrt(2.0 * c.num_hidden_layers))
        h = nn.Dense(2 * c.intermediate_size, use_bias=c.mlp_bias, dtype=self.dtype, kernel_init=init, name="Wi")(x)
        gated = activation(c.hidden_activation)(h[..., :c.intermediate_size]) * h[..., c.intermediate_size:]
        gated = Dropout(c.mlp_dropout)(gated, deterministic, example_ids)
        return nn.Dense(c.hidden_size, use_bias=c.mlp_bias, dtype=self.dtype, kernel_init=out_init, name="Wo")(gated)


class ModernBertLayer(nn.Module):
    cfg: ModernBertConfig
    index: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic: bool = True, example_ids=None):
        c = self.cfg
        norm = lambda name: nn.LayerNorm(epsilon=c.norm_eps, use_bias=c.norm_bias, use_fast_variance=False, dtype=self.dtype, name=name)
        h = x if self.index == 0 else norm("attn_norm")(x)
        x = x + ModernBertAttention(c, c.is_global(self.index), dtype=self.dtype, name="attn")(
            h, mask, deterministic, example_ids)
        return x + ModernBertMLP(c, dtype=self.dtype, name="mlp")(norm("mlp_norm")(x), deterministic, example_ids)


class ModernBert(nn.Module):
    """input_ids, attention_mask [B, L] -> (last hidden state [B, L, H],), indexed like Hugging Face's output.

    `example_ids` [B] are the examples' positions in the global batch, which key their dropout masks (default
    0..B-1). Positions are 0..L-1 in every row; padding is masked as keys only, so a row's real tokens do not
    depend on how much padding follows them.
    """
    cfg: ModernBertConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, attention_mask, deterministic: bool = True, example_ids=None):
        c = self.cfg
        norm = lambda name: nn.LayerNorm(epsilon=c.norm_eps, use_bias=c.norm_bias, use_fast_variance=False, dtype=self.dtype, name=name)
        x = nn.Embed(c.vocab_size, c.hidden_size, dtype=self.dtype, embedding_init=nn.initializers.truncated_normal(
            0.02), name="tok_embeddings")(input_ids)
        x = Dropout(c.embedding_dropout)(norm("embeddings_norm")(x), deterministic, example_ids)
        for i in range(c.num_hidden_layers):
            x = ModernBertLayer(c, i, dtype=self.dtype, name=f"layer_{i}")(x, attention_mask, deterministic,
                                                                           example_ids)
        return (norm("final_norm")(x),)
