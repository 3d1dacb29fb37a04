"""Runs a few training steps of a tiny MIRe in one configuration and prints the per-step metrics as JSON.

Used by the layout tests in subprocesses (the device count is fixed when jax starts):
  python step_worker.py RUNS_JSON [COORDINATOR NUM_PROCESSES PROCESS_ID]
RUNS_JSON: a list of {"phase", "steps", "batch", "group", "accum", "block", "dropout", "pixels", "vision", "text",
"trainable", "params_out"} ("vision": "clip" or "siglip", the tower of the tiny model; "text": "bert" or
"modernbert", the SentMIRe tower with every dropout at 0.1);
prints one JSON list of results; with "params_out", process 0 saves the final params there (npz, flattened names).
Batches carry cached vision features unless "pixels" (then the frozen tower runs in the step).
"""
import dataclasses
import json
import sys

import flax
import jax
import numpy as np

import mire_jax
from mire_jax.hosts import initialize_distributed
from mire_jax.train.optim import learning_rate_schedule, make_optimizer
from mire_jax.train.step import DataParallelStep, StepConfig, full_params, init_state


def global_batch_for(step, global_batch, config, phase, pixels):
    """The whole global batch of a step, in global-batch order (the same on every layout)."""
    rng = np.random.default_rng(1000 + step)
    lq, ld, v = 8, 10, config.text.vocab_size
    b = {"q_ids": rng.integers(5, v, (global_batch, lq)).astype(np.int32),
         "q_mask": (np.arange(lq)[None] < rng.integers(2, lq + 1, (global_batch, 1))).astype(np.int32),
         "d_ids": rng.integers(5, v, (global_batch, ld)).astype(np.int32),
         "d_mask": (np.arange(ld)[None] < rng.integers(3, ld + 1, (global_batch, 1))).astype(np.int32)}
    b["d_keep"] = b["d_mask"].astype(bool) & (rng.random((global_batch, ld)) > 0.1)
    if not pixels:
        s = config.vision.num_patches + 1
        b["vision_features"] = rng.normal(size=(global_batch, s, config.vision.hidden_size)).astype(np.float32)
    else:
        size = config.vision.image_size
        b["pixels"] = rng.normal(size=(global_batch, size, size, 3)).astype(np.float32)
    return b


def process_share(batch, accum, process_index, process_count):
    """This process's examples of each micro-batch, micro-batch after micro-batch (the input pipeline's layout)."""
    def share(x):
        micro = x.reshape(accum, x.shape[0] // accum, *x.shape[1:])
        per = micro.shape[1] // process_count
        return micro[:, process_index * per:(process_index + 1) * per].reshape(-1, *x.shape[1:])
    return {k: share(x) for k, x in batch.items()}


def small_config(vision="clip", text="bert"):
    """The tiny test towers cut short (the text tower to one layer, the vision tower to two): every part of the step,
    compiled quickly. `vision`: the CLIP or the SigLIP tiny tower. `text`: BERT, or SentMIRe's ModernBERT keeping
    its global and local layer (a window of 2 either way, shorter than the 8 and 10 tokens) with every dropout on."""
    if text == "modernbert":
        config = mire_jax.MIReConfig.tiny(text=text)
        return config.replace(modernbert=dataclasses.replace(config.modernbert, num_hidden_layers=2,
                                                             embedding_dropout=0.1, attention_dropout=0.1,
                                                             mlp_dropout=0.1),
                              vision=dataclasses.replace(config.vision, num_hidden_layers=2))
    config = mire_jax.MIReConfig.tiny_siglip() if vision == "siglip" else mire_jax.MIReConfig.tiny()
    return config.replace(bert=dataclasses.replace(config.bert, num_hidden_layers=1),
                          vision=dataclasses.replace(config.vision, num_hidden_layers=2))


def run(phase, steps, batch, group=0, accum=1, block=0, dropout=True, pixels=False, vision="clip", params_out=None,
        text="bert", trainable=None):
    config = small_config(vision, text)
    params = mire_jax.init_params(config, jax.random.PRNGKey(0))
    step_cfg = StepConfig(phase=phase, temperature=0.3 if phase == "pretrain" else 0.8, negatives_group=group,
                          maxsim_block=block, accum_steps=accum, dropout=dropout)
    tx = make_optimizer(1e-3, 2, 0.01)
    step = DataParallelStep(config, step_cfg, tx, learning_rate_schedule(1e-3, 2), batch)
    state, frozen_host = init_state(params, phase, tx, jax.random.PRNGKey(1), tuple(trainable) if trainable else None)
    state, frozen = step.prepare(state), step.prepare(frozen_host)
    out = []
    for i in range(steps):
        local = process_share(global_batch_for(i, batch, config, phase, pixels), accum, jax.process_index(),
                              jax.process_count())
        state, m = step(state, frozen, local)
        out.append({k: float(v) for k, v in m.items()})
    final = flax.traverse_util.flatten_dict(full_params(jax.device_get(state), frozen_host))
    if params_out and jax.process_index() == 0:
        np.savez(params_out, **{"/".join(k): np.asarray(v) for k, v in final.items()})
    return {"metrics": out, "devices": jax.device_count(), "processes": jax.process_count()}


def main():
    if len(sys.argv) > 2:
        initialize_distributed(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    print(json.dumps([run(**r) for r in json.loads(sys.argv[1])]))


if __name__ == "__main__":
    main()
