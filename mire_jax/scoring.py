"""Late-interaction scoring: MaxSim (dense and blocked) and the in-batch contrastive loss per negatives group.

Negatives groups: the published runs train on 4 processes x 128 examples, and each query's negatives are the other
127 passages of its own process's 128, never gathered across processes. Here a group is `group_size` consecutive
examples of the GLOBAL batch, whatever holds them: a device may hold several groups (scored apart, no
communication), or a group may span several devices (their passages gathered along the group's mesh axis). The
loss is the mean over all queries of the global batch, so it does not depend on the device layout.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from mire_jax.models.blocks import CPU_BLOCK_ELEMENTS, cpu_or_accelerator, largest_divisor_block

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


def auto_maxsim_block(num_queries: int, query_len: int, num_passages: int, passage_len: int,
                      budget: int = ACCELERATOR_BLOCK_SCORES) -> int:
    """Passages per MaxSim block: the largest divisor of `num_passages` whose [Bq, block, Nq, Ld] similarity
    block holds at most `budget` scores (the loss uses about a million on CPU, cache-sized, and 256M elsewhere,
    1 GiB in float32)."""
    return largest_divisor_block(num_passages, num_queries * query_len * passage_len, budget)


def in_batch_loss(q: jax.Array, d: jax.Array, d_mask: jax.Array, temperature: float, *,
                  group_size: Optional[int] = None, group_axis: Optional[str] = None,
                  block: Optional[int | str] = None):
    """Contrastive loss with in-batch negatives inside negatives groups; returns (mean loss, accuracy) over THIS
    device's queries (`pmean` them, and the gradients, over the data axes for the global-batch values).

    q [b, Nq, D], d [b, Ld, D], d_mask [b, Ld] are this device's examples, consecutive in the global batch.
    `group_size` (None: the b local examples form one group):
      <= b: b must be a multiple; each run of `group_size` local examples is one group, scored alone;
      >  b: a multiple of b; the group spans `group_size // b` consecutive devices along `group_axis`, whose
            passages are gathered (query i of the r-th device of the group has target r * b + i). The transpose
            of the gather routes every query's gradient to the device that owns the passage.
    Logits are s(Q_i, D_j) / temperature over the group's passages, cross-entropy with target i; accuracy is
    argmax = target. `block`: passages per MaxSim block (None: all at once; "auto": `auto_maxsim_block`).
    """
    b = q.shape[0]
    group = b if group_size is None else int(group_size)
    if group <= b:
        if b % group:
            raise ValueError(f"{b} examples per device do not split into negatives groups of {group}")
        n = b // group
        split = lambda x: x.reshape(n, group, *x.shape[1:])
        qs, ds, ms, offsets = split(q), split(d), split(d_mask), jnp.zeros((n,), jnp.int32)
    else:
        if group % b:
            raise ValueError(f"a negatives group of {group} cannot span devices holding {b} examples each")
        if group_axis is None:
            raise ValueError(f"a negatives group of {group} spans devices of {b} examples: give its group_axis")
        d = jax.lax.all_gather(d, group_axis, tiled=True)
        d_mask = jax.lax.all_gather(d_mask, group_axis, tiled=True)
        if d.shape[0] != group:
            raise ValueError(f"the group axis {group_axis!r} gathers {d.shape[0]} passages, not the group's {group}")
        qs, ds, ms = q[None], d[None], d_mask[None]
        offsets = (jax.lax.axis_index(group_axis) * b)[None].astype(jnp.int32)

    def group_loss(block_size, q, d, d_mask, offset):
        scores = maxsim_blocked(q, d, d_mask, block_size) if block_size else maxsim(q, d, d_mask)
        logits = scores / temperature
        target = offset + jnp.arange(q.shape[0])
        logp = jax.nn.log_softmax(logits, axis=-1)
        loss = -jnp.take_along_axis(logp, target[:, None], axis=-1)[:, 0]
        return loss, (jnp.argmax(logits, axis=-1) == target).astype(jnp.float32)

    def loss_with(block_size, *args):
        losses, correct = jax.vmap(functools.partial(group_loss, block_size))(*args)
        return losses.mean(), correct.mean()

    args = (qs, ds, ms, offsets)
    if block != "auto":
        return loss_with(block, *args)
    sizes = [auto_maxsim_block(qs.shape[1], q.shape[1], ds.shape[1], ds.shape[2], budget)
             for budget in (CPU_BLOCK_ELEMENTS, ACCELERATOR_BLOCK_SCORES)]
    if sizes[0] == sizes[1]:
        return loss_with(sizes[0], *args)
    return cpu_or_accelerator(functools.partial(loss_with, sizes[0]), functools.partial(loss_with, sizes[1]), *args)
