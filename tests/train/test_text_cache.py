"""Pre-training with the frozen text tower's outputs cached (dropout off) trains exactly as without the cache."""
import json
import os
import shutil

import pytest
from tiny_setup import tiny_config

from mire_jax.data.feature_cache import FeatureCacheError
from mire_jax.train.loop import train


@pytest.fixture(scope="module")
def world(tiny_world):
    return tiny_world


def _config(world, **overrides):
    """Pre-training on the tiny world, dropout off, 4 steps of one group of 8, no validation."""
    base = {"phase": "pretrain", "dropout": False, "temperature": 0.3, "log_every": 1, "total_steps": 4,
            "batch_size": 8, "negatives_group": 8, "validation.split": ""}
    return tiny_config(world, **{**base, **overrides})


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [(r["loss"], r["accuracy"], r["grad_norm"]) for r in map(json.loads, f) if "loss" in r]


def test_cached_text_features_give_the_same_training(world, tmp_path):
    cache = str(tmp_path / "text_cache")
    train(_config(world), str(tmp_path / "plain"))
    train(_config(world, **{"data.text_cache_dir": cache}), str(tmp_path / "cached"))
    plain, cached = _losses(str(tmp_path / "plain")), _losses(str(tmp_path / "cached"))
    assert len(plain) == len(cached) == 4
    for a, b in zip(plain, cached):
        assert all(abs(x - y) <= 1e-5 * max(1.0, abs(x)) for x, y in zip(a, b)), (a, b)
    assert sorted(os.listdir(cache)) == ["passages", "queries"]
    # A second run reuses the cache; one with other lengths is refused by name instead of misread.
    train(_config(world, **{"data.text_cache_dir": cache}), str(tmp_path / "again"))
    assert _losses(str(tmp_path / "again")) == cached
    with pytest.raises(FeatureCacheError, match="text_cache"):
        train(_config(world, **{"data.text_cache_dir": cache, "data.doc_maxlen": 40}), str(tmp_path / "other"))
    # Each part fills on its own: a cache given another run's queries encodes only the passages.
    half = tmp_path / "half"
    shutil.copytree(os.path.join(cache, "queries"), half / "queries")
    before = sorted(os.listdir(half / "queries"))
    train(_config(world, **{"data.text_cache_dir": str(half)}), str(tmp_path / "half_run"))
    assert _losses(str(tmp_path / "half_run")) == cached
    assert sorted(os.listdir(half / "queries")) == before and sorted(os.listdir(half)) == ["passages", "queries"]
    # Passages encoded trimmed to a multiple of 8 word pieces train the same, up to float rounding.
    train(_config(world, **{"data.text_cache_dir": str(tmp_path / "bucketed"), "data.text_cache_length_bucket": 8}),
          str(tmp_path / "bucketed_run"))
    for a, b in zip(cached, _losses(str(tmp_path / "bucketed_run"))):
        assert all(abs(x - y) <= 1e-5 * max(1.0, abs(x)) for x, y in zip(a, b)), (a, b)


@pytest.mark.parametrize("overrides", [{"dropout": True}, {"phase": "finetune", "temperature": 0.8}])
def test_a_text_tower_that_changes_cannot_be_cached(world, tmp_path, overrides):
    with pytest.raises(ValueError, match="text_cache_dir"):
        train(_config(world, **{"data.text_cache_dir": str(tmp_path / "c"), **overrides}), str(tmp_path / "w"))
