"""Query-guided attentive pooling: the paper's fusion-free head (arXiv 2411.08334, section 3).

Global tokens E_g come from the CLS feature; pooled tokens E_m from text tokens attending to the patches,
with nothing flowing back into the text (unless `residual`, the paper's fusion ablation). A new head is
initialised as the published module initialises it before pre-training: every linear weight xavier-uniform,
every bias zero, LayerNorms at weight 1 and bias 0.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from mire_jax.config import HeadConfig
from mire_jax.models.layers import activation

MASKED_ROW = -9999.0  # the published fill for padded text rows


class AttentivePooling(nn.Module):
    cfg: HeadConfig
    v_dim: int
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        c = self.cfg
        h, d, split_hidden, proj_hidden = c.num_heads, c.dim, c.num_tokens * c.dim // 2, 2 * c.num_heads * c.dim

        def dense(features, use_bias=True):
            # Flax's xavier_uniform is torch's xavier_uniform_ with gain 1: U(+-sqrt(6 / (fan_in + fan_out))).
            return nn.Dense(features, use_bias=use_bias, dtype=self.dtype, kernel_init=nn.initializers.xavier_uniform(),
                            bias_init=nn.initializers.zeros)

        self.split_mlp_0 = dense(split_hidden)
        self.split_mlp_2 = dense(c.num_tokens * d)
        self.proj_0 = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)
        self.proj_1 = dense(proj_hidden)
        self.k_state = dense(h * d, use_bias=False)
        self.v_state = dense(h * d, use_bias=False)
        self.o_proj_0 = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype)
        self.o_proj_1 = dense(d)

    def __call__(self, t, v, t_mask):
        """Both token kinds: -> (E_g [B, n_g, d], E_m [B, h, d], attention [B, h, L, S])."""
        return (self.global_tokens(v), *self.pooled_tokens(t, v, t_mask))

    def global_tokens(self, v):
        """v [B, 1+S, v_dim] (token 0 = CLS) -> [B, num_tokens, dim]."""
        x = self.split_mlp_2(jnp.tanh(self.split_mlp_0(v[:, 0])))
        return x.reshape(v.shape[0], self.cfg.num_tokens, self.cfg.dim)

    def pooled_tokens(self, t, v, t_mask):
        """t [B, L, dim] projected, masked, NOT normalised text; t_mask [B, L] -> (E_m [B, h, dim], attn [B, h, L, S])."""
        h, d = self.cfg.num_heads, self.cfg.dim
        b, s = v.shape[0], v.shape[1] - 1
        x = activation("gelu")(self.proj_1(self.proj_0(v[:, 1:])))
        heads = lambda y: y.reshape(b, s, h, d).transpose(0, 2, 1, 3)  # [B, H, S, D]
        k, val = heads(self.k_state(x)), heads(self.v_state(x))
        # Every head sees the same text queries.
        scores = jnp.einsum("bld,bhsd->bhls", t.astype(k.dtype), k, preferred_element_type=jnp.float32) / math.sqrt(d)
        row_mask = t_mask[:, None, :, None].astype(bool)                     # [B, 1, L, 1]
        attn = jax.nn.softmax(jnp.where(row_mask, scores, MASKED_ROW), axis=-1)
        out = jnp.einsum("bhls,bhsd->bhld", attn.astype(val.dtype), val, preferred_element_type=jnp.float32)
        if self.cfg.residual:
            out = out + t[:, None].astype(jnp.float32)
        # QUIRK kept for checkpoint compatibility: the sum runs over all L rows (a padded row is the plain mean
        # of the values), the divisor counts only the unmasked rows.
        out = out.sum(-2) / (row_mask.sum(-2).astype(jnp.float32) + 1e-15)
        return self.o_proj_1(self.o_proj_0(out.astype(self.dtype))), attn
