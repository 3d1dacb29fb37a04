"""The jitted training step and the validation step: one per-device function run by `shard_map` over a 2-D Mesh
(`groups` x `members`: the devices that share a negatives group sit on one row). Only the trainable part of the
params is differentiated; the frozen vision tower runs outside the gradient. A step with a non-finite loss or
gradient leaves the params and optimizer untouched and records its step number in the state (checked by the host
at log time, so the step never waits on the host).

The computation does not depend on the device layout: negatives groups are runs of consecutive examples of the
global batch, dropout masks are keyed by each example's position in the global batch, and gradient accumulation
splits the batch into micro-batches of whole groups. 1 device, 8 devices and several hosts train the same model.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mire_jax.config import MIReConfig
from mire_jax.models.mire import MIRe
from mire_jax.scoring import in_batch_loss
from mire_jax.train.optim import is_trainable, merge_params, split_params

GROUPS, MEMBERS = "groups", "members"
DATA_AXES = (GROUPS, MEMBERS)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the step computes; the defaults of a training run live in `mire_jax.train.config` (`from_config`)."""
    phase: str                       # "pretrain": query = visual tokens, head trains; "finetune": + text tower
    temperature: float
    negatives_group: int = 0         # consecutive examples sharing in-batch negatives (0: the whole global batch)
    maxsim_block: int = 0            # passages per MaxSim block in the loss (0: automatic)
    accum_steps: int = 1             # micro-batches per update, each of whole negatives groups
    dropout: bool = True             # BERT dropout in training, as the published (PyTorch train-mode) code

    @classmethod
    def from_config(cls, cfg) -> "StepConfig":
        """From a training config (`mire_jax.train.config.base_config` and the configs/ files)."""
        return cls(phase=cfg.phase, temperature=cfg.temperature, negatives_group=cfg.negatives_group,
                   maxsim_block=cfg.maxsim_block, accum_steps=cfg.accum_steps, dropout=cfg.dropout)


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """How a global batch of `global_batch` examples lies on `devices` devices, in `accum_steps` micro-batches
    of whole negatives groups of `group` consecutive examples.

    Micro-batch i holds the examples [i * micro_batch, (i + 1) * micro_batch) of the global batch; device r holds
    [r * per_device, (r + 1) * per_device) of each micro-batch; a group is scored on one device, or spread over
    `group_devices` consecutive devices.
    """
    global_batch: int
    devices: int
    accum_steps: int = 1
    group: int = 0

    def __post_init__(self):
        b, n, k = self.global_batch, self.devices, self.accum_steps
        group = self.group or b
        if k < 1 or b % (k * n):
            raise ValueError(f"batch_size {b} must be a multiple of accum_steps ({k}) x devices ({n})")
        if group < 1 or (b // k) % group:
            raise ValueError(f"negatives_group {group} must divide the micro-batch: batch_size {b} / accum_steps "
                             f"{k} = {b // k}")
        m = b // (k * n)
        if m % group and group % m:
            raise ValueError(f"negatives_group {group} and the {m} examples per device and micro-batch "
                             f"(batch_size {b} / accum_steps {k} / {n} devices): one must divide the other")
        object.__setattr__(self, "group", group)

    @property
    def micro_batch(self) -> int:
        return self.global_batch // self.accum_steps

    @property
    def per_device(self) -> int:
        """Examples per device in one micro-batch."""
        return self.micro_batch // self.devices

    @property
    def group_devices(self) -> int:
        return max(1, self.group // self.per_device)

    def mesh(self, devices: Sequence) -> Mesh:
        return Mesh(np.asarray(devices).reshape(self.devices // self.group_devices, self.group_devices), DATA_AXES)

    def device_order(self, local_batch: np.ndarray, local_devices: int) -> np.ndarray:
        """This process's examples in micro-batch order [k, local devices, per_device] -> device order
        [local devices, k, per_device] (each device's shard holds its part of every micro-batch)."""
        x = np.asarray(local_batch)
        x = x.reshape(self.accum_steps, local_devices, self.per_device, *x.shape[1:]).swapaxes(0, 1)
        return x.reshape(-1, *x.shape[3:])


def init_state(params: dict, phase: str, tx: optax.GradientTransformation, rng: jax.Array,
               trainable_parts: tuple[str, ...] | None = None):
    """-> (state, frozen params). The state holds what changes: step, trainable params, optimizer state, rng.
    `trainable_parts`: the top-level params that train, when not the phase's."""
    trainable, frozen = split_params(params, is_trainable(phase, trainable_parts))
    state = {"step": jnp.zeros((), jnp.int32), "trainable": trainable, "opt_state": tx.init(trainable),
             "rng": rng, "first_nan_step": jnp.full((), -1, jnp.int32)}
    return state, frozen


def full_params(state, frozen) -> dict:
    return merge_params(state["trainable"], frozen)


def _contrastive_fn(model_cfg: MIReConfig, step_cfg: StepConfig, layout: BatchLayout):
    """-> loss(trainable, frozen, batch, vision_features, rng, positions, deterministic) = (loss, accuracy) of this
    device's queries; `positions` [per_device] are the examples' positions in the global batch (dropout keys)."""
    net = MIRe(model_cfg)
    pretraining = step_cfg.phase == "pretrain"
    group_axis = MEMBERS if layout.group_devices > 1 else None

    def loss_fn(trainable, frozen, batch, vision_features, rng, positions, deterministic):
        variables = {"params": merge_params(trainable, frozen)}
        rngs = lambda i: {} if deterministic else {"dropout": jax.random.fold_in(rng, i)}
        keep = batch["d_keep"].astype(bool)
        if "q_text" in batch:  # the frozen text tower's outputs, cached (pre-training with dropout off)
            q = net.apply(variables, batch["q_text"], batch["q_mask"], None, vision_features, pretraining,
                          method=MIRe.query_from_text)
            d = batch["d_text"]
        else:
            q = net.apply(variables, batch["q_ids"], batch["q_mask"], None, vision_features, pretraining,
                          deterministic, positions, method=MIRe.encode_query, rngs=rngs(0))
            d = net.apply(variables, batch["d_ids"], batch["d_mask"], keep, deterministic, positions,
                          method=MIRe.encode_doc, rngs=rngs(1))
        return in_batch_loss(q, d, keep, step_cfg.temperature, group_size=layout.group, group_axis=group_axis,
                             block=step_cfg.maxsim_block or "auto")
    return net, loss_fn


def _vision_features(net, frozen, batch):
    """The frozen tower, outside the gradient (or the cached features of the batch)."""
    if "pixels" in batch:
        return net.apply({"params": frozen}, batch.pop("pixels"), method=MIRe.encode_vision)
    return batch.pop("vision_features").astype(jnp.float32)


def _per_device_step(model_cfg: MIReConfig, step_cfg: StepConfig, layout: BatchLayout, tx, schedule: Callable):
    net, loss_fn = _contrastive_fn(model_cfg, step_cfg, layout)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    k, m = layout.accum_steps, layout.per_device

    def step(state, frozen, batch):
        batch = dict(batch)
        features = _vision_features(net, frozen, batch)
        rng = jax.random.fold_in(state["rng"], state["step"])
        device = jax.lax.axis_index(DATA_AXES)
        micro_batches = jax.tree_util.tree_map(lambda x: x.reshape(k, m, *x.shape[1:]), (batch, features))

        def accumulate(carry, xs):
            (b, f), i = xs
            positions = (i * layout.micro_batch + device * m + jnp.arange(m)).astype(jnp.uint32)
            (loss, acc), grads = grad_fn(state["trainable"], frozen, b, f, rng, positions, not step_cfg.dropout)
            return jax.tree_util.tree_map(jnp.add, carry, (grads, loss, acc)), None

        zeros = (jax.tree_util.tree_map(jnp.zeros_like, state["trainable"]), jnp.zeros(()), jnp.zeros(()))
        (grads, loss, acc), _ = jax.lax.scan(accumulate, zeros, (micro_batches, jnp.arange(k)))
        grads, loss, acc = jax.lax.pmean(jax.tree_util.tree_map(lambda x: x / k, (grads, loss, acc)), DATA_AXES)

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


def _per_device_eval(model_cfg: MIReConfig, step_cfg: StepConfig, layout: BatchLayout):
    net, loss_fn = _contrastive_fn(model_cfg, step_cfg, layout)

    def evaluate(state, frozen, batch):
        batch = dict(batch)
        features = _vision_features(net, frozen, batch)
        loss, acc = loss_fn(state["trainable"], frozen, batch, features, None, None, True)
        return jax.lax.pmean({"loss": loss, "accuracy": acc}, DATA_AXES)

    return evaluate


class _Sharded:
    """A per-device function under `shard_map` over a layout's mesh: params replicated, the batch sharded."""

    def __init__(self, layout: BatchLayout, devices: Sequence | None):
        devices = list(jax.devices() if devices is None else devices)
        self.layout = dataclasses.replace(layout, devices=len(devices))
        self.mesh = self.layout.mesh(devices)
        self.local_devices = sum(d.process_index == jax.process_index() for d in devices)
        self._batch_sharding = NamedSharding(self.mesh, P(DATA_AXES))

    def _map(self, per_device, out_specs, donate: bool):
        mapped = jax.shard_map(per_device, mesh=self.mesh, in_specs=(P(), P(), P(DATA_AXES)), out_specs=out_specs,
                               check_vma=False)
        return jax.jit(mapped, donate_argnums=(0,) if donate else ())

    def prepare(self, tree):
        """Params or state replicated on every device of the mesh."""
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def global_batch(self, local_batch: dict) -> dict:
        """This process's examples (numpy, micro-batch order) -> global arrays sharded over the mesh."""
        return {key: jax.make_array_from_process_local_data(
                    self._batch_sharding, self.layout.device_order(value, self.local_devices))
                for key, value in local_batch.items()}


class DataParallelStep(_Sharded):
    """The training step over every device of every process (or over `devices`).

    Call `prepare(state)` and `prepare(frozen)` once, then `state, metrics = step(state, frozen, local_batch)` with
    this process's share of the global batch: the examples [p * B/P, (p + 1) * B/P) of each micro-batch, in
    micro-batch order (the input pipeline's `accum_steps` lays them out so).
    """

    def __init__(self, model_cfg: MIReConfig, step_cfg: StepConfig, tx, schedule, global_batch: int,
                 devices: Sequence | None = None):
        layout = BatchLayout(global_batch, len(jax.devices() if devices is None else devices), step_cfg.accum_steps,
                             step_cfg.negatives_group)
        super().__init__(layout, devices)
        self._step = self._map(_per_device_step(model_cfg, step_cfg, self.layout, tx, schedule), (P(), P()), True)

    def __call__(self, state, frozen, local_batch):
        return self._step(state, frozen, self.global_batch(local_batch))


def validation_batch_size(negatives_group: int, devices: int) -> int:
    """The smallest global batch of whole negatives groups that every device shares equally."""
    return math.lcm(negatives_group, devices)


class ValidationStep(_Sharded):
    """In-batch loss and accuracy with dropout off, over batches of `validation_batch_size` examples (whole
    negatives groups); `metrics = evaluate(state, frozen, local_batch)` averages over the batch's queries."""

    def __init__(self, model_cfg: MIReConfig, step_cfg: StepConfig, devices: Sequence | None = None):
        n = len(jax.devices() if devices is None else devices)
        if not step_cfg.negatives_group:
            raise ValueError("validation needs a negatives group size")
        layout = BatchLayout(validation_batch_size(step_cfg.negatives_group, n), n, 1, step_cfg.negatives_group)
        super().__init__(layout, devices)
        self.batch_size = layout.global_batch
        self._eval = self._map(_per_device_eval(model_cfg, step_cfg, self.layout), P(), False)

    def __call__(self, state, frozen, local_batch):
        return self._eval(state, frozen, self.global_batch(local_batch))
