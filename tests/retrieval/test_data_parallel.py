"""DataParallel: fixed-size batches split over this process's devices, the padding rows dropped."""
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from mire_jax.retrieval.data_parallel import DataParallel

REPO = pathlib.Path(__file__).resolve().parents[2]


@jax.jit
def _affine(params, x, mask):
    return {"y": x * params["w"] + params["b"], "kept": mask.sum(axis=1)}


def _inputs(rows):
    x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    mask = np.arange(3)[None, :] < (np.arange(rows) % 4)[:, None]
    return x, mask


def test_rows_run_in_fixed_batches_and_padding_is_dropped():
    shapes = []

    def fn(params, x, mask):
        shapes.append(x.shape)
        return _affine(params, x, mask)

    run = DataParallel(fn, {"w": np.float32(2), "b": np.float32(1)}, batch_size=4)
    x, mask = _inputs(10)
    out = run(x, mask)
    np.testing.assert_array_equal(out["y"], 2 * x + 1)
    np.testing.assert_array_equal(out["kept"], mask.sum(axis=1))
    assert shapes == [(4, 3)] * 3  # one compiled shape: the last batch of 2 rows is padded
    empty = run(x[:0], mask[:0])
    assert empty["y"].shape == (0, 3) and empty["kept"].shape == (0,)
    with pytest.raises(ValueError, match="different numbers of rows"):
        run(x, mask[:3])


_TWO_DEVICES = """
import jax, numpy as np
from mire_jax.retrieval.data_parallel import DataParallel
from tests.retrieval.test_data_parallel import _affine, _inputs
placements = []
def fn(params, x, mask):
    placements.append((len(x.addressable_shards), x.addressable_shards[0].data.shape[0],
                       len(params["w"].addressable_shards)))
    return _affine(params, x, mask)
run = DataParallel(fn, {"w": np.float32(2), "b": np.float32(1)}, batch_size=5)
assert len(jax.local_devices()) == 2 and run.batch_size == 6, run.batch_size
x, mask = _inputs(7)
out = run(x, mask)
np.testing.assert_array_equal(out["y"], 2 * x + 1)
np.testing.assert_array_equal(out["kept"], mask.sum(axis=1))
assert placements == [(2, 3, 2)] * 2, placements  # rows split in halves, parameters on both devices
print("ok")
"""


def test_batches_are_split_over_two_devices():
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", _TWO_DEVICES], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
