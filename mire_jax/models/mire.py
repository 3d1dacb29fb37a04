"""MIRe: BERT text tower + ColBERT projection, frozen CLIP or SigLIP vision tower (`config.vision.model_type`),
query-guided attentive pooling; SentMIRe: the same with a ModernBERT text tower and PyLate's projection
(`MIReConfig.modernbert`)."""
from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from mire_jax.config import MIReConfig
from mire_jax.models.bert import Bert
from mire_jax.models.clip_vision import ClipVision
from mire_jax.models.layers import l2_normalize
from mire_jax.models.modernbert import ModernBert
from mire_jax.models.pooling import AttentivePooling
from mire_jax.models.siglip_vision import SiglipVision

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class MIRe(nn.Module):
    """Methods are entry points for `apply(..., method=...)`; params: {bert, linear, vision, pooling}. `bert` is
    the text tower in use: BERT, or ModernBERT when `cfg.modernbert` is set (the published SentMIRe also calls its
    ModernBERT `bert`); `linear` is ColBERT's projection, or PyLate's Dense layer (`dense` in SentMIRe)."""
    cfg: MIReConfig

    def setup(self):
        c = self.cfg
        if c.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {c.dtype!r}")
        dtype = DTYPES[c.dtype]
        if c.modernbert is None:
            self.bert = Bert(c.bert, dtype=dtype)
        else:
            self.bert = ModernBert(c.modernbert, dtype=dtype)
        bias = c.modernbert is not None and c.modernbert.projection_bias
        self.linear = nn.Dense(c.head.dim, use_bias=bias, dtype=dtype, kernel_init=nn.initializers.normal(0.02))
        tower = SiglipVision if c.vision.model_type == "siglip" else ClipVision
        self.vision = tower(c.vision, dtype=dtype)
        self.pooling = AttentivePooling(c.head, c.vision.hidden_size, dtype=dtype)

    def __call__(self, input_ids, attention_mask, pixel_values):
        """Touches every parameter (init); returns the full query embedding."""
        self.bert(input_ids, attention_mask)
        self.vision(pixel_values)
        return self.encode_query(input_ids, attention_mask, pixel_values)

    def text_tokens(self, input_ids, attention_mask, deterministic=True, example_ids=None):
        """-> projected, NOT normalised token embeddings [B, L, dim], float32. `example_ids` [B]: the examples'
        positions in the global batch, which key their dropout masks in training (default 0..B-1)."""
        hidden = self.bert(input_ids, attention_mask, deterministic, example_ids)[0]
        return self.linear(hidden).astype(jnp.float32)

    def encode_vision(self, pixel_values):
        """NHWC pixels -> frozen-tower features [B, 1+S, v], float32."""
        return self.vision(pixel_values)[0].astype(jnp.float32)

    def visual_tokens(self, t, attention_mask, vision_features):
        """-> ([E_g ; E_m] [B, n_g + h, dim], pooling attention [B, h, L, S])."""
        g, m, attn = self.pooling(t, vision_features, attention_mask)
        return jnp.concatenate([g, m], axis=1).astype(jnp.float32), attn

    def masked_text_tokens(self, input_ids, attention_mask, deterministic=True, example_ids=None):
        """T = linear(H) * mask: the projected, masked, NOT normalised text tokens [B, L, dim] (the pooling's
        queries, and the text part of a full query)."""
        t = self.text_tokens(input_ids, attention_mask, deterministic, example_ids)
        return t * attention_mask[..., None].astype(jnp.float32)

    def encode_query(self, input_ids, attention_mask, pixel_values=None, vision_features=None, pretraining=False,
                     deterministic=True, example_ids=None, pooling_rows=None):
        """-> [B, N, dim] L2-normalised. With an image N = n_g + h (+ L unless `pretraining`), without one N = L.

        `pooling_rows`: the query length the pooling counts rows of (see `query_from_text`), when the text was cut
        short of it."""
        t = self.masked_text_tokens(input_ids, attention_mask, deterministic, example_ids)
        return self.query_from_text(t, attention_mask, pixel_values, vision_features, pretraining, pooling_rows)

    def query_from_text(self, t, attention_mask, pixel_values=None, vision_features=None, pretraining=False,
                        pooling_rows=None):
        """`encode_query` from the text tokens T (`masked_text_tokens`) onwards.

        The pooling's sum runs over every text row, masked ones included (`AttentivePooling.pooled_tokens`), so a
        query framed at `pooling_rows` tokens but encoded cut to its first L (every row past L being masked padding,
        which nothing attends to) pools as the full query once T is padded back with masked rows; the text tokens
        returned stay L.
        """
        if pixel_values is None and vision_features is None:
            return l2_normalize(t)
        if vision_features is None:
            vision_features = self.encode_vision(pixel_values)
        pool_t, pool_mask = t, attention_mask
        if pooling_rows is not None and pooling_rows > t.shape[1]:
            extra = pooling_rows - t.shape[1]
            pool_t = jnp.pad(t, ((0, 0), (0, extra), (0, 0)))
            pool_mask = jnp.pad(attention_mask, ((0, 0), (0, extra)))
        visual, _ = self.visual_tokens(pool_t, pool_mask, vision_features)
        return l2_normalize(visual if pretraining else jnp.concatenate([visual, t], axis=1))

    def pooling_attention(self, input_ids, attention_mask, vision_features):
        """The pooling's attention over the patches [B, h, L, S] (for heatmaps)."""
        t = self.masked_text_tokens(input_ids, attention_mask)
        return self.visual_tokens(t, attention_mask, vision_features)[1]

    def encode_doc(self, input_ids, attention_mask, keep_mask, deterministic=True, example_ids=None):
        """keep_mask [B, L] bool (False on padding, and on punctuation in training) -> D [B, L, dim]
        L2-normalised."""
        d = self.text_tokens(input_ids, attention_mask, deterministic, example_ids)
        d = d * keep_mask[..., None].astype(jnp.float32)
        return l2_normalize(d)

    def encode_doc_with_image(self, input_ids, attention_mask, keep_mask, prompt_ids, pixel_values=None,
                              vision_features=None, deterministic=True, example_ids=None):
        """A passage that carries an image, alone or with text (the published `MIRe.doc`): -> (D, keep).

        The image gives the global tokens E_g and the pooled tokens E_m, the pooling guided by a fixed prompt
        (`prompt_ids` [P], ColBERT query framing, every token attended: `ColbertTokenizer.encode_image_prompt`)
        through the text tower and the projection; then the passage's own text tokens. D = normalize([E_g ; E_m ;
        linear(H) * keep]) [B, n_g + h (+ L), dim]; keep [B, same] is True on every image row and `keep_mask` on
        the text rows. `input_ids` None: an image-only passage (no text rows).

        In training (`deterministic=False`) the prompt is encoded once per passage, as the published code repeats it
        over the batch before the text tower, so each copy draws its own dropout (keyed by `example_ids`); otherwise
        the copies are equal and it is encoded once.
        """
        if vision_features is None:
            vision_features = self.encode_vision(pixel_values)
        b = vision_features.shape[0]
        prompt = jnp.asarray(prompt_ids)[None]
        if deterministic:
            t = self.text_tokens(prompt, jnp.ones_like(prompt))
            t = jnp.broadcast_to(t, (b,) + t.shape[1:])
        else:
            prompts = jnp.broadcast_to(prompt, (b, prompt.shape[1]))
            t = self.text_tokens(prompts, jnp.ones_like(prompts), deterministic, example_ids)
        visual, _ = self.visual_tokens(t, jnp.ones(t.shape[:2], jnp.int32), vision_features)
        visual_keep = jnp.ones(visual.shape[:2], bool)
        if input_ids is None:
            return l2_normalize(visual), visual_keep
        d = self.text_tokens(input_ids, attention_mask, deterministic, example_ids)
        d = d * keep_mask[..., None].astype(jnp.float32)
        return (l2_normalize(jnp.concatenate([visual, d], axis=1)),
                jnp.concatenate([visual_keep, keep_mask.astype(bool)], axis=1))
