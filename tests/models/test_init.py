"""A new pooling head starts as the published module's `_init_weights` leaves it: every linear weight
xavier-uniform (U(+-sqrt(6 / (fan_in + fan_out)))), every bias zero, LayerNorms at weight 1 and bias 0."""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from mire_jax.config import HeadConfig
from mire_jax.models.pooling import AttentivePooling


def test_pooling_head_init_follows_the_published_rule():
    head, v_dim, patches = HeadConfig(), 768, 49  # the published base sizes
    module = AttentivePooling(head, v_dim)
    t = jnp.zeros((1, 4, head.dim))
    v = jnp.zeros((1, patches + 1, v_dim))
    params = traverse_util.flatten_dict(module.init(jax.random.PRNGKey(0), t, v, jnp.ones((1, 4)))["params"])
    kernels = {k[0]: np.asarray(w) for k, w in params.items() if k[-1] == "kernel"}
    assert sorted(kernels) == ["k_state", "o_proj_1", "proj_1", "split_mlp_0", "split_mlp_2", "v_state"]
    for name, w in kernels.items():
        fan_in, fan_out = w.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        n = w.size
        assert np.abs(w).max() <= bound * (1 + 1e-6), name                 # float32 rounding of the bound
        assert np.abs(w).max() > bound * (1 - 20.0 / n), name           # reaches the edge of its range
        assert abs(w.mean()) < 5 * (bound / math.sqrt(3)) / math.sqrt(n), name
        assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound / math.sqrt(3), name  # uniform's std
        below = np.mean(w < 0.5 * bound)                                  # the uniform CDF at bound / 2
        assert abs(below - 0.75) < 5 * math.sqrt(0.75 * 0.25 / n), name
    biases = {k[0]: np.asarray(b) for k, b in params.items() if k[-1] == "bias" and not k[0].startswith(("proj_0",
                                                                                                         "o_proj_0"))}
    assert sorted(biases) == ["o_proj_1", "proj_1", "split_mlp_0", "split_mlp_2"]
    assert all(not b.any() for b in biases.values())
    for ln in ("proj_0", "o_proj_0"):
        assert np.all(np.asarray(params[(ln, "scale")]) == 1) and not np.asarray(params[(ln, "bias")]).any()
