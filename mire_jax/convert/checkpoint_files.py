"""Checkpoint files: .safetensors (no torch needed), .bin / .pth / .pt (torch, imported lazily)."""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from mire_jax.convert.published import CheckpointError, to_numpy


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict: safetensors, or a torch pickle (a `{"model": state_dict}` .pth is unwrapped).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file cannot be deserialised (corrupt, truncated, not a checkpoint), naming it.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: a folder, not a checkpoint file (import-hf reads Hugging Face folders)")
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    obj = _read_torch_pickle(path)
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (or {{'model': state_dict}}), got {type(obj).__name__}")
    return {k: to_numpy(v) for k, v in obj.items()}


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except Exception as error:  # the deserialiser's own errors (SafetensorError, ...) do not name the file
        raise CheckpointError(f"{path}: not a readable .safetensors file (corrupt or truncated?): "
                              f"{type(error).__name__}: {error}") from error


def _read_torch_pickle(path: str):
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a bad file fails as EOFError, RuntimeError, UnpicklingError, even KeyError
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt, truncated, or holding more than "
                              f"tensors?): {type(error).__name__}: {error}") from error


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write a published-layout state dict as .safetensors, or as .pth/.pt holding `{"model": state_dict}`."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    if path.endswith(".safetensors"):
        from safetensors.numpy import save_file
        save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, tmp)
    elif path.endswith((".pth", ".pt", ".bin")):
        import torch
        torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}}, tmp)
    else:
        raise ValueError(f"unknown checkpoint extension for {path}: use .safetensors, .pth, .pt or .bin")
    os.replace(tmp, path)
