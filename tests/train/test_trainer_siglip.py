"""Training with a SigLIP vision tower on the tiny world, as with CLIP: the vision-feature cache ([1+S, v] per image,
SigLIP's own preprocessing), pre-training from it resumed to the same losses (dropout on, negatives groups of 4),
and a cache of another tower refused in one line. Fine-tuning from pixels through the SigLIP tower: the step
layout test (test_layouts_siglip.py)."""
import json
import os
import types

import jax
import numpy as np
import pytest
from tiny_setup import tiny_config

import mire_jax
from mire_jax.data.feature_cache import FeatureCache, FeatureCacheError
from mire_jax.retrieval import images
from mire_jax.retrieval.model_folder import save_model
from mire_jax.tokenization.colbert import ColbertTokenizer
from mire_jax.train.loop import train
from mire_jax.train.vision_cache import cache_vision_features


@pytest.fixture(scope="module")
def run(tiny_world, tmp_path_factory):
    """A tiny random SigLIP model folder with the world's vocabulary, and its features of the training images."""
    root = tmp_path_factory.mktemp("siglip_train")
    vocab = ColbertTokenizer.from_pretrained(os.path.join(tiny_world, "vocab.txt")).vocab_size
    config = mire_jax.MIReConfig.tiny_siglip(vocab_size=vocab)
    params = jax.device_get(mire_jax.init_params(config, jax.random.PRNGKey(0)))
    save_model(root / "model", config, params)
    common = {"model.dir": str(root / "model"), "data.data_dir": str(root / "tfds"), "validation.split": "",
              "data.vision_cache_dir": str(root / "cache"), "log_every": 1, "batch_size": 8, "negatives_group": 4}
    report = cache_vision_features(tiny_config(tiny_world, **common, **{"vision_cache.batch_size": 8,
                                                                        "vision_cache.read_threads": 2}))
    return types.SimpleNamespace(world=tiny_world, root=root, config=config, params=params, common=common,
                                 report=report)


def _config(run, **overrides):
    return tiny_config(run.world, **{**run.common, **overrides})


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [(r["step"], r["loss"], r["accuracy"], r["grad_norm"]) for r in map(json.loads, f) if "loss" in r]


def test_the_cache_holds_the_siglip_features(run):
    cache = FeatureCache(run.root / "cache")
    assert run.report["num_written"] == len(cache) > 8 and cache.feature_shape == (1 + 25, 42)
    assert cache.metadata["vision"]["model_type"] == "siglip"
    processing = run.config.vision.image_processing()
    assert processing.resize == "square" and processing.mean == (0.5,) * 3
    some = sorted(cache.ids())[:3]
    pixels = np.stack([images.preprocess_bytes(images.read_image_file(os.path.join(run.world, "images", i)),
                                               processing) for i in some])
    want = np.asarray(mire_jax.encode_vision(run.config, run.params, pixels))
    np.testing.assert_allclose(np.stack([cache[i] for i in some]).astype(np.float32), want, rtol=2e-3, atol=2e-3)


def test_pretraining_from_the_cache_resumes_to_the_same_losses(run, tmp_path):
    whole, halves = str(tmp_path / "whole"), str(tmp_path / "halves")
    pretrain = lambda steps: _config(run, phase="pretrain", temperature=0.3, total_steps=steps,  # noqa: E731
                                     checkpoint_every=2)
    train(pretrain(4), whole)
    train(pretrain(2), halves)
    train(pretrain(4), halves)  # the same command, resumed from step 2
    assert [r[0] for r in _losses(halves)] == [1, 2, 3, 4]
    assert _losses(whole) == _losses(halves)
    assert len({r[1] for r in _losses(whole)}) == 4


def test_a_cache_of_another_tower_is_refused(run, tmp_path):
    """A CLIP model with the SigLIP features: refused before the first step, naming the folder and both shapes."""
    cfg = _config(run, **{"model.dir": "", "model.preset": "tiny", "total_steps": 1})
    with pytest.raises(FeatureCacheError, match=r"cache: holds vision features of shape \(26, 42\), the model's clip "
                                                r"tower gives \(17, 48\); cache its features into another folder"):
        train(cfg, str(tmp_path / "clip"))
