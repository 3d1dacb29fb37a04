"""Foreign checkpoints <-> mire-jax params.

The published layout is the key set of the reference PyTorch model's `state_dict()`:

    model.bert.*                                BERT (Hugging Face BertModel, pooler included)
    model.linear.weight                         hidden -> dim projection, no bias
    vision_tower.vision_tower[.vision_model].*  CLIP vision model (the `vision_model.` level: transformers < 5)
    query_fusion.*                              the pooling head

Also imports separate Hugging Face checkpoints: a CLIP (vision) model, a ColBERTv2 folder (`bert.*` +
`linear.weight`) or a plain BERT. Run `python -m mire_jax.convert --help` for the command line.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np

from mire_jax.config import BertConfig, HeadConfig, MIReConfig, TorchLayout, VisionConfig

BERT_PREFIX = "model.bert."
LINEAR_KEY = "model.linear.weight"
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


def _layer_norm(torch_name, path):
    yield f"{torch_name}.weight", (*path, "scale"), _IDENTITY
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


def _vision_entries(cfg: VisionConfig, prefix: str):
    v = ("vision",)
    yield f"{prefix}embeddings.class_embedding", (*v, "class_embedding"), _IDENTITY
    yield f"{prefix}embeddings.patch_embedding.weight", (*v, "patch_embedding", "kernel"), _CONV
    yield f"{prefix}embeddings.position_embedding.weight", (*v, "position_embedding", "embedding"), _IDENTITY
    yield from _layer_norm(f"{prefix}pre_layrnorm", (*v, "pre_layrnorm"))
    for i in range(cfg.num_hidden_layers):
        t, f = f"{prefix}encoder.layers.{i}.", (*v, f"layer_{i}")
        for torch_name, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("out_proj", "out")):
            yield from _linear(f"{t}self_attn.{torch_name}", (*f, "self_attn", name))
        yield from _layer_norm(f"{t}layer_norm1", (*f, "layer_norm1"))
        yield from _linear(f"{t}mlp.fc1", (*f, "fc1"))
        yield from _linear(f"{t}mlp.fc2", (*f, "fc2"))
        yield from _layer_norm(f"{t}layer_norm2", (*f, "layer_norm2"))
    yield from _layer_norm(f"{prefix}post_layernorm", (*v, "post_layernorm"))


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


def vision_prefix(layout: TorchLayout) -> str:
    return VISION_PREFIX + (VISION_MODEL if layout.vision_model_prefix else "")


def published_entries(config: MIReConfig) -> Iterator[tuple[str, tuple[str, ...], tuple[Callable, Callable]]]:
    """(published key, flax param path, (to_flax, to_torch)) for every parameter, in the reference's key order."""
    yield from _bert_entries(config.bert)
    yield LINEAR_KEY, ("linear", "kernel"), _LINEAR
    yield from _vision_entries(config.vision, vision_prefix(config.layout))
    yield from _head_entries()


def param_shapes(config: MIReConfig) -> dict:
    """Flax parameter shapes of `config`, without allocating anything."""
    from mire_jax.api import init_params  # local: keeps this module importable without building a model
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
    return {f"{BERT_PREFIX}embeddings.position_ids": config.bert.max_position_embeddings,
            f"{vision_prefix(config.layout)}embeddings.position_ids": config.vision.num_patches + 1}


def _detect_layout(keys) -> TorchLayout:
    has_prefix = any(k.startswith(VISION_PREFIX + VISION_MODEL) for k in keys)
    return TorchLayout(vision_model_prefix=has_prefix)


def _as_dict(cfg, cls):
    if isinstance(cfg, cls):
        return cfg
    if hasattr(cfg, "to_dict"):
        cfg = cfg.to_dict()
    return cls.from_dict(cfg or {})


def make_config(bert_config, vision_config, head, **kw) -> MIReConfig:
    """MIReConfig from Hugging Face style dicts (or PretrainedConfig objects, or our dataclasses)."""
    if isinstance(vision_config, Mapping) and "vision_config" in vision_config:  # a full CLIPConfig dict
        vision_config = vision_config["vision_config"]
    return MIReConfig(bert=_as_dict(bert_config, BertConfig), vision=_as_dict(vision_config, VisionConfig),
                      head=_as_dict(head, HeadConfig), **kw)


