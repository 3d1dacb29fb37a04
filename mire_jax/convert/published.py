"""The published checkpoint layout: the key set of the reference PyTorch model's `state_dict()`.

    model.bert.*                                BERT (Hugging Face BertModel, pooler included)
    model.linear.weight                         hidden -> dim projection, no bias
    vision_tower.vision_tower[.vision_model].*  CLIP vision model (the `vision_model.` level: transformers < 5)
    vision_tower.vision_tower.vision_model.*    or a SigLIP vision model (the published SigLipVisionModel)
    query_fusion.*                              the pooling head

and of the published `SentMIRe` (a PyLate ModernColBERT text tower), whose text keys are instead

    model.*                                     ModernBERT (Hugging Face ModernBertModel)
    dense.weight (and dense.bias)               PyLate's Dense projection (its `linear`)

Every parameter is listed once as (published key, flax param path, (to_flax, to_torch)), so that import and export
are one table read both ways.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np

from mire_jax.api import init_params
from mire_jax.config import BertConfig, HeadConfig, MIReConfig, ModernBertConfig, TorchLayout, VisionConfig

BERT_PREFIX = "model.bert."
LINEAR_KEY = "model.linear.weight"
MODERNBERT_PREFIX = "model."      # SentMIRe: its ModernBERT is the module `model`, PyLate's Dense `dense`
DENSE = "dense"
VISION_PREFIX = "vision_tower.vision_tower."
VISION_MODEL = "vision_model."
HEAD_PREFIX = "query_fusion."

# Transforms between a PyTorch tensor and the flax parameter (each is its own inverse pair).
_IDENTITY = (lambda x: x, lambda x: x)
_LINEAR = (lambda w: w.T, lambda k: k.T)                                   # [out, in] <-> [in, out]
_CONV = (lambda w: w.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1))  # OIHW <-> HWIO


class CheckpointError(ValueError):
    """A checkpoint does not fit the config (missing, unexpected or wrong-shaped keys)."""


def _linear(torch_name, path, bias=True):
    yield f"{torch_name}.weight", (*path, "kernel"), _LINEAR
    if bias:
        yield f"{torch_name}.bias", (*path, "bias"), _IDENTITY


def _layer_norm(torch_name, path, bias=True):
    yield f"{torch_name}.weight", (*path, "scale"), _IDENTITY
    if bias:
        yield f"{torch_name}.bias", (*path, "bias"), _IDENTITY


def _bert_entries(cfg: BertConfig, prefix: str = BERT_PREFIX):
    b = ("bert",)
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        yield f"{prefix}embeddings.{name}.weight", (*b, name, "embedding"), _IDENTITY
    yield from _layer_norm(f"{prefix}embeddings.LayerNorm", (*b, "embeddings_ln"))
    for i in range(cfg.num_hidden_layers):
        t, f = f"{prefix}encoder.layer.{i}.", (*b, f"layer_{i}")
        for name in ("query", "key", "value"):
            yield from _linear(f"{t}attention.self.{name}", (*f, "attention", name))
        yield from _linear(f"{t}attention.output.dense", (*f, "attention", "out"))
        yield from _layer_norm(f"{t}attention.output.LayerNorm", (*f, "attention_ln"))
        yield from _linear(f"{t}intermediate.dense", (*f, "intermediate"))
        yield from _linear(f"{t}output.dense", (*f, "output"))
        yield from _layer_norm(f"{t}output.LayerNorm", (*f, "output_ln"))
    yield from _linear(f"{prefix}pooler.dense", (*b, "pooler"))


def _modernbert_entries(cfg: ModernBertConfig, prefix: str = MODERNBERT_PREFIX):
    """Hugging Face `ModernBertModel` keys (layer 0 has no attn_norm: its attention reads the embeddings)."""
    b, norm_bias = ("bert",), cfg.norm_bias
    yield f"{prefix}embeddings.tok_embeddings.weight", (*b, "tok_embeddings", "embedding"), _IDENTITY
    yield from _layer_norm(f"{prefix}embeddings.norm", (*b, "embeddings_norm"), norm_bias)
    for i in range(cfg.num_hidden_layers):
        t, f = f"{prefix}layers.{i}.", (*b, f"layer_{i}")
        if i:
            yield from _layer_norm(f"{t}attn_norm", (*f, "attn_norm"), norm_bias)
        yield from _linear(f"{t}attn.Wqkv", (*f, "attn", "Wqkv"), cfg.attention_bias)
        yield from _linear(f"{t}attn.Wo", (*f, "attn", "Wo"), cfg.attention_bias)
        yield from _layer_norm(f"{t}mlp_norm", (*f, "mlp_norm"), norm_bias)
        yield from _linear(f"{t}mlp.Wi", (*f, "mlp", "Wi"), cfg.mlp_bias)
        yield from _linear(f"{t}mlp.Wo", (*f, "mlp", "Wo"), cfg.mlp_bias)
    yield from _layer_norm(f"{prefix}final_norm", (*b, "final_norm"), norm_bias)


# The attention projections in each published vision layer's state_dict order.
_CLIP_ATTENTION = (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("out_proj", "out"))
_SIGLIP_ATTENTION = (("k_proj", "key"), ("v_proj", "value"), ("q_proj", "query"), ("out_proj", "out"))


def _vision_layer(t: str, f: tuple, attention_order):
    """One CLIP or SigLIP encoder layer's keys (torch prefix `t`, flax path `f`)."""
    for torch_name, name in attention_order:
        yield from _linear(f"{t}self_attn.{torch_name}", (*f, "self_attn", name))
    yield from _layer_norm(f"{t}layer_norm1", (*f, "layer_norm1"))
    yield from _linear(f"{t}mlp.fc1", (*f, "fc1"))
    yield from _linear(f"{t}mlp.fc2", (*f, "fc2"))
    yield from _layer_norm(f"{t}layer_norm2", (*f, "layer_norm2"))


