"""The training step is the same computation on 1 device, 8 devices (shard_map and pmap) and 2 hosts."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mire_jax.scoring import in_batch_loss

WORKER = pathlib.Path(__file__).with_name("step_worker.py")
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _launch(runs, devices, *dist):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONPATH=str(ROOT),
               JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, str(WORKER), json.dumps(runs), *map(str, dist)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc):
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PRETRAIN = {"phase": "pretrain", "steps": 5, "batch": 16}
FINETUNE = {"phase": "finetune", "steps": 3, "batch": 16}


@pytest.fixture(scope="module")
def results():
    """All configurations, launched at once so their compilations overlap."""
    port = _free_port()
    multi = [{"mode": "shard_map", "phase": "finetune", "steps": 3, "batch": 8}]
    procs = {
        "one": _launch([dict(PRETRAIN, mode="single"), dict(FINETUNE, mode="single")], 1),
        "eight": _launch([dict(PRETRAIN, mode="shard_map"), dict(PRETRAIN, mode="pmap"),
                          dict(FINETUNE, mode="shard_map", block=4)], 8),
        "four": _launch(multi, 4),
        "host0": _launch(multi, 2, f"127.0.0.1:{port}", 2, 0),
        "host1": _launch(multi, 2, f"127.0.0.1:{port}", 2, 1),
    }
    return {name: _result(p) for name, p in procs.items()}


def _same_run(a, b, tol=1e-5):
    for step, (x, y) in enumerate(zip(a["metrics"], b["metrics"], strict=True)):
        for key in ("loss", "accuracy", "grad_norm"):
            assert abs(x[key] - y[key]) <= tol * max(1.0, abs(y[key])), (step, key, x[key], y[key])
    for name, value in a["sum_sq"].items():
        assert abs(value - b["sum_sq"][name]) <= tol * max(1.0, abs(value)), name


def test_eight_devices_shard_map_equals_one_device(results):
    assert results["eight"][0]["devices"] == 8 and results["one"][0]["devices"] == 1
    _same_run(results["eight"][0], results["one"][0])


def test_pmap_equals_shard_map(results):
    _same_run(results["eight"][1], results["eight"][0])


def test_blocked_maxsim_on_eight_devices_equals_one_device_finetune(results):
    _same_run(results["eight"][2], results["one"][1])


def test_two_hosts_equal_one_host(results):
    host0, host1, single = results["host0"][0], results["host1"][0], results["four"][0]
    assert host0["devices"] == 4 and single["devices"] == 4
    _same_run(host0, single)
    _same_run(host1, single)


def test_frozen_parts_are_bit_identical_and_trainable_ones_change(results):
    """Pre-training trains the pooling head only; fine-tuning also BERT and the projection; never the vision
    tower or the BERT pooler (the worker starts every run from the same init)."""
    pre, fine = results["one"][0]["sum_sq"], results["one"][1]["sum_sq"]
    for name in pre:
        if name.startswith("vision/") or name.startswith("bert/pooler/"):
            assert pre[name] == fine[name], name
        if name.startswith(("bert/", "linear/")):
            assert pre[name] != fine[name] or "pooler" in name, name  # frozen in pre-training, trained after
    changed = [n for n in pre if n.startswith("pooling/") and pre[n] != fine[n]]
    assert len(changed) > 5


def test_blocked_loss_and_gradients_equal_unblocked():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(8, 6, 16)), jnp.float32)
    d = jnp.asarray(rng.normal(size=(8, 11, 16)), jnp.float32)
    mask = jnp.asarray(rng.random((8, 11)) > 0.3)

    def loss(q, d, block):
        return in_batch_loss(q, d, mask, 0.3, block=block)[0]
    for block in (2, 4):
        np.testing.assert_allclose(loss(q, d, block), loss(q, d, None), rtol=1e-6)
        g_blocked = jax.grad(loss, argnums=(0, 1))(q, d, block)
        g_full = jax.grad(loss, argnums=(0, 1))(q, d, None)
        for a, b in zip(g_blocked, g_full):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # float32 summation order