def from_torch(state_dict: Mapping[str, Any], bert_config, vision_config, head, *, dtype: str = "float32"):
    """Published-layout state dict -> (MIReConfig, params).

    `state_dict` maps published key -> numpy array or torch tensor; `bert_config`/`vision_config` are dicts with
    Hugging Face field names (as `PretrainedConfig.to_dict()` gives); `head` a dict with `dim`, `num_tokens`,
    `num_heads` (and optionally `residual`). Raises CheckpointError naming every missing, unexpected or
    wrong-shaped key (with both shapes).
    """
    keys = set(state_dict)
    config = make_config(bert_config, vision_config, head, dtype=dtype, layout=_detect_layout(keys))
    position_ids = {k: n for k, n in _position_ids_keys(config).items() if k in keys}
    for key, n in position_ids.items():
        value = to_numpy(state_dict[key])
        if value.shape != (1, n) or not np.array_equal(value[0], np.arange(n)):
            raise CheckpointError(f"{key}: expected arange({n}) of shape (1, {n}), got shape {value.shape}")
    config = config.replace(layout=TorchLayout(config.layout.vision_model_prefix, tuple(sorted(position_ids))))
    return config, _params_from_entries(state_dict, config, published_entries(config), extra=set(position_ids))


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
    problems = []
    if bad_shape:
        problems.append("wrong shapes:\n  " + "\n  ".join(bad_shape))
    if missing:
        problems.append("missing keys:\n  " + "\n  ".join(missing))
    if unexpected:
        problems.append("unexpected keys (not in the config's layout):\n  " + "\n  ".join(unexpected))
    if problems:
        raise CheckpointError("checkpoint does not match the config; " + "\n".join(problems))
    return params


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


# ---------------------------------------------------------------------------------------------------------------
# Files: .safetensors (no torch needed), .bin / .pth / .pt (torch, imported lazily).

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


def _read_json(path):
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: invalid JSON: {error}") from error


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
    return _read_json(os.path.join(text_dir, "config.json")), sd


def hf_vision_state(vision_dir: str) -> tuple[dict, dict[str, np.ndarray]]:
    """A CLIP or CLIPVision folder -> (vision config dict, published-key weights of the vision model)."""
    weights = _hf_weights(vision_dir)
    vision = _strip(weights, "vision_model.") or weights
    cfg = _read_json(os.path.join(vision_dir, "config.json"))
    cfg = cfg.get("vision_config", cfg)
    return cfg, {VISION_PREFIX + k: v for k, v in vision.items() if not k.endswith("position_ids")}


def from_hf_parts(text_dir: str, vision_dir: str | None = None, head=None, *, vision_config=None, seed: int = 0,
                  dtype: str = "float32"):
    """Assemble MIRe from separate Hugging Face checkpoints -> (config, params).

    text_dir: a ColBERTv2 folder or a plain BERT (keys with or without `bert.`); vision_dir: a CLIP or
    CLIPVision folder, or None with `vision_config` for a vision tower to be trained from scratch. Parts the
    checkpoints lack (the pooling head always; the projection of a plain BERT; a pooler some BERTs drop) get the
    initialisation of `seed`, with a warning naming them.
    """
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
    from mire_jax.api import init_params
    return init_params(config, jax.random.PRNGKey(seed))


# ---------------------------------------------------------------------------------------------------------------
# Command line.

def _config_arg(value: str, kind: str) -> dict:
    """A Hugging Face config.json path (or a folder holding one), or the name of a published size."""
    named = {"bert": {"base": BertConfig(), "large": BertConfig(hidden_size=1024, num_hidden_layers=24,
                                                                 num_attention_heads=16, intermediate_size=4096)},
             "vision": {"base": VisionConfig(), "large": VisionConfig(hidden_size=1024, intermediate_size=4096,
                                                                     num_hidden_layers=24, num_attention_heads=16,
                                                                     image_size=336, patch_size=14)}}
    if value in named[kind]:
        return named[kind][value].__dict__
    path = os.path.join(value, "config.json") if os.path.isdir(value) else value
    return _read_json(path)


