"""The machine a stage ran on, in a few fields the report prints: accelerators, processes, CPU cores, versions."""
from __future__ import annotations

import os
import platform


def describe() -> dict:
    import jax
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return {"platform": devices[0].platform if devices else "", "device_kind": ", ".join(kinds),
            "devices": len(devices), "local_devices": jax.local_device_count(), "processes": jax.process_count(),
            "cpu_cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "jax": jax.__version__}


def one_line(hw: dict) -> str:
    """E.g. "4 x TPU v4 (1 process, 240 CPU cores)" or "1 x cpu (1 process, 2 CPU cores)"."""
    if not hw:
        return "unknown"
    procs = hw.get("processes", 1)
    return (f"{hw.get('devices', '?')} x {hw.get('device_kind') or hw.get('platform', '?')} "
            f"({procs} process{'es' if procs != 1 else ''}, {hw.get('cpu_cores', '?')} CPU cores per host)")
