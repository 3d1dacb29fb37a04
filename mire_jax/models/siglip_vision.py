"""SigLIP vision encoder (Hugging Face `SiglipVisionModel` semantics: pre-LN ViT without a CLS token, tanh GELU,
learned positions, `post_layernorm`, then the multihead attention pooling head with its learned probe).

Returns MIRe's vision features `[pooled ; patches]`: token 0 is the attention-pooling head's output (read from the
post-LayerNorm states), tokens 1: are the LAST encoder layer's patch states BEFORE `post_layernorm` (Hugging Face
`pooler_output` and `hidden_states[-1]`), as the published SigLIP tower selects them (retrievers/layers/siglip.py,
`SigLipVisionTower.forward`, with the pooled vector made one token: docs/model.md, section 1).
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from mire_jax.config import VisionConfig
from mire_jax.models.clip_vision import ClipLayer, patch_embedding
from mire_jax.models.layers import activation, multi_head_attention


class AttentionPoolingHead(nn.Module):
    """SigLIP's multihead attention pooling ("MAP"): a learned probe attends to the states (PyTorch's
    `nn.MultiheadAttention`: one fused in-projection with bias, an out-projection with bias), then
    `x + mlp(layernorm(x))`. -> [B, v]."""
    cfg: VisionConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        b, s, width = x.shape
        heads, head_dim = c.num_attention_heads, width // c.num_attention_heads
        probe = self.param("probe", nn.initializers.normal(1.0), (1, 1, width))
        # q, k, v projections fused as PyTorch stores them: kernel [v, 3v] = in_proj_weight.T, bias [3v].
        kernel = self.param("in_proj_kernel", nn.initializers.xavier_uniform(), (width, 3 * width))
        bias = self.param("in_proj_bias", nn.initializers.zeros, (3 * width,))
        kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
        q = jnp.broadcast_to(probe.astype(self.dtype), (b, 1, width)) @ kernel[:, :width] + bias[:width]
        k = x.astype(self.dtype) @ kernel[:, width:2 * width] + bias[width:2 * width]
        v = x.astype(self.dtype) @ kernel[:, 2 * width:] + bias[2 * width:]
        split = lambda y: y.reshape(b, y.shape[1], heads, head_dim)
        out = multi_head_attention(split(q), split(k), split(v), jnp.ones((b, s), bool)).reshape(b, 1, width)
        out = nn.Dense(width, dtype=self.dtype, name="out_proj")(out)
        h = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="layernorm")(out)
        h = nn.Dense(c.intermediate_size, dtype=self.dtype, name="fc1")(h)
        h = nn.Dense(width, dtype=self.dtype, name="fc2")(activation(c.hidden_act)(h))
        return (out + h)[:, 0]


class SiglipVision(nn.Module):
    """pixels NHWC (SigLIP-normalised) -> (features [B, 1+S, v] = [pooled ; last-layer patches], pooled [B, v])."""
    cfg: VisionConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values):
        c = self.cfg
        b = pixel_values.shape[0]
        x = patch_embedding(c, pixel_values, use_bias=True, dtype=self.dtype)
        x = x + nn.Embed(c.num_patches, c.hidden_size, dtype=self.dtype,
                         name="position_embedding")(jnp.arange(c.num_patches))[None]
        mask = jnp.ones((b, x.shape[1]), bool)
        for i in range(c.num_hidden_layers):
            x = ClipLayer(c, dtype=self.dtype, name=f"layer_{i}")(x, mask)
        post = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="post_layernorm")(x)
        pooled = AttentionPoolingHead(c, dtype=self.dtype, name="head")(post)
        return jnp.concatenate([pooled[:, None].astype(x.dtype), x], axis=1), pooled
