"""BERT encoder (Hugging Face `BertModel` semantics: post-LN, exact GELU, absolute positions, token types)."""
from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from mire_jax.config import BertConfig
from mire_jax.models.dropout import Dropout
from mire_jax.models.layers import SelfAttention, activation


class BertLayer(nn.Module):
    cfg: BertConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic: bool = True, example_ids=None):
        c = self.cfg
        init = nn.initializers.normal(0.02)
        ln = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name=name)
        drop = lambda y: Dropout(c.hidden_dropout_prob)(y, deterministic, example_ids)
        h = SelfAttention(c.num_attention_heads, dtype=self.dtype, dropout_rate=c.attention_probs_dropout_prob,
                          name="attention")(x, mask, deterministic, example_ids)
        x = ln("attention_ln")(x + drop(h))
        h = nn.Dense(c.intermediate_size, dtype=self.dtype, kernel_init=init, name="intermediate")(x)
        h = nn.Dense(c.hidden_size, dtype=self.dtype, kernel_init=init, name="output")(activation(c.hidden_act)(h))
        return ln("output_ln")(x + drop(h))


class Bert(nn.Module):
    """input_ids, attention_mask [B, L] -> (last hidden state [B, L, H], pooler output [B, H]).

    The pooler is unused by MIRe but exists in every checkpoint; computing it keeps its weights in the params
    (so export is complete) and costs nothing under jit, where unused outputs are dropped. Dropout (training
    only, `deterministic=False`, rng stream "dropout") follows Hugging Face's placement; `example_ids` [B] are the
    examples' positions in the global batch, which key their dropout masks (default 0..B-1).
    """
    cfg: BertConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, attention_mask, deterministic: bool = True, example_ids=None):
        c = self.cfg
        init = nn.initializers.normal(0.02)
        embed = lambda n, name: nn.Embed(n, c.hidden_size, dtype=self.dtype, embedding_init=init, name=name)
        positions = jnp.arange(input_ids.shape[1])[None, :]
        x = (embed(c.vocab_size, "word_embeddings")(input_ids)
             + embed(c.max_position_embeddings, "position_embeddings")(positions)
             + embed(c.type_vocab_size, "token_type_embeddings")(jnp.zeros_like(input_ids)))
        x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, name="embeddings_ln")(x)
        x = Dropout(c.hidden_dropout_prob)(x, deterministic, example_ids)
        for i in range(c.num_hidden_layers):
            x = BertLayer(c, dtype=self.dtype, name=f"layer_{i}")(x, attention_mask, deterministic, example_ids)
        pooled = jnp.tanh(nn.Dense(c.hidden_size, dtype=self.dtype, kernel_init=init, name="pooler")(x[:, 0]))
        return x, pooled
