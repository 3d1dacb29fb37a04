"""Counts the programs JAX lowers, so the server can show (in /healthz) that nothing compiled after start-up."""
from __future__ import annotations

import threading

from jax import monitoring

# JAX records this event once per program it lowers for compilation (a persistent-cache hit included), and not
# for calls that reuse an already compiled program.
LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"

_lock = threading.Lock()
_count = 0
_installed = False


def _on_duration(event: str, duration: float, **kwargs) -> None:
    global _count
    if event == LOWERING_EVENT:
        with _lock:
            _count += 1


def _install() -> None:
    global _installed
    with _lock:
        if not _installed:
            monitoring.register_event_duration_secs_listener(_on_duration)
            _installed = True


class CompileWatch:
    """Programs lowered since this watch was made, and since `mark_warm`."""

    def __init__(self):
        _install()
        self._start = _count
        self._warm: int | None = None

    def mark_warm(self) -> None:
        self._warm = _count

    @property
    def total(self) -> int:
        return _count - self._start

    @property
    def since_warm_up(self) -> int | None:
        """Programs lowered after `mark_warm` (None before it)."""
        return None if self._warm is None else _count - self._warm
