"""Runs a few training steps of a tiny MIRe in one configuration and prints the per-step metrics as JSON.

Used by the parallelism tests in subprocesses (the device count is fixed when jax starts):
  python step_worker.py RUNS_JSON [COORDINATOR NUM_PROCESSES PROCESS_ID]
RUNS_JSON: a list of {"mode", "phase", "steps", "batch", "block", "accum"}; prints one JSON list of results.
"""
import json
import sys

import flax
import jax
import numpy as np

import mire_jax
from mire_jax.optim import learning_rate_schedule, make_optimizer
from mire_jax.parallel import data_mesh, initialize_distributed
from mire_jax.train_step import DataParallelStep, StepConfig, full_params, init_state


def batch_for(step, global_batch, config, phase, process_index, process_count):
    rng = np.random.default_rng(1000 + step)
    lq, ld, v = 8, 10, config.bert.vocab_size
    b = {"q_ids": rng.integers(5, v, (global_batch, lq)).astype(np.int32),
         "q_mask": (np.arange(lq)[None] < rng.integers(2, lq + 1, (global_batch, 1))).astype(np.int32),
         "d_ids": rng.integers(5, v, (global_batch, ld)).astype(np.int32),
         "d_mask": (np.arange(ld)[None] < rng.integers(3, ld + 1, (global_batch, 1))).astype(np.int32)}
    b["d_keep"] = b["d_mask"].astype(bool) & (rng.random((global_batch, ld)) > 0.1)
    if phase == "pretrain":
        s = config.vision.num_patches + 1
        b["vision_features"] = rng.normal(size=(global_batch, s, config.vision.hidden_size)).astype(np.float32)
    else:
        size = config.vision.image_size
        b["pixels"] = rng.normal(size=(global_batch, size, size, 3)).astype(np.float32)
    per = global_batch // process_count
    return {k: x[process_index * per:(process_index + 1) * per] for k, x in b.items()}


def run(mode, phase, steps, batch, block=0, accum=1):
    config = mire_jax.MIReConfig.tiny()
    params = mire_jax.init_params(config, jax.random.PRNGKey(0))
    step_cfg = StepConfig(phase=phase, temperature=0.3 if phase == "pretrain" else 0.8, maxsim_block=block,
                          accum_steps=accum, dropout=False)
    tx = make_optimizer(1e-3, 2, 0.01)
    step = DataParallelStep(config, step_cfg, tx, learning_rate_schedule(1e-3, 2), data_mesh(), mode)
    state, frozen = init_state(params, phase, tx, jax.random.PRNGKey(1))
    frozen_host = frozen
    state, frozen = step.prepare(state), step.prepare(frozen)
    out = []
    for i in range(steps):
        state, m = step(state, frozen, batch_for(i, batch, config, phase, jax.process_index(), jax.process_count()))
        out.append({k: float(v) for k, v in m.items()})
    final = full_params(jax.device_get(step.host_state(state)), frozen_host)
    flat = flax.traverse_util.flatten_dict(final)
    return {"metrics": out, "devices": jax.device_count(),
            "sum_sq": {"/".join(k): float(np.sum(np.asarray(v, np.float64) ** 2)) for k, v in flat.items()}}


def main():
    if len(sys.argv) > 2:
        initialize_distributed(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    print(json.dumps([run(**r) for r in json.loads(sys.argv[1])]))


if __name__ == "__main__":
    main()
