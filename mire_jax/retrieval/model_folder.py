"""A mire-jax model folder: `config.json` (MIReConfig) + `params.safetensors` (flattened param paths), usually
beside the tokenizer's `vocab.txt` or `tokenizer.json`, and `encoding.json`: the encoding settings the model was
trained with (query and passage lengths, [MASK] rule, passage keep policy, image preprocessing), absent for an
imported checkpoint whose training the folder cannot know.

The portable form of a model between tools (converted checkpoints, trained models, evaluation). Training
state (optimiser, step, data iterator) lives in orbax checkpoints instead (`mire_jax.train.checkpoint`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import jax
import numpy as np
from flax import traverse_util

from mire_jax.config import EncodingSettings, MIReConfig
from mire_jax.files import atomic_open, atomic_path, read_json, write_json
from mire_jax.tokenization import load as load_tokenizer_from
from mire_jax.tokenization.colbert import ColbertTokenizer
from mire_jax.tokenization.pylate import CONVENTIONS_FILE

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"
ENCODING_FILE = "encoding.json"


TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", CONVENTIONS_FILE)


def save_model(directory: str | os.PathLike, config: MIReConfig, params, tokenizer: str | os.PathLike = "",
               encoding: EncodingSettings | None = None) -> None:
    """Writes the model folder; `tokenizer` (a vocab.txt, or a folder holding one or a tokenizer.json) is copied in
    beside it, so the folder is all that evaluation, serving and fine-tuning need; `encoding`: the settings the model
    was trained with."""
    from safetensors.numpy import save_file
    directory = os.fspath(directory)
    flat = traverse_util.flatten_dict(params, sep="/")
    with atomic_path(os.path.join(directory, PARAMS_FILE)) as tmp:
        save_file({k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in flat.items()}, tmp)
    write_json(os.path.join(directory, CONFIG_FILE), config.to_dict(), indent=2)
    encoding_path = os.path.join(directory, ENCODING_FILE)
    if encoding is not None:
        write_json(encoding_path, {"trained_with": encoding.to_dict()}, indent=2)
    elif os.path.exists(encoding_path):  # an earlier model's record would be wrong for this one
        os.remove(encoding_path)
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


def load_encoding(directory: str | os.PathLike) -> EncodingSettings | None:
    """The encoding settings the model of `directory` was trained with; None when the folder does not record them
    (an imported checkpoint)."""
    path = os.path.join(os.fspath(directory), ENCODING_FILE)
    if not os.path.exists(path):
        return None
    record = read_json(path, error=ModelFolderError)
    try:
        return EncodingSettings.from_dict(record["trained_with"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFolderError(f"{path}: not a mire-jax encoding record ({e})") from e


def load_model(directory: str | os.PathLike) -> tuple[MIReConfig, dict]:
    """(config, params) of a model folder; one-line errors naming a missing or unreadable file."""
    from safetensors.numpy import load_file
    directory = os.fspath(directory)
    for name in (CONFIG_FILE, PARAMS_FILE):
        if not os.path.exists(os.path.join(directory, name)):
            raise FileNotFoundError(f"{directory} is not a mire-jax model folder: {name} is missing")
    config_path, params_path = os.path.join(directory, CONFIG_FILE), os.path.join(directory, PARAMS_FILE)
    try:
        config = MIReConfig.from_dict(read_json(config_path))
    except (ValueError, TypeError) as e:
        raise ModelFolderError(f"{config_path}: not a mire-jax model config ({e})") from e
    try:
        flat = load_file(params_path)
    except Exception as e:  # the deserialiser's own error types name no file
        raise ModelFolderError(f"{params_path}: not a readable safetensors file ({e})") from e
    return config, traverse_util.unflatten_dict(flat, sep="/")


class ModelFolderError(ValueError):
    """A model folder's file cannot be read; the message names it."""


# Config fields added after models were fingerprinted -> the value every earlier model has. At that value a field
# is left out of the fingerprint, so that indexes and caches of earlier models still match them.
FIELDS_ADDED_LATER = {("vision", "model_type"): "clip", (None, "modernbert"): None}


def config_description(config: MIReConfig) -> dict:
    """`config.to_dict()` less the later-added fields at their earlier value: what fingerprints hash."""
    described = config.to_dict()
    for (part, name), earlier in FIELDS_ADDED_LATER.items():
        fields = described if part is None else described[part]
        if name in fields and fields[name] == earlier:
            del fields[name]
    return described


def params_fingerprint(config: MIReConfig, params) -> str:
    """A short hash of a model (its config and every parameter): what was computed with one model (an encoded
    corpus, cached text features) is reused only with the same model."""
    h = hashlib.sha256(json.dumps(config_description(config), sort_keys=True).encode())
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


def load_tokenizer(model_dir: str | os.PathLike, tokenizer: str = "") -> ColbertTokenizer:
    """The ColBERT tokenizer of a model: `tokenizer` (a vocab.txt or tokenizer folder) when given, else the one in
    the model folder or in the folder above it (a training workdir); PyLate's conventions when the folder records
    them (a SentMIRe model, `mire_jax.tokenization.load`)."""
    model_dir = os.fspath(model_dir)
    candidates = [tokenizer] if tokenizer else [model_dir, os.path.dirname(os.path.abspath(model_dir))]
    for c in candidates:
        if os.path.isfile(c) or has_tokenizer(c):
            return load_tokenizer_from(c)
    raise FileNotFoundError(f"no tokenizer (vocab.txt or tokenizer.json) in {candidates}: name one with "
                            "--config.tokenizer / --tokenizer")
