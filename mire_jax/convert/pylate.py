"""A PyLate (sentence-transformers) ModernColBERT folder -> SentMIRe's text tower in the published key layout.

The folder (e.g. lightonai/GTE-ModernColBERT-v1, or the one the published SentMIRe recipe starts from) holds
`modules.json`, which names a Transformer module (the ModernBERT folder: config.json, model.safetensors,
tokenizer.json; usually the folder itself, path "") and a Dense module (`1_Dense`: config.json, model.safetensors
with `linear.weight`), plus `config_sentence_transformers.json` with PyLate's prefixes and skiplist. The published
SentMIRe keeps the Transformer's `auto_model` as its module `model` and the Dense layer's `linear` as `dense`
(`retrievers/colbert/modeling/base_colbert.py`, `SentColBERT`), so the keys become model.* and dense.*.
"""
from __future__ import annotations

import os

import numpy as np

from mire_jax.convert.checkpoint_files import load_state_dict
from mire_jax.convert.published import DENSE, MODERNBERT_PREFIX, CheckpointError
from mire_jax.files import read_json

MODULES_FILE = "modules.json"
IDENTITY = "torch.nn.modules.linear.Identity"


def is_pylate_folder(folder: str | os.PathLike) -> bool:
    """Whether a folder is a PyLate model: a sentence-transformers modules.json whose modules include a Dense layer
    (PyLate's ColBERT projection). Other sentence-transformers models (a MiniLM: Transformer, Pooling, Normalize)
    hold a plain BERT, read as a ColBERTv2/BERT text folder."""
    path = os.path.join(os.fspath(folder), MODULES_FILE)
    if not os.path.isfile(path):
        return False
    modules = read_json(path, error=CheckpointError)
    return isinstance(modules, list) and any(str(m.get("type", "")).endswith("Dense") for m in modules
                                             if isinstance(m, dict))


def _weights(folder: str, what: str) -> dict[str, np.ndarray]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(folder, name)):
            return load_state_dict(os.path.join(folder, name))
    raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin ({what})")


def _modules(folder: str) -> tuple[str, str]:
    """(Transformer folder, Dense folder) of a PyLate model; anything else is refused in one line."""
    modules = read_json(os.path.join(folder, MODULES_FILE), error=CheckpointError)
    kinds = [str(m.get("type", "")) for m in modules]
    if len(modules) != 2 or not kinds[0].endswith("Transformer") or not kinds[1].endswith("Dense"):
        raise CheckpointError(f"{folder}: modules {kinds} are not PyLate's Transformer + one Dense layer, the "
                              "model the published SentMIRe builds on (it keeps the Transformer and the first Dense "
                              "layer's linear map only)")
    return tuple(os.path.join(folder, m.get("path", "")) for m in modules)


def pylate_text_state(folder: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """A PyLate ModernColBERT folder -> (its ModernBERT config.json dict, with `projection_bias` from the Dense
    layer; the weights under the published SentMIRe keys model.* and dense.*)."""
    folder = os.fspath(folder)
    transformer_dir, dense_dir = _modules(folder)
    config = read_json(os.path.join(transformer_dir, "config.json"), error=CheckpointError)
    if config.get("model_type") != "modernbert":
        raise CheckpointError(f"{transformer_dir}: a {config.get('model_type')!r} encoder, not ModernBERT: SentMIRe "
                              "takes a ModernColBERT (a ColBERTv2 BERT folder makes a MIRe)")
    dense = read_json(os.path.join(dense_dir, "config.json"), error=CheckpointError)
    if dense.get("use_residual"):
        raise CheckpointError(f"{dense_dir}: a Dense layer with a residual projection, which the published "
                              "SentMIRe would drop (it uses the layer's linear map only)")
    if dense.get("activation_function", IDENTITY) != IDENTITY:
        raise CheckpointError(f"{dense_dir}: activation {dense['activation_function']}, which the published SentMIRe "
                              "would drop (it uses the layer's linear map only)")
    encoder = _weights(transformer_dir, "the ModernBERT weights")
    prefix = "model." if any(k.startswith("model.embeddings.") for k in encoder) else ""
    sd = {MODERNBERT_PREFIX + k[len(prefix):]: v for k, v in encoder.items() if k.startswith(prefix)}
    linear = _weights(dense_dir, "the Dense layer")
    for name in ("weight", "bias"):
        if f"linear.{name}" in linear:
            sd[f"{DENSE}.{name}"] = linear[f"linear.{name}"]
    if f"{DENSE}.weight" not in sd:
        raise CheckpointError(f"{dense_dir}: no linear.weight (keys: {sorted(linear)})")
    config = dict(config, projection_bias=f"{DENSE}.bias" in sd)
    return config, sd


def dense_out_features(state: dict[str, np.ndarray]) -> int:
    return int(state[f"{DENSE}.weight"].shape[0])