def main(argv=None) -> None:
    """`python -m mire_jax.convert`: a bad file or setting is reported in one line (`error: ...`, exit status 2),
    the traceback only with --debug (or MIRE_DEBUG=1)."""
    from mire_jax import cli

    args = _parser().parse_args(argv)
    with cli.user_errors(args.debug):
        _run(args)


def _parser():
    import argparse

    from mire_jax import cli

    p = argparse.ArgumentParser(prog="python -m mire_jax.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("import", help="published MIRe checkpoint (.pth/.bin/.safetensors) -> model folder")
    a.add_argument("checkpoint")
    a.add_argument("--bert-config", default="base", help="config.json (or folder), or 'base' / 'large'")
    a.add_argument("--vision-config", default="base", help="CLIP(Vision) config.json (or folder), or 'base' (ViT-B/32, 224 px) / 'large' (ViT-L/14, 336 px)")
    a.add_argument("--out", required=True, help="model folder to write")
    a.add_argument("--tokenizer", default="", help="vocab.txt or tokenizer folder to copy into the model folder "
                   "(the published runs use bert-base-uncased's, as ColBERTv2 ships it)")
    h = sub.add_parser("import-hf", help="separate Hugging Face checkpoints (ColBERTv2 or BERT + CLIP) -> model folder")
    h.add_argument("--text", required=True, help="ColBERTv2 or BERT folder (config.json + weights)")
    h.add_argument("--vision", required=True, help="CLIP or CLIPVision folder (config.json + weights)")
    h.add_argument("--seed", type=int, default=0, help="seed of the parts the checkpoints lack (pooling head)")
    h.add_argument("--out", required=True)
    for q in (a, h):
        q.add_argument("--head-dim", type=int, default=128)
        q.add_argument("--head-tokens", type=int, default=16, help="global visual tokens")
        q.add_argument("--head-heads", type=int, default=12, help="pooling heads")
        q.add_argument("--residual", action="store_true", help="the fusion ablation head (text added back)")
    e = sub.add_parser("export", help="model folder -> published layout (.safetensors, or .pth with {'model': ...})")
    e.add_argument("model")
    e.add_argument("--out", required=True, help="file ending in .safetensors or .pth")
    e.add_argument("--layout", choices=["keep", "transformers4", "transformers5"], default="keep",
                   help="CLIP key spelling: with (transformers4) or without (transformers5) 'vision_model.'; "
                        "'keep' reproduces the imported checkpoint's")
    p.add_argument("--debug", action="store_true", help=cli.DEBUG_HELP)
    for q in (a, h, e):  # also after the command; SUPPRESS keeps a --debug given before it
        q.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=cli.DEBUG_HELP)
    return p


def _run(args) -> None:
    from mire_jax.model_io import has_tokenizer, load_model, save_model

    if args.command in ("import", "import-hf"):
        head = dict(dim=args.head_dim, num_tokens=args.head_tokens, num_heads=args.head_heads, residual=args.residual)
        if args.command == "import":
            config, params = from_torch(load_state_dict(args.checkpoint), _config_arg(args.bert_config, "bert"),
                                        _config_arg(args.vision_config, "vision"), head)
            tokenizer = args.tokenizer
        else:
            config, params = from_hf_parts(args.text, args.vision, head, seed=args.seed)
            tokenizer = args.text if has_tokenizer(args.text) else ""  # ColBERTv2's folder holds its vocabulary
            if not tokenizer:
                print(f"note: {args.text} holds no vocab.txt or tokenizer.json; copy one into {args.out}")
        save_model(args.out, config, params, tokenizer=tokenizer)
        n = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
        print(f"wrote {args.out}: {n / 1e6:.1f}M parameters")
    else:
        config, params = load_model(args.model)
        if args.layout != "keep":
            config = config.replace(layout=TorchLayout(args.layout == "transformers4", config.layout.position_ids))
        sd = to_torch(config, params)
        save_state_dict(sd, args.out)
        print(f"wrote {args.out}: {len(sd)} keys")


if __name__ == "__main__":
    main()
