"""The frozen vision tower's features of every image of a training set, cached once before pre-training: the
tower never trains, so pre-training reads the cache instead of decoding and encoding images (`config.data.
vision_cache_dir`, the key the input pipeline reads). Rerunning resumes; on several hosts every process caches
its share of the images into the same folder."""
from __future__ import annotations

import dataclasses

import jax

from mire_jax.data import builders
from mire_jax.data.feature_cache import check_vision_tower, fill_from_sources, vision_encoder
from mire_jax.train.loop import initial_model


def cache_vision_features(cfg) -> dict:
    """Caches the images of `cfg.data.splits` of the training config `cfg`; returns the report as a dict."""
    d, vc = cfg.data, cfg.vision_cache
    empty = [f"config.data.{key}" for key in ("builder", "data_dir", "vision_cache_dir") if not d[key]]
    if empty:
        raise ValueError(f"{' and '.join(empty)} empty: the cache needs the dataset's builder, its tfds data folder "
                         "and the cache folder")
    image_root = d.image_root or None
    if d.manual_dir:
        builder = builders.prepare(d.builder, data_dir=d.data_dir, manual_dir=d.manual_dir,
                                   config=d.builder_config or None, image_root=image_root)
    else:
        builder = builders.make_builder(d.builder, data_dir=d.data_dir, config=d.builder_config or None,
                                        image_root=image_root)
        if not builder.is_prepared():
            raise FileNotFoundError(f"{d.data_dir}: dataset {d.builder} is not built there; set "
                                    "config.data.manual_dir to build it from the downloaded files")
    splits = list(d.splits)
    sources = {split: builder.as_data_source(split=split) for split in splits}
    model_config, params = initial_model(cfg.model)
    check_vision_tower(d.vision_cache_dir, model_config.vision)  # resuming into another tower's cache is refused
    encode = vision_encoder(model_config, params, vc.batch_size)
    vision = model_config.vision
    report = fill_from_sources(
        d.vision_cache_dir, sources, encode, feature_shape=(1 + vision.num_patches, vision.hidden_size),
        image=vision.image_processing(), dtype=vc.dtype, shard_size=vc.shard_size, batch_size=encode.batch_size,
        image_root=image_root, image_policy=d.image_policy, process_index=jax.process_index(),
        process_count=jax.process_count(), read_threads=vc.read_threads,
        metadata={"model_dir": cfg.model.dir, "vision": dataclasses.asdict(vision),
                  "dataset": {"builder": d.builder, "config": d.builder_config, "splits": splits}})
    return dataclasses.asdict(report)
