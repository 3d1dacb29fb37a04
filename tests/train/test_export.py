"""What a pod executes lowers for TPU and GPU on this CPU machine (jax.export), and carries no CPU-only path:
the platform choices (the blocked CPU attention, cache-sized MaxSim blocks) are made at lowering time, so a
program lowered for TPU and GPU holds the accelerator branches only, and one lowered for CPU the CPU ones."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(__file__).with_name("export_worker.py")
CPU_ONLY_CALLS = ("lapack", "ducc", "cpu")  # custom-call targets that exist only in XLA:CPU


@pytest.fixture(scope="module")
def lowered():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(WORKER.parent)]))
    proc = subprocess.run([sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("program", ["train_step_pretrain", "train_step_finetune", "encode_query", "encode_doc"])
def test_lowers_for_tpu_and_gpu_without_a_cpu_path(lowered, program):
    assert lowered["devices"] == 8
    pod, cpu = lowered[program]["tpu+cuda"], lowered[program]["cpu"]
    assert pod["accelerator_path"] and not pod["cpu_path"]
    assert cpu["cpu_path"] and not cpu["accelerator_path"]  # the marks are real: a CPU lowering shows its own
    assert not [c for c in pod["custom_calls"] if any(tag in c.lower() for tag in CPU_ONLY_CALLS)]
