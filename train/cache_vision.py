r"""Cache the frozen vision tower's features of every image of a dataset (run once before pre-training).

    python train/cache_vision.py --config configs/X.py[:arg] [--config.key=value ...]

Reads from the ml_collections config:
  config.model.dir            a mire-jax model folder (config.json + params.safetensors); when unset,
                              config.model.preset ("base" | "tiny") with random weights from config.model.seed
                              (smoke tests only: random features are of no use for training)
  config.data.builder         "vid2r" | "m2kr" | "image_question_jsonl"
  config.data.builder_config  e.g. "EVQA_data" for m2kr (optional)
  config.data.data_dir        the tfds data dir the dataset was built into
  config.data.manual_dir      optional: build the dataset from these files first (no-op when built)
  config.data.splits          splits whose images to cache (default ("train",))
  config.data.image_root      where image_id paths resolve when the records carry no image bytes (optional)
  config.data.image_policy    "fail" (default) or "skip" for missing / undecodable images
  config.data.vision_cache_dir  the cache folder (the training pipeline reads the same key)
  config.vision_cache.dtype, .shard_size, .batch_size, .read_threads   (defaults float16, 1024, 64, 8)

Rerunning resumes: finished shards are kept and their images skipped. On several hosts every process
caches its share of the images into the same folder.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file (file.py[:arg]).",
                                          lock_config=True)


def _get(cfg, dotted: str, default=None):
    """cfg.a.b, or default when any level is missing or None."""
    node = cfg
    for part in dotted.split("."):
        if node is None or part not in node:
            return default
        node = node[part]
    return default if node is None else node


# --- Model loading: the one place that knows where the frozen vision tower's weights come from. -------------
def load_vision_tower(cfg):
    """-> (MIReConfig, params) holding the vision tower (the rest of the params is unused here)."""
    import jax

    import mire_jax
    model_dir = _get(cfg, "model.dir")
    if model_dir:
        from mire_jax.model_io import load_model
        return load_model(model_dir)
    preset = _get(cfg, "model.preset", "base")
    if preset not in ("base", "tiny"):
        raise ValueError(f"config.model.preset must be 'base' or 'tiny', got {preset!r}")
    logging.warning("config.model.dir is not set: caching the features of a RANDOMLY initialised %s tower "
                    "(for smoke tests only)", preset)
    model_config = getattr(mire_jax.MIReConfig, preset)()
    return model_config, mire_jax.init_params(model_config, jax.random.PRNGKey(_get(cfg, "model.seed", 0)))


def make_encode_fn(model_config, params):
    """pixels [B, S, S, 3] -> features [B, 1+P, v], data-parallel over this host's devices (B must divide)."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import mire_jax
    mesh = Mesh(np.array(jax.local_devices()), ("data",))
    params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))

    def encode(pixels):
        return mire_jax.encode_vision(model_config, params, jax.device_put(pixels, batch_sharding))

    return encode, len(mesh.devices.flat)


def run(cfg) -> dict:
    """Cache the features described by `cfg` (see the module docstring); returns the report as a dict."""
    import jax

    from mire_jax.data import builders
    from mire_jax.data.feature_cache import fill_from_sources

    cache_dir = _get(cfg, "data.vision_cache_dir")
    data_dir = _get(cfg, "data.data_dir")
    name = _get(cfg, "data.builder")
    if not (cache_dir and data_dir and name):
        raise ValueError("config.data.builder, config.data.data_dir and config.data.vision_cache_dir are required")
    builder_config = _get(cfg, "data.builder_config")
    manual_dir = _get(cfg, "data.manual_dir")
    if manual_dir:
        builder = builders.prepare(name, data_dir=data_dir, manual_dir=manual_dir, config=builder_config)
    else:
        builder = builders.make_builder(name, data_dir=data_dir, config=builder_config)
        if not builder.is_prepared():
            raise FileNotFoundError(f"dataset {name} ({builder_config}) is not built in {data_dir}: set "
                                    "config.data.manual_dir to build it, or build it first")
    splits = list(_get(cfg, "data.splits", ("train",)))
    sources = {split: builder.as_data_source(split=split) for split in splits}

    model_config, params = load_vision_tower(cfg)
    encode, num_devices = make_encode_fn(model_config, params)
    batch_size = int(_get(cfg, "vision_cache.batch_size", 64))
    batch_size = -(-batch_size // num_devices) * num_devices  # a multiple of the local device count
    vision = model_config.vision
    report = fill_from_sources(
        cache_dir, sources, encode,
        feature_shape=(1 + vision.num_patches, vision.hidden_size), image_size=vision.image_size,
        dtype=_get(cfg, "vision_cache.dtype", "float16"), shard_size=int(_get(cfg, "vision_cache.shard_size", 1024)),
        batch_size=batch_size, image_root=_get(cfg, "data.image_root"),
        image_policy=_get(cfg, "data.image_policy", "fail"),
        process_index=jax.process_index(), process_count=jax.process_count(),
        read_threads=int(_get(cfg, "vision_cache.read_threads", 8)),
        metadata={"model_dir": _get(cfg, "model.dir"), "vision": dataclasses.asdict(vision),
                  "dataset": {"builder": name, "config": builder_config, "splits": splits}})
    return dataclasses.asdict(report)


def main(argv) -> None:
    del argv
    report = run(_CONFIG.value)
    skipped = report.pop("skipped")
    for image_id, reason in skipped[:20]:
        logging.warning("skipped %s: %s", image_id, reason)
    report["num_skipped"] = len(skipped)
    print(json.dumps(report))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    flags.mark_flag_as_required("config")
    app.run(main)
