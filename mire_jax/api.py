"""The small functional API: config + params in, embeddings out. Every function is jitted (config static)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mire_jax.config import MIReConfig
from mire_jax.models.mire import MIRe
from mire_jax.scoring import maxsim  # noqa: F401  (re-exported)


@functools.lru_cache(maxsize=None)
def model(config: MIReConfig) -> MIRe:
    return MIRe(config)


def init_params(config: MIReConfig, rng: jax.Array, batch: int = 1, query_len: int = 8) -> dict:
    """Random parameters for every part (float32): BERT ~N(0, 0.02) as Hugging Face initialises it, the vision
    tower (CLIP or SigLIP) with Flax's defaults (it is always loaded from a checkpoint in practice), the pooling
    head as the published code initialises it before pre-training (linear weights xavier-uniform, biases zero)."""
    ids = jnp.zeros((batch, query_len), jnp.int32)
    size = config.vision.image_size
    pixels = jnp.zeros((batch, size, size, config.vision.num_channels), jnp.float32)
    return jax.jit(model(config).init)(rng, ids, jnp.ones_like(ids), pixels)["params"]


def _apply(config, params, method, *args, **kwargs):
    return model(config).apply({"params": params}, *args, method=method, **kwargs)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("pretraining", "pooling_rows"))
def encode_query(config: MIReConfig, params, input_ids, attention_mask, pixel_values=None, *,
                 vision_features=None, pretraining: bool = False, pooling_rows: int | None = None) -> jax.Array:
    """Query embeddings [B, N, dim], L2-normalised per token.

    pixel_values: NHWC float32, already preprocessed (`config.vision.image_processing()`); or `vision_features`
    [B, 1+S, v] from the vision cache; neither: a text-only query (N = L). `pretraining`: visual tokens only
    (N = num_tokens + num_heads); otherwise visual + text tokens (N = num_tokens + num_heads + L).
    `pooling_rows`: the framed query length, when input_ids hold only its first L tokens and every later one is
    masked padding (`attention_mask` 0): the same embeddings as the full query's first N, without encoding the
    padding (`MIRe.query_from_text`).
    """
    return _apply(config, params, MIRe.encode_query, input_ids, attention_mask, pixel_values, vision_features,
                  pretraining, pooling_rows=pooling_rows)


def encode_doc(config: MIReConfig, params, input_ids=None, attention_mask=None, keep_mask=None, *,
               pixel_values=None, vision_features=None, prompt_ids=None):
    """Passage embeddings: -> (D [B, N, dim] L2-normalised, zero where the keep mask is False; keep [B, N] bool).

    A text passage: N = L, keep = `keep_mask`. A passage that carries an image (`pixel_values` NHWC, or cached
    `vision_features` [B, 1+S, v]), as the published `MIRe.doc` encodes it: `[E_g ; E_m ; text]`, with E_m pooled
    under the fixed prompt `prompt_ids` [P] (`ColbertTokenizer.encode_image_prompt()`); N = num_tokens + num_heads
    + L, the image rows always kept. Without `input_ids` the passage is the image alone: N = num_tokens + num_heads.
    """
    if pixel_values is None and vision_features is None:
        if input_ids is None:
            raise ValueError("encode_doc: give the passage's text (input_ids, attention_mask, keep_mask), its image "
                             "(pixel_values or vision_features), or both")
        return _encode_text_doc(config, params, input_ids, attention_mask, keep_mask)
    if config.modernbert is not None:
        # The published SentMIRe.doc projects the image features without the prompt-guided pooling of MIRe.doc;
        # only MIRe's path is built here, so a SentMIRe model refuses image passages rather than differ silently.
        raise ValueError("encode_doc: passages with images are not supported for SentMIRe (ModernBERT) models: "
                         "the published SentMIRe encodes them unlike MIRe, and only MIRe's way is built here")
    if prompt_ids is None:
        raise ValueError("encode_doc: a passage image needs prompt_ids, the fixed prompt that guides its pooling "
                         "(ColbertTokenizer.encode_image_prompt())")
    if input_ids is not None and keep_mask is None:
        raise ValueError("encode_doc: input_ids without keep_mask")
    return _encode_image_doc(config, params, input_ids, attention_mask, keep_mask, prompt_ids, pixel_values,
                             vision_features)


@functools.partial(jax.jit, static_argnums=0)
def _encode_text_doc(config, params, input_ids, attention_mask, keep_mask):
    keep_mask = keep_mask.astype(bool)
    return _apply(config, params, MIRe.encode_doc, input_ids, attention_mask, keep_mask), keep_mask


@functools.partial(jax.jit, static_argnums=0)
def _encode_image_doc(config, params, input_ids, attention_mask, keep_mask, prompt_ids, pixel_values,
                      vision_features):
    keep_mask = None if keep_mask is None else keep_mask.astype(bool)
    return _apply(config, params, MIRe.encode_doc_with_image, input_ids, attention_mask, keep_mask, prompt_ids,
                  pixel_values, vision_features)


@functools.partial(jax.jit, static_argnums=0)
def encode_vision(config: MIReConfig, params, pixel_values) -> jax.Array:
    """The frozen vision tower: NHWC pixels -> [B, 1+S, v]; CLIP: [last-layer CLS ; penultimate-layer patches],
    SigLIP: [attention-pooled vector ; last-layer patches] (docs/model.md, section 1)."""
    return _apply(config, params, MIRe.encode_vision, pixel_values)


@functools.partial(jax.jit, static_argnums=0)
def pooling_attention(config: MIReConfig, params, input_ids, attention_mask, vision_features) -> jax.Array:
    """Attention of the pooling heads over the image patches: [B, num_heads, L, S]."""
    return _apply(config, params, MIRe.pooling_attention, input_ids, attention_mask, vision_features)
