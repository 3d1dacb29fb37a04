"""Platform-dependent choices and block sizes for work split into equal blocks under a budget of elements.

Choices between CPU and accelerator code are made when the program is LOWERED (`jax.lax.platform_dependent`),
never from the host's default backend: a step exported or compiled for TPU or GPU on a CPU host carries the
accelerator path, and a CPU run the cache-sized one.
"""
from __future__ import annotations

from typing import Callable

import jax

CPU_BLOCK_ELEMENTS = 1 << 20  # about a million float32 values: cache-sized, and clear of the 32 MB mmap threshold


def cpu_or_accelerator(cpu: Callable, accelerator: Callable, *args):
    """`cpu(*args)` in a program lowered for CPU, `accelerator(*args)` for any other platform. The branches run
    under the name scopes "cpu_path" / "accelerator_path", so a lowered program shows which it carries."""
    def scoped(name, fn):
        def run(*a):
            with jax.named_scope(name):
                return fn(*a)
        return run
    return jax.lax.platform_dependent(*args, cpu=scoped("cpu_path", cpu), default=scoped("accelerator_path",
                                                                                             accelerator))


def largest_divisor_block(count: int, per_item: int, budget: int | None) -> int:
    """The largest divisor of `count` whose block of items holds at most `budget` elements (at least 1;
    None: all of them in one block)."""
    if budget is None:
        return count
    return max(d for d in range(1, count + 1) if count % d == 0 and (d * per_item <= budget or d == 1))
