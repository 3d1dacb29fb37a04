"""Block sizes for work split into equal blocks under a budget of elements per block."""
from __future__ import annotations

import jax

CPU_BLOCK_ELEMENTS = 1 << 20  # about a million float32 values: cache-sized, and clear of the 32 MB mmap threshold


def block_budget(accelerator_budget: int | None) -> int | None:
    """Elements per block on this backend: CPU_BLOCK_ELEMENTS on CPU, `accelerator_budget` elsewhere."""
    return CPU_BLOCK_ELEMENTS if jax.default_backend() == "cpu" else accelerator_budget


def largest_divisor_block(count: int, per_item: int, budget: int | None) -> int:
    """The largest divisor of `count` whose block of items holds at most `budget` elements (at least 1;
    None: all of them in one block)."""
    if budget is None:
        return count
    return max(d for d in range(1, count + 1) if count % d == 0 and (d * per_item <= budget or d == 1))
