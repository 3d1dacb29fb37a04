"""Lowers what a pod executes for TPU and GPU on this CPU machine with `jax.export`, and prints what each lowered
program carries as JSON: the training step of both phases (shard_map over every device, dropout on) and the
query and passage encoders. Run with 8 host devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)."""
import json
import re
import sys

import jax
import jax.numpy as jnp
from jax import export
from step_worker import global_batch_for, small_config

import mire_jax
from mire_jax.train.optim import learning_rate_schedule, make_optimizer
from mire_jax.train.step import DataParallelStep, StepConfig, init_state

BATCH = 16


def describe(fn, args, platforms):
    text = export.export(fn, platforms=platforms)(*args).mlir_module()
    return {"cpu_path": "cpu_path" in text, "accelerator_path": "accelerator_path" in text,
            "custom_calls": sorted(set(re.findall(r"custom_call @([\w.$-]+)", text)))}


def abstract(tree):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding",
                                                                                                    None)), tree)


def programs(config, params):
    for phase in ("pretrain", "finetune"):
        tx = make_optimizer(1e-4, 10, 0.0)
        step = DataParallelStep(config, StepConfig(phase=phase, temperature=0.3, negatives_group=4, dropout=True), tx,
                                learning_rate_schedule(1e-4, 10), BATCH)
        state, frozen = init_state(params, phase, tx, jax.random.PRNGKey(1))
        state, frozen = step.prepare(state), step.prepare(frozen)
        batch = step.global_batch(global_batch_for(0, BATCH, config, phase, pixels=phase == "finetune"))
        yield f"train_step_{phase}", step._step, abstract((state, frozen, batch))
    b = global_batch_for(0, 4, config, "finetune", pixels=True)
    query = jax.jit(lambda p, ids, mask, px: mire_jax.encode_query(config, p, ids, mask, px))
    yield "encode_query", query, abstract((params, jnp.asarray(b["q_ids"]), jnp.asarray(b["q_mask"]),
                                           jnp.asarray(b["pixels"])))
    doc = jax.jit(lambda p, ids, mask, keep: mire_jax.encode_doc(config, p, ids, mask, keep))
    yield "encode_doc", doc, abstract((params, jnp.asarray(b["d_ids"]), jnp.asarray(b["d_mask"]),
                                       jnp.asarray(b["d_keep"])))


def main():
    config = small_config()
    params = mire_jax.init_params(config, jax.random.PRNGKey(0))
    out = {"devices": jax.device_count()}
    for name, fn, args in programs(config, params):
        out[name] = {"+".join(p): describe(fn, args, p) for p in (("tpu", "cuda"), ("cpu",))}
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
