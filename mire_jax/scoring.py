"""Late-interaction scoring: MaxSim (dense and blocked) and the in-batch contrastive loss.

The loss is written as a per-device function with an axis name: under `shard_map`/`pmap` the passages of every
device are gathered, so each query sees the whole global batch as negatives and the loss equals the
single-device loss on the global batch.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from mire_jax.blocks import block_budget, largest_divisor_block

MASKED_SCORE = -9999.0  # the published code's fill for masked doc tokens


def _masked_scores(q, d, d_mask):
    s = jnp.einsum("qnd,pld->qpnl", q, d, preferred_element_type=jnp.float32)
    return jnp.where(d_mask[None, :, None, :].astype(bool), s, MASKED_SCORE)


@jax.custom_vjp
def maxsim(q: jax.Array, d: jax.Array, d_mask: jax.Array) -> jax.Array:
    """All-pairs late interaction: q [Bq, Nq, D], d [Bd, Ld, D], d_mask [Bd, Ld] -> [Bq, Bd] float32.

    s(Q, D) = sum_i max_j <Q_i, D_j> over unmasked j; masked doc tokens score MASKED_SCORE.
    The backward pass routes each query token's gradient to the doc token it matched (as PyTorch's max does),
    from the argmax indices alone: the [Bq, Bd, Nq, Ld] similarity tensor exists only inside the forward pass.
    """
    return _masked_scores(q, d, d_mask).max(-1).sum(-1)


def _maxsim_fwd(q, d, d_mask):
    s = _masked_scores(q, d, d_mask)
    top = s.max(-1)
    # The first index reaching the max, as argmax gives, from two plain reductions: XLA:CPU's fused
    # (value, index) reduction of argmax ran at a third of this speed.
    index = jax.lax.broadcasted_iota(jnp.int32, s.shape, s.ndim - 1)
    best = jnp.min(jnp.where(s == top[..., None], index, s.shape[-1]), axis=-1)  # [Bq, Bd, Nq]
    return top.sum(-1), (q, d, d_mask, best)


def _maxsim_bwd(residuals, g):
    q, d, d_mask, best = residuals
    docs = jnp.arange(d.shape[0])[None, :, None]
    weight = g[:, :, None] * d_mask[docs, best].astype(g.dtype)             # masked matches carry no gradient
    matched = d[docs, best]                                                  # [Bq, Bd, Nq, D]
    grad_q = jnp.einsum("ipn,ipnk->ink", weight, matched.astype(g.dtype))
    contrib = weight[..., None] * q[:, None].astype(g.dtype)                # [Bq, Bd, Nq, D]
    grad_d = jnp.zeros(d.shape, g.dtype).at[jnp.broadcast_to(docs, best.shape), best].add(contrib)
    return grad_q.astype(q.dtype), grad_d.astype(d.dtype), None


maxsim.defvjp(_maxsim_fwd, _maxsim_bwd)


def maxsim_blocked(q: jax.Array, d: jax.Array, d_mask: jax.Array, block: int) -> jax.Array:
    """MaxSim of every query against every passage, computed `block` passages at a time, so the transient
    [Bq, block, Nq, Ld] similarity tensor is bounded by the block size (the backward pass keeps only argmax
    indices). Bd must be a multiple of `block`."""
    bd = d.shape[0]
    if block >= bd:
        return maxsim(q, d, d_mask)
    if bd % block:
        raise ValueError(f"passage count {bd} is not a multiple of the MaxSim block {block}")
    d_blocks = d.reshape(bd // block, block, *d.shape[1:])
    m_blocks = d_mask.reshape(bd // block, block, d_mask.shape[1])
    scores = jax.lax.map(lambda xs: maxsim(q, *xs), (d_blocks, m_blocks))  # [nblocks, Bq, block]
    return jnp.moveaxis(scores, 0, 1).reshape(q.shape[0], bd)


ACCELERATOR_BLOCK_SCORES = 1 << 28


def auto_maxsim_block(num_queries: int, query_len: int, num_passages: int, passage_len: int) -> int:
    """Passages per MaxSim block: the largest divisor of `num_passages` whose [Bq, block, Nq, Ld] similarity
    block holds at most about a million scores on CPU (cache-sized) or 256M elsewhere (1 GiB in float32)."""
    per_passage = num_queries * query_len * passage_len
    return largest_divisor_block(num_passages, per_passage, block_budget(ACCELERATOR_BLOCK_SCORES))


def in_batch_loss(q: jax.Array, d: jax.Array, d_mask: jax.Array, temperature: float, *,
                  axis_name: Optional[str] = None, block: Optional[int | str] = None):
    """Contrastive loss with in-batch negatives; returns (mean loss, accuracy) over THIS device's queries.

    q [b, Nq, D], d [b, Ld, D], d_mask [b, Ld] are the local shards. With `axis_name`, the passages of all
    devices along that axis are gathered (query i of device r has target r * b + i). Differentiate this local
    loss and `pmean` the gradients: the transpose of the gather routes every query's gradient to the device
    that owns the passage, so the mean of the per-device gradients is the gradient of the global-batch loss.
    `block`: passages per MaxSim block (None: all at once; "auto": `auto_maxsim_block`).
    """
    b = q.shape[0]
    offset = 0
    if axis_name is not None:
        d = jax.lax.all_gather(d, axis_name, tiled=True)
        d_mask = jax.lax.all_gather(d_mask, axis_name, tiled=True)
        offset = jax.lax.axis_index(axis_name) * b
    if block == "auto":
        block = auto_maxsim_block(b, q.shape[1], d.shape[0], d.shape[1])
    scores = maxsim_blocked(q, d, d_mask, block) if block else maxsim(q, d, d_mask)
    logits = scores / temperature
    target = offset + jnp.arange(b)
    logp = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.take_along_axis(logp, target[:, None], axis=-1)[:, 0]
    acc = (jnp.argmax(logits, axis=-1) == target).astype(jnp.float32)
    return loss.mean(), acc.mean()
