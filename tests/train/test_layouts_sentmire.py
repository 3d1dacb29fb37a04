"""SentMIRe's training step (the ModernBERT text tower with every dropout on, local attention in play) is the same
computation on 1 device and on 4: losses and final params agree to 1e-5 over 3 steps, in fine-tuning and in the
published SentMIRe pre-training (pooling head and projection trained). What trains is checked, and that the tower's
dropout changes its outputs, so the agreement is not trivial. Runs tests/train/step_worker.py as
tests/train/test_layouts.py does.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(__file__).with_name("step_worker.py")
STEPS, BATCH = 3, 16
RUNS = {
    "finetune": dict(phase="finetune", group=4),
    "pretrain": dict(phase="pretrain", group=8, trainable=["pooling", "linear"]),
}
LAYOUTS = {"1": (1, ["finetune", "pretrain"]), "4": (4, ["finetune", "pretrain"])}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("layouts_sentmire")
    procs = {}
    for layout, (devices, names) in LAYOUTS.items():
        spec = [dict(RUNS[n], steps=STEPS, batch=BATCH, text="modernbert", params_out=str(out / f"{layout}_{n}.npz"))
                for n in names]
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONPATH=str(ROOT),
                   JAX_PLATFORMS="cpu")
        procs[layout] = (names, subprocess.Popen([sys.executable, str(WORKER), json.dumps(spec)], env=env,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = {}
    for layout, (names, p) in procs.items():
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, f"{layout}: {stderr[-3000:]}"
        runs = json.loads(stdout.strip().splitlines()[-1])
        results[layout] = {n: (r, dict(np.load(out / f"{layout}_{n}.npz"))) for n, r in zip(names, runs)}
    return results


def _assert_same(a, b, what, tol=1e-5):
    (ma, pa), (mb, pb) = a, b
    for step, (x, y) in enumerate(zip(ma["metrics"], mb["metrics"])):
        for key in ("loss", "accuracy", "grad_norm"):
            assert abs(x[key] - y[key]) <= tol * max(1.0, abs(y[key])), (what, step, key, x[key], y[key])
    assert pa.keys() == pb.keys()
    for name in pa:
        diff = float(np.max(np.abs(pa[name] - pb[name])))
        assert diff <= tol * max(1.0, float(np.max(np.abs(pb[name])))), (what, name, diff)


@pytest.mark.parametrize("run", ["finetune", "pretrain"])
def test_four_devices_equal_one_with_dropout_on(results, run):
    assert results["4"][run][0]["devices"] == 4
    _assert_same(results["4"][run], results["1"][run], run)


def test_what_trains_and_that_dropout_matters(results):
    """Fine-tuning moves the ModernBERT; the published pre-training moves the projection and the head, not the
    ModernBERT; the vision tower never moves; the tower's dropout (embedding, attention, MLP) changes its outputs,
    by example position, not by batch row."""
    import flax
    import jax

    import mire_jax
    sys.path.insert(0, str(WORKER.parent))
    from step_worker import small_config
    initial = {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(
        jax.device_get(mire_jax.init_params(small_config(text="modernbert"), jax.random.PRNGKey(0)))).items()}
    tuned, pre = results["1"]["finetune"][1], results["1"]["pretrain"][1]
    moved = lambda params, name: float(np.max(np.abs(params[name] - initial[name]))) > 1e-5
    for name in initial:
        part = name.split("/")[0]
        assert moved(tuned, name) == (part != "vision"), name
        assert moved(pre, name) == (part in ("pooling", "linear")), name
    from mire_jax.models.modernbert import ModernBert
    config = small_config(text="modernbert").modernbert
    bert = {"params": flax.traverse_util.unflatten_dict(
        {tuple(k.split("/")[1:]): v for k, v in initial.items() if k.startswith("bert/")})}
    ids = np.tile(np.arange(3, 13, dtype=np.int32), (2, 1))
    mask = np.ones_like(ids)
    apply = lambda deterministic, positions=None: np.asarray(ModernBert(config).apply(
        bert, ids, mask, deterministic, positions, rngs={"dropout": jax.random.PRNGKey(2)})[0])
    off, on = apply(True), apply(False, np.array([5, 9], np.uint32))
    assert float(np.max(np.abs(on - off))) > 1e-2 and float(np.max(np.abs(on[0] - on[1]))) > 1e-2
    np.testing.assert_allclose(apply(False, np.array([9, 5], np.uint32))[::-1], on, atol=1e-6)
