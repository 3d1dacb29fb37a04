"""Pre-training with the frozen text tower's outputs cached (dropout off) trains exactly as without the cache."""
import importlib.util
import json
import os
import pathlib

import pytest

from mire_jax.data.feature_cache import FeatureCacheError
from mire_jax.train.loop import train

TINY = pathlib.Path(__file__).resolve().parents[2] / "configs" / "tiny.py"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mire_jax.demo.world import SyntheticSizes, generate
    out = tmp_path_factory.mktemp("text_cache") / "data"
    generate(out, sizes=SyntheticSizes.tiny(), progress=False)
    return str(out)


def _config(world, **overrides):
    spec = importlib.util.spec_from_file_location("tiny", TINY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config(world)
    cfg.phase, cfg.dropout, cfg.temperature, cfg.log_every, cfg.total_steps = "pretrain", False, 0.3, 1, 4
    cfg.batch_size, cfg.negatives_group = 8, 8
    cfg.validation.split = ""
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


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


@pytest.mark.parametrize("overrides", [{"dropout": True}, {"phase": "finetune", "temperature": 0.8}])
def test_a_text_tower_that_changes_cannot_be_cached(world, tmp_path, overrides):
    with pytest.raises(ValueError, match="text_cache_dir"):
        train(_config(world, **{"data.text_cache_dir": str(tmp_path / "c"), **overrides}), str(tmp_path / "w"))