def _vision_entries(cfg: VisionConfig, prefix: str):
    v = ("vision",)
    yield f"{prefix}embeddings.class_embedding", (*v, "class_embedding"), _IDENTITY
    yield f"{prefix}embeddings.patch_embedding.weight", (*v, "patch_embedding", "kernel"), _CONV
    yield f"{prefix}embeddings.position_embedding.weight", (*v, "position_embedding", "embedding"), _IDENTITY
    yield from _layer_norm(f"{prefix}pre_layrnorm", (*v, "pre_layrnorm"))
    for i in range(cfg.num_hidden_layers):
        t, f = f"{prefix}encoder.layers.{i}.", (*v, f"layer_{i}")
        yield from _vision_layer(t, f, _CLIP_ATTENTION)
    yield from _layer_norm(f"{prefix}post_layernorm", (*v, "post_layernorm"))


def _siglip_entries(cfg: VisionConfig, prefix: str):
    """The published SigLipVisionModel's keys (retrievers/layers/siglip.py), in its state_dict order."""
    v = ("vision",)
    yield f"{prefix}embeddings.patch_embedding.weight", (*v, "patch_embedding", "kernel"), _CONV
    yield f"{prefix}embeddings.patch_embedding.bias", (*v, "patch_embedding", "bias"), _IDENTITY
    yield f"{prefix}embeddings.position_embedding.weight", (*v, "position_embedding", "embedding"), _IDENTITY
    for i in range(cfg.num_hidden_layers):
        t, f = f"{prefix}encoder.layers.{i}.", (*v, f"layer_{i}")
        yield from _vision_layer(t, f, _SIGLIP_ATTENTION)
    yield from _layer_norm(f"{prefix}post_layernorm", (*v, "post_layernorm"))
    h = (*v, "head")
    yield f"{prefix}head.probe", (*h, "probe"), _IDENTITY
    yield f"{prefix}head.attention.in_proj_weight", (*h, "in_proj_kernel"), _LINEAR
    yield f"{prefix}head.attention.in_proj_bias", (*h, "in_proj_bias"), _IDENTITY
    yield from _linear(f"{prefix}head.attention.out_proj", (*h, "out_proj"))
    yield from _layer_norm(f"{prefix}head.layernorm", (*h, "layernorm"))
    yield from _linear(f"{prefix}head.mlp.fc1", (*h, "fc1"))
    yield from _linear(f"{prefix}head.mlp.fc2", (*h, "fc2"))


