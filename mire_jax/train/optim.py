"""What trains and how: per-phase trainable masks and the optax optimizer of the paper's recipe."""
from __future__ import annotations

from typing import Callable

import optax
from flax import traverse_util

# Parts of the params (top-level keys) that train in each phase. The vision tower never trains, and neither does
# the BERT pooler (MIRe never uses it: it has no gradient, as in the published code).
TRAINABLE = {"pretrain": ("pooling",), "finetune": ("bert", "linear", "pooling")}
NEVER_TRAINED = (("bert", "pooler"),)


TRAINABLE_PARTS = ("bert", "linear", "pooling")  # what a config may name (the vision tower stays frozen)


def is_trainable(phase: str, parts: tuple[str, ...] | None = None) -> Callable[[tuple[str, ...]], bool]:
    """The trainable mask of `phase`, or of `parts` (top-level keys) when given: the published SentMIRe pre-training
    also trains the projection (configs/sentmire_pretrain.py)."""
    if phase not in TRAINABLE:
        raise ValueError(f"unknown phase {phase!r}; known: {sorted(TRAINABLE)}")
    if parts:
        unknown = sorted(set(parts) - set(TRAINABLE_PARTS))
        if unknown:
            raise ValueError(f"trainable parts {unknown} unknown; they are among {list(TRAINABLE_PARTS)}")
    trains = tuple(parts) if parts else TRAINABLE[phase]

    def predicate(path: tuple[str, ...]) -> bool:
        return path[0] in trains and not any(path[:len(p)] == p for p in NEVER_TRAINED)
    return predicate


def split_params(params: dict, predicate) -> tuple[dict, dict]:
    """-> (trainable, frozen): two nested dicts holding disjoint leaves of `params`. Only the trainable part is
    ever differentiated, so frozen parts cost no backward pass and no optimizer state."""
    flat = traverse_util.flatten_dict(params)
    trainable = {k: v for k, v in flat.items() if predicate(k)}
    frozen = {k: v for k, v in flat.items() if not predicate(k)}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)


def merge_params(trainable: dict, frozen: dict) -> dict:
    return traverse_util.unflatten_dict({**traverse_util.flatten_dict(frozen), **traverse_util.flatten_dict(trainable)})


def learning_rate_schedule(lr: float, warmup_steps: int) -> optax.Schedule:
    """Linear warm-up from 0, then constant (the recipe's schedule)."""
    if warmup_steps <= 0:
        return optax.constant_schedule(lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup_steps), optax.constant_schedule(lr)],
                                [warmup_steps])


def make_optimizer(lr: float, warmup_steps: int, weight_decay: float, clip_norm: float | None = None,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """AdamW (PyTorch's defaults for the betas and eps) with optional global-norm clipping."""
    adamw = optax.adamw(learning_rate_schedule(lr, warmup_steps), b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
    return optax.chain(optax.clip_by_global_norm(clip_norm), adamw) if clip_norm else adamw
