"""Filling the vision-feature cache from a dataset: fake encoder (resume, sharding, policies) and the real
entry point (train/cache_vision.py with a tiny random tower) compared with an in-process encode."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mire_jax.config import ImageProcessing
from mire_jax.data.feature_cache import FeatureCache, fill_from_sources
from mire_jax.retrieval import images

REPO = pathlib.Path(__file__).resolve().parents[2]
SHAPE = (3, 6)


def fake_encode(pixels):
    """A deterministic function of the pixels: per-channel means and maxima, tiled to SHAPE."""
    stats = np.concatenate([pixels.mean(axis=(1, 2)), pixels.max(axis=(1, 2))], axis=-1)  # [B, 6]
    return np.repeat(stats[:, None, :], SHAPE[0], axis=1) * np.arange(1, SHAPE[0] + 1)[None, :, None]


def _vid2r_images(fixtures_dir):
    records = json.loads((fixtures_dir / "vid2r" / "ViD2R.json").read_text())
    return {r["image"]: (fixtures_dir / "vid2r" / "images" / r["image"]).read_bytes() for r in records}


def _fill(tmp_path, sources, **kw):
    args = dict(feature_shape=SHAPE, image=ImageProcessing(size=32), dtype="float32", shard_size=2, batch_size=2, read_threads=2,
                progress=False)
    args.update(kw)
    return fill_from_sources(tmp_path / "cache", sources, fake_encode, **args)


def test_fill_resume_and_sharding(tmp_path, fixtures_dir, vid2r_source):
    expected = _vid2r_images(fixtures_dir)
    sources = {"train": vid2r_source}
    # Two "hosts" each fill their share of the images; together they cover all of them, once.
    r0 = _fill(tmp_path, sources, process_index=0, process_count=2)
    r1 = _fill(tmp_path, sources, process_index=1, process_count=2)
    assert r0.num_images == r1.num_images == len(expected) == 3
    assert (r0.num_written, r1.num_written) == (2, 1)
    cache = FeatureCache(tmp_path / "cache")
    assert set(cache.ids()) == set(expected)
    for image_id, data in expected.items():
        want = fake_encode(images.preprocess_bytes(data, ImageProcessing(size=32))[None])[0]
        np.testing.assert_allclose(cache[image_id], want, rtol=1e-6)
    # A rerun finds everything cached and writes nothing.
    again = _fill(tmp_path, sources)
    assert (again.num_already_cached, again.num_written) == (3, 0)


def test_fill_image_policies(tmp_path, fixtures_dir):
    good = (fixtures_dir / "vid2r/images/coco/train2017/000000000139.jpg").read_bytes()
    records = [{"id": b"a", "image_id": b"x/good.jpg", "image": good},
               {"id": b"b", "image_id": b"x/broken.jpg", "image": good[:100]},
               {"id": b"c", "image_id": b"x/good.jpg", "image": good}]
    with pytest.raises(images.ImageError, match=r"x/broken.jpg.*record 'b'"):
        _fill(tmp_path, {"train": records})
    report = _fill(tmp_path, {"train": records}, image_policy="skip")
    assert report.num_images == 2 and report.num_written == 1
    assert [i for i, _ in report.skipped] == ["x/broken.jpg"]
    assert set(FeatureCache(tmp_path / "cache").ids()) == {"x/good.jpg"}


def _random_tiny_model(directory):
    """A tiny MIRe with random weights saved as a mire-jax model folder (no full-model init compile)."""
    import jax

    import mire_jax
    from mire_jax.convert import param_shapes
    from mire_jax.retrieval.model_folder import save_model
    config = mire_jax.MIReConfig.tiny()
    rng = np.random.default_rng(0)

    def draw(path, shape):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        return (0.05 * rng.standard_normal(shape)).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(draw, param_shapes(config), is_leaf=lambda x: isinstance(x, tuple))
    save_model(directory, config, params)
    return config, params


def test_cache_vision_entry_point_matches_in_process_tower(tmp_path, fixtures_dir):
    model_dir = tmp_path / "model"
    config, params = _random_tiny_model(model_dir)
    config_file = tmp_path / "cache_config.py"
    config_file.write_text(f'''
from mire_jax.train.config import base_config


def get_config(arg=None):
    c = base_config()
    c.model.dir = {str(model_dir)!r}
    c.data.builder, c.data.data_dir = "image_question_jsonl", {str(tmp_path / "tfds")!r}
    c.data.manual_dir, c.data.splits = {str(fixtures_dir / "jsonl")!r}, ("train", "validation")
    c.data.vision_cache_dir = {str(tmp_path / "unused")!r}
    c.vision_cache.shard_size, c.vision_cache.batch_size, c.vision_cache.read_threads = 2, 8, 2
    return c
''')
    cache_dir = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(REPO / "train" / "cache_vision.py"), f"--config={config_file}",
                          f"--config.data.vision_cache_dir={cache_dir}", "--config.vision_cache.batch_size=2"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["num_images"] == 3 and report["num_written"] == 3 and report["num_skipped"] == 0

    import mire_jax
    cache = FeatureCache(cache_dir)
    assert cache.dtype == np.float16 and cache.feature_shape == (1 + config.vision.num_patches,
                                                                 config.vision.hidden_size)
    ids = sorted(cache.ids())
    assert ids == ["coco/000000000139.jpg", "coco/000000000285.jpg", "inat/monarch.jpg"]
    pixels = np.stack([images.preprocess_bytes((fixtures_dir / "jsonl/images" / i).read_bytes(), ImageProcessing(size=32)) for i in ids])
    want = np.asarray(mire_jax.encode_vision(config, params, pixels))
    got = np.stack([cache[i] for i in ids]).astype(np.float32)
    assert np.abs(want).max() > 0.1  # a real signal, not all zeros
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
