"""A mire-jax model folder: `config.json` (MIReConfig) + `params.safetensors` (flattened param paths), usually
beside the tokenizer's `vocab.txt` or `tokenizer.json`.

The portable form of a model between tools (converted checkpoints, trained models, evaluation). Training
state (optimiser, step, data iterator) lives in orbax checkpoints instead (`mire_jax.train.checkpoint`).
"""
from __future__ import annotations

import json
import os

import numpy as np
from flax import traverse_util

from mire_jax.config import MIReConfig
from mire_jax.files import atomic_path, write_json

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"


def save_model(directory: str | os.PathLike, config: MIReConfig, params) -> None:
    from safetensors.numpy import save_file
    directory = os.fspath(directory)
    flat = traverse_util.flatten_dict(params, sep="/")
    with atomic_path(os.path.join(directory, PARAMS_FILE)) as tmp:
        save_file({k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in flat.items()}, tmp)
    write_json(os.path.join(directory, CONFIG_FILE), config.to_dict(), indent=2)


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


def resolve_model_dir(path: str | os.PathLike) -> str:
    """A model folder, or a training workdir holding one in `model/` -> the model folder."""
    path = os.fspath(path)
    if all(os.path.exists(os.path.join(path, name)) for name in (CONFIG_FILE, PARAMS_FILE)):
        return path
    if os.path.exists(os.path.join(path, "model", PARAMS_FILE)):
        return os.path.join(path, "model")
    raise FileNotFoundError(f"{path} is neither a mire-jax model folder nor a training workdir with model/ "
                            "(convert a published checkpoint with `python -m mire_jax.convert import ...`)")


def load_tokenizer(model_dir: str | os.PathLike, tokenizer: str = ""):
    """The ColBERT tokenizer of a model: `tokenizer` (a vocab.txt or tokenizer folder) when given, else the one in
    the model folder or in the folder above it (a training workdir)."""
    from mire_jax.tokenizer import ColbertTokenizer
    model_dir = os.fspath(model_dir)
    candidates = [tokenizer] if tokenizer else [model_dir, os.path.dirname(os.path.abspath(model_dir))]
    for c in candidates:
        if os.path.isfile(c) or any(os.path.exists(os.path.join(c, f)) for f in ("tokenizer.json", "vocab.txt")):
            return ColbertTokenizer.from_pretrained(c)
    raise FileNotFoundError(f"no tokenizer (vocab.txt or tokenizer.json) in {candidates}: name one with "
                            "--config.tokenizer / --tokenizer")
