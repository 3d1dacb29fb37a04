"""MaxSim's backward routing and the automatic block size of the loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mire_jax.models.blocks import CPU_BLOCK_ELEMENTS
from mire_jax.scoring import auto_maxsim_block, maxsim


def test_ties_route_the_gradient_to_the_first_best_token_like_argmax():
    """A passage with every token masked ties everywhere, and duplicated tokens tie exactly: the gradient
    of each query token goes to the first of the tied tokens only (what argmax and PyTorch's max pick)."""
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    d = np.asarray(rng.normal(size=(3, 5, 4)), np.float32)
    d[1, 1] = d[1, 3] = 10 * np.asarray(q[0, 0])  # an exact duplicate, the best match of query 0's token 0
    d = jnp.asarray(d)
    mask = np.ones((3, 5), bool)
    mask[2] = False                         # all masked: every token scores the same
    mask = jnp.asarray(mask)

    def reference(q, d):
        s = jnp.where(mask[None, :, None, :], jnp.einsum("qnd,pld->qpnl", q, d), -9999.0)
        best = jnp.argmax(s, axis=-1)
        picked = jnp.take_along_axis(s, best[..., None], axis=-1)[..., 0]
        return picked.sum(-1)

    weights = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    got = jax.grad(lambda q, d: jnp.sum(maxsim(q, d, mask) * weights), argnums=(0, 1))(q, d)
    want = jax.grad(lambda q, d: jnp.sum(reference(q, d) * weights), argnums=(0, 1))(q, d)
    np.testing.assert_allclose(maxsim(q, d, mask), reference(q, d), rtol=1e-6)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("bq,nq,bd,ld", [(32, 39, 32, 256), (8, 32, 64, 256), (1, 4, 7, 3), (64, 64, 12, 512)])
def test_auto_block_divides_the_passages_and_fits_the_cpu_budget(bq, nq, bd, ld):
    block = auto_maxsim_block(bq, nq, bd, ld, CPU_BLOCK_ELEMENTS)
    assert bd % block == 0
    assert block == 1 or block * bq * nq * ld <= CPU_BLOCK_ELEMENTS
    bigger = [b for b in range(block + 1, bd + 1) if bd % b == 0]
    assert not bigger or bigger[0] * bq * nq * ld > CPU_BLOCK_ELEMENTS


@pytest.mark.parametrize("group", [None, 4])
def test_blocked_loss_and_gradients_equal_unblocked(group):
    from mire_jax.scoring import in_batch_loss
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(8, 6, 16)), jnp.float32)
    d = jnp.asarray(rng.normal(size=(8, 11, 16)), jnp.float32)
    mask = jnp.asarray(rng.random((8, 11)) > 0.3)

    def loss(q, d, block):
        return in_batch_loss(q, d, mask, 0.3, group_size=group, block=block)[0]
    for block in (2, 4):
        np.testing.assert_allclose(loss(q, d, block), loss(q, d, None), rtol=1e-6)
        g_blocked = jax.grad(loss, argnums=(0, 1))(q, d, block)
        g_full = jax.grad(loss, argnums=(0, 1))(q, d, None)
        for a, b in zip(g_blocked, g_full):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # float32 summation order


def test_groups_that_do_not_fit_the_devices_are_refused():
    from mire_jax.scoring import in_batch_loss
    from mire_jax.train.step import BatchLayout
    x = jnp.zeros((6, 2, 4))
    with pytest.raises(ValueError, match="do not split"):
        in_batch_loss(x, x, jnp.ones((6, 2)), 0.3, group_size=4)
    with pytest.raises(ValueError, match="group_axis"):
        in_batch_loss(x, x, jnp.ones((6, 2)), 0.3, group_size=12)
    with pytest.raises(ValueError, match="negatives_group 48 must divide"):
        BatchLayout(512, 4, 1, 48)
    with pytest.raises(ValueError, match="one must divide the other"):
        BatchLayout(96, 8, 1, 32)                  # 12 per device, groups of 32
    assert BatchLayout(512, 8, 2, 128).group_devices == 4 and BatchLayout(512, 1, 1, 128).group_devices == 1
