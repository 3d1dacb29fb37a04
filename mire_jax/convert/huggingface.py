"""Separate Hugging Face checkpoints -> MIRe: a ColBERTv2 folder (`bert.*` + `linear.weight`) or a plain BERT, and
a CLIP (or CLIPVision) or SigLIP (or SiglipVision) folder; or -> SentMIRe, from a PyLate ModernColBERT folder
(`pylate.py`) and a vision folder."""
from __future__ import annotations

import os
import warnings

import jax
import numpy as np

from mire_jax.api import init_params
from mire_jax.config import HeadConfig, TorchLayout, VisionConfig
from mire_jax.convert.checkpoint_files import load_state_dict
from mire_jax.convert.published import (
    BERT_PREFIX,
    LINEAR_KEY,
    CheckpointError,
    _as_dict,
    _params_from_entries,
    make_config,
    published_entries,
    to_torch,
    vision_prefix,
)
from mire_jax.convert.pylate import dense_out_features, is_pylate_folder, pylate_text_state
from mire_jax.files import read_json


def _hf_weights(folder: str) -> dict[str, np.ndarray]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.exists(os.path.join(folder, name)):
            return load_state_dict(os.path.join(folder, name))
    raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")


def _strip(state_dict, prefix):
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def hf_text_state(text_dir: str) -> tuple[dict, dict[str, np.ndarray]]:
    """A ColBERTv2 folder (`bert.*` + `linear.weight`) or a plain BERT folder -> (config dict, published-key weights)."""
    weights = _hf_weights(text_dir)
    bert = _strip(weights, "bert.") or {k: v for k, v in weights.items()
                                        if k.startswith(("embeddings.", "encoder.", "pooler."))}
    sd = {BERT_PREFIX + k: v for k, v in bert.items() if not k.endswith("position_ids")}
    if "linear.weight" in weights:
        sd[LINEAR_KEY] = weights["linear.weight"]
    return read_json(os.path.join(text_dir, "config.json")), sd


def hf_vision_state(vision_dir: str) -> tuple[dict, dict[str, np.ndarray]]:
    """A CLIP, CLIPVision, SigLIP or SiglipVision folder -> (vision config dict, published-key weights of the
    vision model). A full model's text tower (and SigLIP's logit scale and bias) is left out."""
    weights = _hf_weights(vision_dir)
    vision = _strip(weights, "vision_model.") or weights
    full = read_json(os.path.join(vision_dir, "config.json"))
    cfg = {"model_type": full.get("model_type", "clip"), **full["vision_config"]} if "vision_config" in full else full
    prefix = vision_prefix(TorchLayout(), VisionConfig.from_dict(cfg))
    return cfg, {prefix + k: v for k, v in vision.items() if not k.endswith("position_ids")}


def from_hf_parts(text_dir: str, vision_dir: str | None = None, head=None, *, vision_config=None, seed: int = 0,
                  dtype: str = "float32"):
    """Assemble MIRe from separate Hugging Face checkpoints -> (config, params).

    text_dir: a ColBERTv2 folder or a plain BERT (keys with or without `bert.`): MIRe; or a PyLate ModernColBERT
    folder (sentence-transformers' modules.json): SentMIRe, whose `head` dim must be the Dense layer's output size.
    vision_dir: a CLIP, CLIPVision, SigLIP or SiglipVision folder (its config's `model_type` picks the tower), or
    None with `vision_config` for a vision tower to be trained from scratch. Parts the checkpoints lack (the pooling
    head always; the projection of a plain BERT; a pooler some BERTs drop) get the initialisation of `seed`, with a
    warning naming them.
    """
    if is_pylate_folder(text_dir):
        bert_cfg, sd = pylate_text_state(text_dir)
        dim = dense_out_features(sd)
        if _as_dict(head, HeadConfig).dim != dim:
            raise CheckpointError(f"{text_dir}: its Dense layer makes {dim}-d embeddings, the head is "
                                  f"{_as_dict(head, HeadConfig).dim}-d: give the head dim {dim} (--head-dim)")
    else:
        bert_cfg, sd = hf_text_state(text_dir)
    if vision_dir is not None:
        vision_config, vision_sd = hf_vision_state(vision_dir)
        sd.update(vision_sd)
    elif vision_config is None:
        raise ValueError("give vision_dir, or vision_config for a randomly initialised vision tower")
    config = make_config(bert_cfg, vision_config, _as_dict(head, HeadConfig), dtype=dtype)
    init = to_torch(config, jax.tree_util.tree_map(np.asarray, _init(config, seed)))
    filled = [k for k in init if k not in sd]
    if filled:
        parts = sorted({".".join(k.split(".")[:3 if k.startswith("model.bert.") else 2]) for k in filled})
        warnings.warn(f"initialised from seed {seed} (absent from the checkpoints): {', '.join(parts)}")
    sd.update({k: init[k] for k in filled})
    return config, _params_from_entries(sd, config, published_entries(config))


def _init(config, seed):
    return init_params(config, jax.random.PRNGKey(seed))
