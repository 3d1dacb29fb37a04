"""The jitted training step: one per-device function (axis `data`), run by `shard_map` over a Mesh (default) or
by `pmap`. Only the trainable part of the params is differentiated; the frozen vision tower runs outside the
gradient. A step with a non-finite loss or gradient leaves the params and optimizer untouched and records its
step number in the state (checked by the host at log time, so the step never waits on the host).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from mire_jax.config import MIReConfig
from mire_jax.models.mire import MIRe
from mire_jax.optim import is_trainable, merge_params, split_params
from mire_jax.parallel import DATA_AXIS
from mire_jax.scoring import in_batch_loss


@dataclasses.dataclass(frozen=True)
class StepConfig:
    phase: str = "pretrain"          # "pretrain": query = visual tokens, head trains; "finetune": + text tower
    temperature: float = 0.3
    maxsim_block: int = 0            # passages per MaxSim block against the gathered batch (0: automatic)
    accum_steps: int = 1             # micro-batches per update (negatives come from the micro-batch)
    dropout: bool = True             # BERT dropout in training, as the published (PyTorch train-mode) code


def init_state(params: dict, phase: str, tx: optax.GradientTransformation, rng: jax.Array):
    """-> (state, frozen params). The state holds what changes: step, trainable params, optimizer state, rng."""
    trainable, frozen = split_params(params, is_trainable(phase))
    state = {"step": jnp.zeros((), jnp.int32), "trainable": trainable, "opt_state": tx.init(trainable),
             "rng": rng, "first_nan_step": jnp.full((), -1, jnp.int32)}
    return state, frozen


def full_params(state, frozen) -> dict:
    return merge_params(state["trainable"], frozen)


def _per_device_step(model_cfg: MIReConfig, step_cfg: StepConfig, tx, schedule: Callable, axis_name):
    net = MIRe(model_cfg)
    pretraining = step_cfg.phase == "pretrain"

    def loss_fn(trainable, frozen, batch, vision_features, rng):
        variables = {"params": merge_params(trainable, frozen)}
        deterministic = not step_cfg.dropout
        rngs = {} if deterministic else {"dropout": rng}
        q = net.apply(variables, batch["q_ids"], batch["q_mask"], None, vision_features, pretraining, deterministic,
                      method=MIRe.encode_query, rngs=rngs)
        keep = batch["d_keep"].astype(bool)
        d = net.apply(variables, batch["d_ids"], batch["d_mask"], keep, deterministic, method=MIRe.encode_doc,
                      rngs=rngs)
        return in_batch_loss(q, d, keep, step_cfg.temperature, axis_name=axis_name,
                             block=step_cfg.maxsim_block or "auto")

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state, frozen, batch):
        batch = dict(batch)
        if "pixels" in batch:  # the frozen tower, outside the gradient
            features = net.apply({"params": frozen}, batch.pop("pixels"), method=MIRe.encode_vision)
        else:
            features = batch.pop("vision_features").astype(jnp.float32)
        rng = jax.random.fold_in(state["rng"], state["step"])
        if axis_name is not None:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))

        k = step_cfg.accum_steps
        micro = lambda x: x.reshape(k, x.shape[0] // k, *x.shape[1:])
        micro_batches = jax.tree_util.tree_map(micro, (batch, features))

        def accumulate(carry, xs):
            (b, f), i = xs
            (loss, acc), grads = grad_fn(state["trainable"], frozen, b, f, jax.random.fold_in(rng, i))
            total = jax.tree_util.tree_map(jnp.add, carry, (grads, loss, acc))
            return total, None

        zeros = (jax.tree_util.tree_map(jnp.zeros_like, state["trainable"]), jnp.zeros(()), jnp.zeros(()))
        (grads, loss, acc), _ = jax.lax.scan(accumulate, zeros, (micro_batches, jnp.arange(k)))
        grads, loss, acc = jax.tree_util.tree_map(lambda x: x / k, (grads, loss, acc))
        if axis_name is not None:
            grads, loss, acc = jax.lax.pmean((grads, loss, acc), axis_name)

        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state["opt_state"], state["trainable"])
        trainable = optax.apply_updates(state["trainable"], updates)
        keep_if_finite = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)
        new_state = {
            "step": state["step"] + 1,
            "trainable": keep_if_finite(trainable, state["trainable"]),
            "opt_state": keep_if_finite(opt_state, state["opt_state"]),
            "rng": state["rng"],
            "first_nan_step": jnp.where((state["first_nan_step"] < 0) & ~finite, state["step"] + 1,
                                        state["first_nan_step"]),
        }
        metrics = {"loss": loss, "accuracy": acc, "grad_norm": grad_norm, "lr": schedule(state["step"])}
        return new_state, metrics

    return step


class DataParallelStep:
    """The training step over every device of every process.

    mode "shard_map" (default): params replicated over a Mesh, the batch sharded along `data`; or "pmap": the
    same per-device function under `jax.pmap` (state replicated along a leading device axis); or "single": one
    device, no collectives (reference for tests). Call `prepare(state, frozen)` once, then
    `state, metrics = step(state, frozen, local_batch)` with this process's batch (numpy dict); `host_state`
    gives the state in plain (unreplicated) form for checkpoints.
    """

    def __init__(self, model_cfg: MIReConfig, step_cfg: StepConfig, tx, schedule, mesh, mode: str = "shard_map"):
        if mode not in ("shard_map", "pmap", "single"):
            raise ValueError(f"unknown parallel mode {mode!r}: use shard_map, pmap or single")
        self.mesh, self.mode = mesh, mode
        self.local_devices = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
        if mode == "single":
            self._step = jax.jit(_per_device_step(model_cfg, step_cfg, tx, schedule, None), donate_argnums=(0,))
        elif mode == "pmap":
            self._step = jax.pmap(_per_device_step(model_cfg, step_cfg, tx, schedule, DATA_AXIS), axis_name=DATA_AXIS,
                                  devices=self.local_devices, donate_argnums=(0,))
        else:
            per_device = _per_device_step(model_cfg, step_cfg, tx, schedule, DATA_AXIS)
            mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS)), out_specs=(P(), P()),
                                   check_vma=False)
            self._step = jax.jit(mapped, donate_argnums=(0,))

    def prepare(self, tree):
        if self.mode == "pmap":  # a leading axis of one copy per local device, each copy on its device
            n = len(self.local_devices)
            sharding = NamedSharding(jax.sharding.Mesh(np.asarray(self.local_devices), ("local",)), P("local"))
            stack = lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (n, *np.shape(x))), sharding)
            return jax.tree_util.tree_map(stack, tree)
        if self.mode == "single":
            return jax.device_put(tree)
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def _batch(self, local_batch):
        if self.mode == "pmap":
            n = len(self.local_devices)
            return jax.tree_util.tree_map(lambda x: np.asarray(x).reshape(n, x.shape[0] // n, *x.shape[1:]),
                                          local_batch)
        if self.mode == "single":
            return local_batch
        sharding = NamedSharding(self.mesh, P(DATA_AXIS))
        return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}

    def __call__(self, state, frozen, local_batch):
        state, metrics = self._step(state, frozen, self._batch(local_batch))
        if self.mode == "pmap":
            metrics = jax.tree_util.tree_map(lambda x: x[0], metrics)
        return state, metrics

    def host_state(self, state):
        """The state without the device axis of pmap (arrays stay on device)."""
        return jax.tree_util.tree_map(lambda x: x[0], state) if self.mode == "pmap" else state
