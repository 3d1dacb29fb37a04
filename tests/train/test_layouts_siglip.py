"""The training step with a SigLIP vision tower is the same computation on 1 and 4 devices with dropout on:
fine-tuning from pixels through the frozen tower in the step, pre-training from cached features ([1+S, v] =
[pooled ; patches]); and the tower (attention-pooling head included) never trains. The helpers are the CLIP layout
test's (test_layouts.py); fewer runs, so that it stays quick."""
import json
import sys

import flax
import jax
import numpy as np
import pytest
from test_layouts import BATCH, STEPS, WORKER, _assert_same, _launch

sys.path.insert(0, str(WORKER.parent))
from step_worker import global_batch_for, small_config  # noqa: E402

# fine-tuning from pixels (the frozen tower inside the step) and pre-training from cached features
RUNS = {"pixels": dict(phase="finetune", group=4, pixels=True), "pretrain": dict(phase="pretrain", group=4)}
DEVICES = (1, 4)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{devices: {run: (metrics, final params)}}; both layouts launched at once so that compilations overlap."""
    out = tmp_path_factory.mktemp("layouts_siglip")
    procs = {}
    for devices in DEVICES:
        spec = [dict(r, vision="siglip", steps=STEPS, batch=BATCH, params_out=str(out / f"{devices}_{n}.npz"))
                for n, r in RUNS.items()]
        procs[devices] = _launch(spec, devices)
    results = {}
    for devices, p in procs.items():
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, f"{devices} devices: {stderr[-3000:]}"
        rows = json.loads(stdout.strip().splitlines()[-1])
        results[devices] = {n: (r, dict(np.load(out / f"{devices}_{n}.npz"))) for n, r in zip(RUNS, rows)}
    return results


def test_the_worker_trains_the_siglip_tower():
    config = small_config("siglip")
    assert config.vision.model_type == "siglip"
    batch = global_batch_for(0, BATCH, config, "finetune", pixels=False)
    assert batch["vision_features"].shape == (BATCH, 1 + config.vision.num_patches, config.vision.hidden_size)


@pytest.mark.parametrize("run", list(RUNS))
def test_four_devices_equal_one_with_dropout_on(results, run):
    assert results[4][run][0]["devices"] == 4
    _assert_same(results[4][run], results[1][run], f"siglip 4/{run}")


@pytest.mark.parametrize("run", ["pretrain", "pixels"])
def test_only_the_phases_parts_train(results, run):
    """The SigLIP tower (its probe and attention-pooling head included) keeps its initial values."""
    import mire_jax
    init = {"/".join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(
        jax.device_get(mire_jax.init_params(small_config("siglip"), jax.random.PRNGKey(0)))).items()}
    final = results[1][run][1]
    assert init.keys() == final.keys() and "vision/head/probe" in init
    trains = ("pooling/",) if run == "pretrain" else ("pooling/", "bert/", "linear/")
    changed = {name for name in init if not np.array_equal(init[name], final[name])}
    assert changed == {name for name in init if name.startswith(trains) and not name.startswith("bert/pooler/")}
