"""The training step is the same computation on 1, 2, 4 and 8 devices and on 2 processes x 2 devices, with
dropout on (the default), for negatives groups smaller than, equal to and larger than a device's share of the
batch, and with gradient accumulation: losses and final params agree to 1e-5 over 5 steps.

Per-device examples of the global batch of 16: 16 (1 device), 8, 4 (4 devices and 2 x 2), 2 (8 devices).
Groups of 4 are smaller than, equal to or larger than that; groups of 16 equal to or larger.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(__file__).with_name("step_worker.py")
sys.path.insert(0, str(WORKER.parent))
from step_worker import small_config  # noqa: E402

STEPS, BATCH = 5, 16
GROUPS = {"g4": dict(phase="finetune", group=4), "g16": dict(phase="finetune", group=16)}
EXTRA = {  # runs on some layouts only: the pre-training step, the frozen tower on pixels, accumulation
    "pretrain": dict(phase="pretrain", group=4),
    "pixels": dict(phase="finetune", group=4, pixels=True),
    "accum": dict(phase="finetune", group=4, accum=2),
}
LAYOUTS = {"1": (1, ["pretrain", "pixels", "accum"]), "2": (2, []), "4": (4, ["accum"]),
           "8": (8, ["pretrain", "pixels"]), "2x2": (2, ["pretrain"])}


def _launch(runs, devices, *dist):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", PYTHONPATH=str(ROOT),
               JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, str(WORKER), json.dumps(runs), *map(str, dist)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{layout: {run: (per-step metrics, final params)}}; every layout launched at once so compilations overlap."""
    out = tmp_path_factory.mktemp("layouts")

    def runs(layout, extra):
        names = list(GROUPS) + extra
        spec = [dict({**GROUPS, **EXTRA}[n], steps=STEPS, batch=BATCH, params_out=str(out / f"{layout}_{n}.npz"))
                for n in names]
        return names, spec

    procs = {}
    for layout, (devices, extra) in LAYOUTS.items():
        names, spec = runs(layout, extra)
        if layout == "2x2":
            port = _free_port()
            procs[layout] = (names, [_launch(spec, devices, f"127.0.0.1:{port}", 2, p) for p in (0, 1)])
        else:
            procs[layout] = (names, [_launch(spec, devices)])
    results = {}
    for layout, (names, ps) in procs.items():
        outputs = []
        for p in ps:
            stdout, stderr = p.communicate(timeout=900)
            assert p.returncode == 0, f"{layout}: {stderr[-3000:]}"
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
        assert all(o == outputs[0] for o in outputs)  # every process reports the same global metrics
        results[layout] = {n: (r, dict(np.load(out / f"{layout}_{n}.npz"))) for n, r in zip(names, outputs[0])}
    return results


# Its gradient is zero in exact arithmetic (a constant shift of every logit of a softmax row), so Adam turns
# float rounding into lr-sized steps of either sign, in any layout and in PyTorch alike.
ROUNDING_DRIVEN = "/attention/key/bias"


def _assert_same(a, b, what, tol=1e-5):
    (ma, pa), (mb, pb) = a, b
    assert len(ma["metrics"]) == len(mb["metrics"]) == STEPS
    for step, (x, y) in enumerate(zip(ma["metrics"], mb["metrics"])):
        for key in ("loss", "accuracy", "grad_norm"):
            assert abs(x[key] - y[key]) <= tol * max(1.0, abs(y[key])), (what, step, key, x[key], y[key])
    assert pa.keys() == pb.keys()
    for name in pa:
        if name.endswith(ROUNDING_DRIVEN):
            continue
        diff = float(np.max(np.abs(pa[name] - pb[name])))
        assert diff <= tol * max(1.0, float(np.max(np.abs(pb[name])))), (what, name, diff)


@pytest.mark.parametrize("layout", ["2", "4", "8", "2x2"])
@pytest.mark.parametrize("run", list(GROUPS))
def test_layouts_equal_one_device_with_dropout_on(results, layout, run):
    assert results[layout][run][0]["devices"] == LAYOUTS[layout][0] * (2 if layout == "2x2" else 1)
    _assert_same(results[layout][run], results["1"][run], f"{layout}/{run}")


@pytest.mark.parametrize("layout,run", [("8", "pretrain"), ("2x2", "pretrain"), ("8", "pixels"), ("4", "accum")])
def test_other_step_kinds_equal_one_device(results, layout, run):
    _assert_same(results[layout][run], results["1"][run], f"{layout}/{run}")


def test_accumulating_whole_groups_equals_one_update(results):
    """Two micro-batches of whole groups, dropout keyed by global position: the same update as one batch."""
    _assert_same(results["1"]["accum"], results["1"]["g4"], "accum")


def test_group_size_and_dropout_matter(results):
    """The runs above would agree trivially if the group size or the dropout did nothing."""
    g4, g16 = results["1"]["g4"][0]["metrics"], results["1"]["g16"][0]["metrics"]
    assert all(a["loss"] < b["loss"] - 1e-3 for a, b in zip(g4, g16))  # fewer negatives, lower loss
    assert len({round(m["loss"], 6) for m in g4}) == STEPS


@pytest.mark.parametrize("run", ["pretrain", "g4"])
def test_frozen_parts_keep_their_initial_values(results, run):
    """Pre-training trains the pooling head only; fine-tuning also BERT and the projection; never the vision
    tower or the BERT pooler. Compared with the initial params the worker starts from."""
    import mire_jax
    init = {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(
        jax.device_get(mire_jax.init_params(small_config(), jax.random.PRNGKey(0)))).items()}
    final = results["1"][run][1]
    trains = ("pooling/",) if run == "pretrain" else ("pooling/", "bert/", "linear/")
    assert init.keys() == final.keys()
    changed = {name for name in init if not np.array_equal(init[name], final[name])}
    frozen = {name for name in init if not name.startswith(trains) or name.startswith("bert/pooler/")}
    assert not changed & frozen, sorted(changed & frozen)
    assert changed == set(init) - frozen