def _head_entries(prefix: str = HEAD_PREFIX):
    p = ("pooling",)
    yield from _layer_norm(f"{prefix}proj.0", (*p, "proj_0"))
    yield from _linear(f"{prefix}proj.1", (*p, "proj_1"))
    yield from _linear(f"{prefix}k_state", (*p, "k_state"), bias=False)
    yield from _linear(f"{prefix}v_state", (*p, "v_state"), bias=False)
    yield from _layer_norm(f"{prefix}o_proj.0", (*p, "o_proj_0"))
    yield from _linear(f"{prefix}o_proj.1", (*p, "o_proj_1"))
    yield from _linear(f"{prefix}split_mlp.0", (*p, "split_mlp_0"))
    yield from _linear(f"{prefix}split_mlp.2", (*p, "split_mlp_2"))


def vision_prefix(layout: TorchLayout, vision: VisionConfig | None = None) -> str:
    """The vision tower's key prefix. CLIP's follows the layout; SigLIP's always has the `vision_model.` level
    (the published tower is its own SigLipVisionModel class, whatever the transformers version)."""
    siglip = vision is not None and vision.model_type == "siglip"
    return VISION_PREFIX + (VISION_MODEL if siglip or layout.vision_model_prefix else "")


def published_entries(config: MIReConfig) -> Iterator[tuple[str, tuple[str, ...], tuple[Callable, Callable]]]:
    """(published key, flax param path, (to_flax, to_torch)) for every parameter, in the reference's key order."""
    if config.modernbert is not None:
        yield from _modernbert_entries(config.modernbert)
        yield from _linear(DENSE, ("linear",), config.modernbert.projection_bias)
    else:
        yield from _bert_entries(config.bert)
        yield LINEAR_KEY, ("linear", "kernel"), _LINEAR
    tower = _siglip_entries if config.vision.model_type == "siglip" else _vision_entries
    yield from tower(config.vision, vision_prefix(config.layout, config.vision))
    yield from _head_entries()


def param_shapes(config: MIReConfig) -> dict:
    """Flax parameter shapes of `config`, without allocating anything."""
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    return jax.tree_util.tree_map(lambda s: tuple(s.shape), shapes)


def _get(tree, path):
    for p in path:
        tree = tree[p]
    return tree


