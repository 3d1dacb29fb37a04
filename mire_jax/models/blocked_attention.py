"""Softmax attention in blocks of (batch x head) groups, forward and backward, with optional dropout on the
probabilities.

XLA materialises every [B, N, T, S] intermediate of plain attention. On CPU, an allocation of more than 32 MB is a
fresh mmap that page-faults on first touch, so at B=32, L=256 each elementwise pass over the scores ran 5x slower
per byte than at half the batch. Blocks of about a million scores stay in cache and in the allocator's free lists.
The backward recomputes the probabilities from q, k and the saved row max and sum (as flash attention does) instead of
keeping [B, N, T, S] residuals alive. The dropout mask is a hash of each score's index inside its example's
[N, T, S] scores, keyed by the example (see dropout.py), so it is the same however the work is blocked, and the
backward recomputes it for free.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from mire_jax.models.blocks import largest_divisor_block
from mire_jax.models.dropout import dropout_keep_probability, keep_mask_at


def blocked_attention(q, k, v, mask, dropout_keys=None, dropout_rate: float = 0.0, block_scores: int | None = None,
                      window: int | None = None):
    """q [B, T, N, H], k/v [B, S, N, H], mask [B, S] (True = attend) -> [B, T, N, H].

    Masked keys get a finfo.min bias (as Hugging Face adds); a row with no key to attend spreads uniformly.
    `window`: query t attends only to the keys s with |t - s| <= window (a local layer of ModernBERT); the others
    get the same finfo.min bias as masked keys (one bias, as Hugging Face combines its masks), so a row whose window
    holds no unmasked key spreads uniformly over every key too.
    Logits, softmax and the dropout mask are float32; the probabilities meet v in v's dtype.
    `dropout_keys` [B, 2]: the examples' dropout keys (`dropout.example_keys`); None: no dropout.
    `block_scores` bounds the scores per block (None: one block).
    """
    b, t, n, h = q.shape
    s = k.shape[1]
    groups = b * n
    group_block = largest_divisor_block(groups, t * s, block_scores)
    if dropout_keys is None or dropout_rate == 0.0:
        keys, rate = jnp.zeros((groups, 2), jnp.uint32), 0.0
    else:
        keys, rate = jnp.repeat(dropout_keys.astype(jnp.uint32), n, axis=0), float(dropout_rate)
    grouped = lambda x: x.transpose(0, 2, 1, 3).reshape(groups, x.shape[1], h)
    bias = jnp.where(mask.astype(bool), 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
    bias = jnp.broadcast_to(bias[:, None, :], (b, n, s)).reshape(groups, s)
    out = _attention(grouped(q), grouped(k), grouped(v), bias, keys, rate, (n, group_block, window))
    return out.reshape(b, n, t, h).transpose(0, 2, 1, 3)


def _blocks(x, group_block):
    return x.reshape(x.shape[0] // group_block, group_block, *x.shape[1:])


def _unblock(x):
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _biased(logits, bias, window, transposed=False):
    """Scores [g, T, S] (or their transpose [g, S, T]) plus the key bias [g, S] (0 or finfo.min); with a `window`,
    finfo.min also where |t - s| > window, once per score."""
    s_axis = 1 if transposed else 2
    key_bias = jnp.expand_dims(bias, 2 if transposed else 1)
    if window is None:
        return logits + key_bias
    at = lambda axis: jax.lax.broadcasted_iota(jnp.int32, logits.shape, axis)
    inside = jnp.abs(at(3 - s_axis) - at(s_axis)) <= window
    return logits + jnp.where(inside & (key_bias == 0.0), 0.0, jnp.finfo(jnp.float32).min)


def _probabilities(q, k, bias, stats=None, window=None):
    """-> (probabilities [g, T, S] float32, (row max, row sum of exp) [g, T] each); `stats` given are reused.

    The max and the sum are kept apart rather than as one log-sum-exp: a row with every key masked sits at
    finfo.min, where adding log(S) is absorbed by rounding.
    """
    logits = jnp.einsum("gth,gsh->gts", q, k, preferred_element_type=jnp.float32) / math.sqrt(q.shape[-1])
    logits = _biased(logits, bias, window)
    if stats is None:
        top = jnp.max(logits, axis=-1)
        exp = jnp.exp(logits - top[..., None])
        total = jnp.sum(exp, axis=-1)
        return exp / total[..., None], (top, total)
    top, total = stats
    return jnp.exp(logits - top[..., None]) / total[..., None], stats


def _keep(keys, rate, shape, heads, block_index, transposed=False):
    """The keep mask of block `block_index` of scores [g, T, S], or of its transpose [g, S, T]: a score keeps
    the index it has in its example's [N, T, S] scores, under its example's key (`keys` [g, 2], one row per
    group of the block)."""
    g, t, s = (shape[0], shape[2], shape[1]) if transposed else shape
    at = lambda axis: jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
    t_axis, s_axis = (2, 1) if transposed else (1, 2)
    head = (at(0) + block_index * g) % heads
    index = head * (t * s) + at(t_axis) * s + at(s_axis)
    return keep_mask_at(keys[:, None, None, :], index.astype(jnp.uint32), rate)


def _forward(q, k, v, bias, keys, rate, layout):
    heads, group_block, window = layout

    def block(args):
        i, qb, kb, vb, bb, keys_b = args
        probs, stats = _probabilities(qb, kb, bb, window=window)
        if rate:
            keep = _keep(keys_b, rate, probs.shape, heads, i)
            probs = jnp.where(keep, probs / dropout_keep_probability(rate), 0.0)
        return jnp.einsum("gts,gsh->gth", probs.astype(vb.dtype), vb), stats

    index = jnp.arange(q.shape[0] // group_block, dtype=jnp.uint32)
    out, stats = jax.lax.map(block, (index, *(_blocks(x, group_block) for x in (q, k, v, bias, keys))))
    return _unblock(out), tuple(_unblock(x) for x in stats)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _attention(q, k, v, bias, keys, rate, layout):
    """`layout` = (heads per example, groups per block, window or None)."""
    return _forward(q, k, v, bias, keys, rate, layout)[0]


def _attention_fwd(q, k, v, bias, keys, rate, layout):
    out, stats = _forward(q, k, v, bias, keys, rate, layout)
    return out, (q, k, v, bias, keys, stats, out)


def _attention_bwd(rate, layout, residuals, grad_out):
    """Works on the transposed scores [g, S, T]: every product is then a plain row-by-column one
    (XLA:CPU's dot runs several times slower when it contracts the leading axis of a [T, S] operand)."""
    heads, group_block, window = layout
    q, k, v, bias, keys, (top, total), out = residuals
    scale = 1.0 / math.sqrt(q.shape[-1])
    # Row t of the softmax: sum_s dP[t, s] P[t, s] = sum_h dO[t, h] O[t, h], dropout included.
    delta = jnp.sum(grad_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)

    def block(args):
        i, qb, kb, vb, bb, keys_b, tb, sb, db, gb = args
        logits_t = jnp.einsum("gsh,gth->gst", kb, qb, preferred_element_type=jnp.float32) * scale
        probs_t = jnp.exp(_biased(logits_t, bb, window, transposed=True) - tb[:, None, :]) / sb[:, None, :]
        grad_dropped_t = jnp.einsum("gsh,gth->gst", vb, gb, preferred_element_type=jnp.float32)
        if rate:
            keep_t = _keep(keys_b, rate, probs_t.shape, heads, i, transposed=True)
            p = dropout_keep_probability(rate)
            dropped_t = jnp.where(keep_t, probs_t / p, 0.0)
            grad_probs_t = jnp.where(keep_t, grad_dropped_t / p, 0.0)
        else:
            dropped_t, grad_probs_t = probs_t, grad_dropped_t
        grad_logits_t = probs_t * (grad_probs_t - db[:, None, :]) * scale
        dv = jnp.einsum("gst,gth->gsh", dropped_t.astype(gb.dtype), gb, preferred_element_type=jnp.float32)
        dk = jnp.einsum("gst,gth->gsh", grad_logits_t.astype(qb.dtype), qb, preferred_element_type=jnp.float32)
        dq_t = jnp.einsum("ghs,gst->ght", kb.transpose(0, 2, 1), grad_logits_t.astype(kb.dtype),
                          preferred_element_type=jnp.float32)
        dq_t = jax.lax.optimization_barrier(dq_t)  # else XLA folds the transpose into a slow dot
        return dq_t.transpose(0, 2, 1).astype(qb.dtype), dk.astype(kb.dtype), dv.astype(vb.dtype)

    index = jnp.arange(q.shape[0] // group_block, dtype=jnp.uint32)
    blocks = (index, *(_blocks(x, group_block) for x in (q, k, v, bias, keys, top, total, delta, grad_out)))
    dq, dk, dv = (_unblock(x) for x in jax.lax.map(block, blocks))
    return dq, dk, dv, jnp.zeros_like(bias), None


_attention.defvjp(_attention_fwd, _attention_bwd)
