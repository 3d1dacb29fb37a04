"""The optimizer and learning-rate schedule, step by step against PyTorch's AdamW and the published
constant-with-warm-up schedule (transformers' get_constant_schedule_with_warmup)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from mire_jax.train.optim import learning_rate_schedule, make_optimizer


@pytest.mark.parametrize("lr,warmup,weight_decay", [(1e-4, 300, 0.0), (5e-5, 10, 0.0), (2e-5, 4, 0.01)])
def test_adamw_with_warmup_matches_torch_step_by_step(lr, warmup, weight_decay):
    rng = np.random.default_rng(0)
    start = {"w": rng.normal(size=(5, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) * (1 + i) for k, v in start.items()} for i in range(12)]

    torch_params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in start.items()}
    opt = torch.optim.AdamW(torch_params.values(), lr=lr, weight_decay=weight_decay, eps=1e-8)  # published call
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: step / max(1, warmup) if step < warmup else 1.0)

    tx = make_optimizer(lr, warmup, weight_decay)
    schedule = learning_rate_schedule(lr, warmup)
    params = jax.tree_util.tree_map(jnp.asarray, start)
    state = tx.init(params)
    for step, g in enumerate(grads):
        assert abs(float(schedule(step)) - opt.param_groups[0]["lr"]) <= 1e-12 + 1e-6 * lr, step
        for k, p in torch_params.items():
            p.grad = torch.tensor(g[k])
        opt.step()
        sched.step()
        updates, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, params)
        params = optax.apply_updates(params, updates)
        for k, p in torch_params.items():
            np.testing.assert_allclose(np.asarray(params[k]), p.detach().numpy(), rtol=1e-6, atol=1e-7,
                                       err_msg=f"step {step} {k}")
    if warmup > len(grads):  # still warming up: the first update moved nothing, later ones grew linearly
        assert float(schedule(0)) == 0.0 and float(schedule(len(grads))) == pytest.approx(lr * len(grads) / warmup)