def _set(tree, path, value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def to_numpy(x) -> np.ndarray:
    """numpy array from a numpy array, jax array or torch tensor (bfloat16/float16 tensors become float32)."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch"):
        import torch  # only reached with torch tensors in hand
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.bfloat16, torch.float16) else x).numpy()
    return np.asarray(x)


def _position_ids_keys(config: MIReConfig) -> dict[str, int]:
    """Known `position_ids` buffer keys of older transformers -> their length."""
    keys = {f"{vision_prefix(config.layout, config.vision)}embeddings.position_ids":
            config.vision.num_patches + (config.vision.model_type != "siglip")}  # + CLIP's CLS
    if config.modernbert is None:
        keys[f"{BERT_PREFIX}embeddings.position_ids"] = config.bert.max_position_embeddings
    return keys


def _detect_layout(keys) -> TorchLayout:
    has_prefix = any(k.startswith(VISION_PREFIX + VISION_MODEL) for k in keys)
    return TorchLayout(vision_model_prefix=has_prefix)


def _as_dict(cfg, cls):
    if isinstance(cfg, cls):
        return cfg
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    return cls.from_dict(cfg or {})


def is_modernbert(text_config) -> bool:
    """Whether a text tower config (a Hugging Face dict or PretrainedConfig, or our dataclass) is ModernBERT's."""
    if isinstance(text_config, ModernBertConfig):
        return True
    if hasattr(text_config, "to_dict") and not isinstance(text_config, (BertConfig, Mapping)):
        text_config = text_config.to_dict()
    return isinstance(text_config, Mapping) and text_config.get("model_type") == "modernbert"


def make_config(bert_config, vision_config, head, **kw) -> MIReConfig:
    """MIReConfig from Hugging Face style dicts (or PretrainedConfig objects, or our dataclasses). `bert_config` is
    the text tower's: a BERT config (MIRe) or a ModernBERT one (`model_type` "modernbert", or a `ModernBertConfig`:
    SentMIRe)."""
    if isinstance(vision_config, Mapping) and "vision_config" in vision_config:  # a full CLIP or SigLIP config
        vision_config = {"model_type": vision_config.get("model_type", "clip"), **vision_config["vision_config"]}
    if is_modernbert(bert_config):
        kw["modernbert"] = _as_dict(bert_config, ModernBertConfig)
        bert_config = None
    return MIReConfig(bert=_as_dict(bert_config, BertConfig), vision=_as_dict(vision_config, VisionConfig),
                      head=_as_dict(head, HeadConfig), **kw)


VARIANTS = {"bert": "MIRe (BERT text tower)", "modernbert": "SentMIRe (ModernBERT text tower)"}


def checkpoint_variant(keys) -> str | None:
    """"bert" (MIRe: model.bert.*, model.linear.weight) or "modernbert" (SentMIRe: model.embeddings.tok_embeddings,
    model.layers.*, dense.weight), from a published state dict's keys; None when the text keys are neither's."""
    keys = list(keys)
    if any(k.startswith(BERT_PREFIX) or k == LINEAR_KEY for k in keys):
        return "bert"
    if any(k.startswith((f"{MODERNBERT_PREFIX}embeddings.tok_embeddings", f"{MODERNBERT_PREFIX}layers.",
                         f"{MODERNBERT_PREFIX}final_norm", f"{DENSE}.")) for k in keys):
        return "modernbert"
    return None


def _key_groups(keys) -> str:
    """Keys of more than three components grouped by their first two: 'model.bert.*, model.linear.weight'."""
    groups = {k if k.count(".") < 3 else ".".join(k.split(".")[:2]) + ".*" for k in keys}
    return ", ".join(sorted(groups))


def check_variant(keys, config: MIReConfig) -> None:
    """Refuses, in one line naming the keys that do not fit, a checkpoint of one text tower given as the other."""
    keys = list(keys)
    found = checkpoint_variant(keys)
    if found is None or found == config.text_tower:
        return
    expected = {k for k, _, _ in published_entries(config)}
    text_keys = [k for k in keys if k not in expected and not k.startswith((VISION_PREFIX, HEAD_PREFIX))]
    wanted = [k for k, _, _ in published_entries(config) if not k.startswith((VISION_PREFIX, HEAD_PREFIX))]
    raise CheckpointError(f"a {VARIANTS[found]} checkpoint given as a {VARIANTS[config.text_tower]} one: its keys "
                          f"{_key_groups(text_keys)} ({len(text_keys)} keys) do not fit that layout, which has "
                          f"{_key_groups(wanted)} instead; give the config of a "
                          f"{'ModernBERT' if found == 'modernbert' else 'BERT'} text tower")


def from_torch(state_dict: Mapping[str, Any], bert_config, vision_config, head, *, dtype: str = "float32"):
    """Published-layout state dict -> (MIReConfig, params).

    `state_dict` maps published key -> numpy array or torch tensor; `bert_config`/`vision_config` are dicts with
    Hugging Face field names (as `PretrainedConfig.to_dict()` gives); `head` a dict with `dim`, `num_tokens`,
    `num_heads` (and optionally `residual`); `vision_config["model_type"]` picks the tower (CLIP's or SigLIP's
    names, absent: CLIP), and `bert_config` the text tower: a ModernBERT one (`model_type` "modernbert") makes a
    SentMIRe, whose projection has a bias when the checkpoint has `dense.bias`. Raises CheckpointError, in one
    line, counting the missing, unexpected and wrong-shaped keys and naming the first few of each (wrong shapes
    with both shapes), the vision tower the checkpoint holds when it is not the config's, or the keys of a
    checkpoint of the other text tower.
    """
    keys = set(state_dict)
    config = make_config(bert_config, vision_config, head, dtype=dtype, layout=_detect_layout(keys))
    check_variant(keys, config)
    if config.modernbert is not None and f"{DENSE}.bias" in keys and not _has_field(bert_config, "projection_bias"):
        config = config.replace_text(projection_bias=True)  # a Dense layer with a bias: the keys tell
    position_ids = {k: n for k, n in _position_ids_keys(config).items() if k in keys}
    for key, n in position_ids.items():
        value = to_numpy(state_dict[key])
        if value.shape != (1, n) or not np.array_equal(value[0], np.arange(n)):
            raise CheckpointError(f"{key}: expected arange({n}) of shape (1, {n}), got shape {value.shape}")
    config = config.replace(layout=TorchLayout(config.layout.vision_model_prefix, tuple(sorted(position_ids))))
    return config, _params_from_entries(state_dict, config, published_entries(config), extra=set(position_ids))


def _has_field(cfg, name: str) -> bool:
    return hasattr(cfg, name) if not isinstance(cfg, Mapping) else name in cfg


def _params_from_entries(state_dict, config, entries, extra=frozenset()) -> dict:
    shapes = param_shapes(config)
    params, missing, bad_shape = {}, [], []
    seen = set(extra)
    for key, path, (to_flax, to_torch) in entries:
        expected_flax = _get(shapes, path)
        expected = to_torch(np.empty(expected_flax, np.float32)).shape
        if key not in state_dict:
            missing.append(f"{key} (expected shape {tuple(expected)})")
            continue
        seen.add(key)
        value = to_numpy(state_dict[key])
        if value.shape != expected:
            bad_shape.append(f"{key}: checkpoint shape {tuple(value.shape)}, config expects {tuple(expected)}")
            continue
        _set(params, path, np.ascontiguousarray(to_flax(value)).astype(np.float32))
    unexpected = sorted(set(state_dict) - seen)
    problems = [_listing(items, noun) for items, noun in ((missing, "missing key"), (unexpected, "unexpected key"),
                                                          (bad_shape, "wrong shape")) if items]
    if problems:
        cause = _variant_hint(state_dict, config) or f"({TOWER_NAMES[config.vision.model_type]} vision tower)"
        raise CheckpointError(f"checkpoint does not match the config {cause}: " + "; ".join(problems))
    return params


SHOWN_KEYS = 3  # keys named per kind of problem; the rest are counted


def _listing(items: list[str], noun: str) -> str:
    """'2 missing keys [a, b]' or '40 missing keys [a, b, c, +37 more]'."""
    shown = items[:SHOWN_KEYS] + ([f"+{len(items) - SHOWN_KEYS} more"] if len(items) > SHOWN_KEYS else [])
    return f"{len(items)} {noun}{'s' if len(items) != 1 else ''} [{', '.join(shown)}]"


TOWER_NAMES = {"clip": "CLIP", "siglip": "SigLIP"}
# A key only one vision tower has -> that tower.
_VISION_MARKERS = {"embeddings.class_embedding": "clip", "pre_layrnorm.weight": "clip", "head.probe": "siglip"}


def _variant_hint(state_dict, config: MIReConfig) -> str:
    """'(a SigLIP vision tower: ..., the config a CLIP one ...)' when the checkpoint's vision keys name another
    tower than the config's; '' otherwise."""
    for key in sorted(state_dict):
        if key.startswith(VISION_PREFIX):
            kind = next((k for marker, k in _VISION_MARKERS.items() if key.endswith(marker)), None)
            if kind is not None and kind != config.vision.model_type:
                return (f"(the checkpoint holds a {TOWER_NAMES[kind]} vision tower, {key}, the config a "
                        f"{TOWER_NAMES[config.vision.model_type]} one: give the checkpoint's own vision config)")
    return ""


def to_torch(config: MIReConfig, params) -> dict[str, np.ndarray]:
    """params -> published-layout state dict of numpy arrays, EVERY key included (BERT pooler, CLIP
    post-LayerNorm, and the `position_ids` buffers the import saw), so that `load_state_dict(strict=True)` works."""
    out = {}
    for key, path, (_, to_torch_fn) in published_entries(config):
        out[key] = np.ascontiguousarray(to_torch_fn(np.asarray(_get(params, path))))
    for key, n in _position_ids_keys(config).items():
        if key in config.layout.position_ids:
            out[key] = np.arange(n, dtype=np.int64)[None]
    return out
