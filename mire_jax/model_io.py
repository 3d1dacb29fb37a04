"""A mire-jax model folder: `config.json` (MIReConfig) + `params.safetensors` (flattened param paths), usually
beside the tokenizer's `vocab.txt` or `tokenizer.json`.

The portable form of a model between tools (converted checkpoints, trained models, evaluation). Training
state (optimiser, step, data iterator) lives in orbax checkpoints instead (`mire_jax.train.checkpoint`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
from flax import traverse_util

from mire_jax.config import MIReConfig
from mire_jax.files import atomic_open, atomic_path, write_json

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def save_model(directory: str | os.PathLike, config: MIReConfig, params, tokenizer: str | os.PathLike = "") -> None:
    """Writes the model folder; `tokenizer` (a vocab.txt, or a folder holding one or a tokenizer.json) is copied in
    beside it, so the folder is all that evaluation, serving and fine-tuning need."""
    from safetensors.numpy import save_file
    directory = os.fspath(directory)
    flat = traverse_util.flatten_dict(params, sep="/")
    with atomic_path(os.path.join(directory, PARAMS_FILE)) as tmp:
        save_file({k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in flat.items()}, tmp)
    write_json(os.path.join(directory, CONFIG_FILE), config.to_dict(), indent=2)
    if tokenizer:
        copy_tokenizer(tokenizer, directory)


def has_tokenizer(folder: str | os.PathLike) -> bool:
    return any(os.path.isfile(os.path.join(folder, n)) for n in ("vocab.txt", "tokenizer.json"))


def copy_tokenizer(source: str | os.PathLike, directory: str | os.PathLike) -> None:
    """Copies a tokenizer (a vocab.txt file, or the tokenizer files of a folder) into `directory`."""
    source, directory = os.fspath(source), os.fspath(directory)
    files = [source] if os.path.isfile(source) else [os.path.join(source, n) for n in TOKENIZER_FILES
                                                      if os.path.isfile(os.path.join(source, n))]
    if not files:
        raise FileNotFoundError(f"{source}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    for path in files:
        name = "vocab.txt" if os.path.isfile(source) else os.path.basename(path)
        if os.path.abspath(path) != os.path.abspath(os.path.join(directory, name)):
            with open(path, "rb") as src, atomic_open(os.path.join(directory, name), "wb") as dst:
                shutil.copyfileobj(src, dst)


def load_model(directory: str | os.PathLike) -> tuple[MIReConfig, dict]:
    from safetensors.numpy import load_file
    directory = os.fspath(directory)
    for name in (CONFIG_FILE, PARAMS_FILE):
        if not os.path.exists(os.path.join(directory, name)):
            raise FileNotFoundError(f"{directory} is not a mire-jax model folder: {name} is missing")
    config_path, params_path = os.path.join(directory, CONFIG_FILE), os.path.join(directory, PARAMS_FILE)
    try:
        with open(config_path) as f:
            config = MIReConfig.from_dict(json.load(f))
    except (ValueError, TypeError) as e:
        raise ModelFolderError(f"{config_path}: not a mire-jax model config ({e})") from e
    try:
        flat = load_file(params_path)
    except Exception as e:  # the deserialiser's own error types name no file
        raise ModelFolderError(f"{params_path}: not a readable safetensors file ({e})") from e
    return config, traverse_util.unflatten_dict(flat, sep="/")


class ModelFolderError(ValueError):
    """A model folder's file cannot be read; the message names it."""


def params_fingerprint(config: MIReConfig, params) -> str:
    """A short hash of a model (its config and every parameter): what was computed with one model (an encoded
    corpus, cached text features) is reused only with the same model."""
    import jax
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for leaf in jax.tree_util.tree_leaves(params):
        h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return h.hexdigest()[:16]


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
        if os.path.isfile(c) or has_tokenizer(c):
            return ColbertTokenizer.from_pretrained(c)
    raise FileNotFoundError(f"no tokenizer (vocab.txt or tokenizer.json) in {candidates}: name one with "
                            "--config.tokenizer / --tokenizer")
