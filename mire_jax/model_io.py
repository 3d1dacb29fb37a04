"""A mire-jax model folder: `config.json` (MIReConfig) + `params.safetensors` (flattened param paths).

The portable form of a model between tools (converted checkpoints, trained models, evaluation). Training
state (optimiser, step, data iterator) lives in orbax checkpoints instead (`mire_jax.checkpoint`).
"""
from __future__ import annotations

import json
import os

import numpy as np
from flax import traverse_util

from mire_jax.config import MIReConfig

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"


def save_model(directory: str | os.PathLike, config: MIReConfig, params) -> None:
    from safetensors.numpy import save_file
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    flat = traverse_util.flatten_dict(params, sep="/")
    tmp = os.path.join(directory, PARAMS_FILE + ".tmp")
    save_file({k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in flat.items()}, tmp)
    os.replace(tmp, os.path.join(directory, PARAMS_FILE))
    with open(os.path.join(directory, CONFIG_FILE + ".tmp"), "w") as f:
        json.dump(config.to_dict(), f, indent=2)
    os.replace(os.path.join(directory, CONFIG_FILE + ".tmp"), os.path.join(directory, CONFIG_FILE))


def load_model(directory: str | os.PathLike) -> tuple[MIReConfig, dict]:
    from safetensors.numpy import load_file
    directory = os.fspath(directory)
    for name in (CONFIG_FILE, PARAMS_FILE):
        if not os.path.exists(os.path.join(directory, name)):
            raise FileNotFoundError(f"{directory} is not a mire-jax model folder: {name} is missing")
    with open(os.path.join(directory, CONFIG_FILE)) as f:
        config = MIReConfig.from_dict(json.load(f))
    params = traverse_util.unflatten_dict(load_file(os.path.join(directory, PARAMS_FILE)), sep="/")
    return config, params
