"""CLIP vision encoder (Hugging Face `CLIPVisionModel` semantics: pre-LN ViT, quick-GELU, learned positions).

Returns MIRe's vision features `[CLS of the LAST layer ; patches of the PENULTIMATE layer]`, both taken from
the encoder's layer outputs before `post_layernorm` (which, like BERT's pooler, exists in checkpoints only).
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from mire_jax.config import VisionConfig
from mire_jax.models.layers import SelfAttention, activation


class ClipLayer(nn.Module):
    cfg: VisionConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask):
        c = self.cfg
        ln = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name=name)
        x = x + SelfAttention(c.num_attention_heads, dtype=self.dtype, name="self_attn")(ln("layer_norm1")(x), mask)
        h = nn.Dense(c.intermediate_size, dtype=self.dtype, name="fc1")(ln("layer_norm2")(x))
        return x + nn.Dense(c.hidden_size, dtype=self.dtype, name="fc2")(activation(c.hidden_act)(h))


def patch_embedding(c: VisionConfig, pixel_values, *, use_bias: bool, dtype) -> jnp.ndarray:
    """pixels [B, H, W, C] (NHWC, checked against the config) -> patch embeddings [B, S, v] (module
    "patch_embedding" of the calling tower)."""
    if pixel_values.shape[1:] != (c.image_size, c.image_size, c.num_channels):
        raise ValueError(f"pixel_values must be [B, {c.image_size}, {c.image_size}, {c.num_channels}] (NHWC), "
                         f"got {pixel_values.shape}")
    x = nn.Conv(c.hidden_size, (c.patch_size, c.patch_size), strides=c.patch_size, padding="VALID",
                use_bias=use_bias, dtype=dtype, name="patch_embedding")(pixel_values)
    return x.reshape(pixel_values.shape[0], -1, c.hidden_size)


class ClipVision(nn.Module):
    """pixels NHWC (CLIP-normalised) -> (features [B, 1+S, v], post-LN CLS [B, v])."""
    cfg: VisionConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values):
        c = self.cfg
        b = pixel_values.shape[0]
        patches = patch_embedding(c, pixel_values, use_bias=False, dtype=self.dtype)
        cls = self.param("class_embedding", nn.initializers.normal(c.hidden_size ** -0.5), (c.hidden_size,))
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(patches.dtype), (b, 1, c.hidden_size)), patches], axis=1)
        x = x + nn.Embed(c.num_patches + 1, c.hidden_size, dtype=self.dtype,
                         name="position_embedding")(jnp.arange(c.num_patches + 1))[None]
        x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="pre_layrnorm")(x)
        mask = jnp.ones((b, x.shape[1]), bool)
        penultimate = x
        for i in range(c.num_hidden_layers):
            penultimate = x
            x = ClipLayer(c, dtype=self.dtype, name=f"layer_{i}")(x, mask)
        pooled = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="post_layernorm")(x[:, 0])
        return jnp.concatenate([x[:, :1], penultimate[:, 1:]], axis=1), pooled
