"""The sharded vision-feature store: round trip, dtypes, resume after a crash, several writers."""
import json
import pickle
import zlib

import numpy as np
import pytest

from mire_jax import files
from mire_jax.data import feature_cache as fc

SHAPE = (5, 4)


def _features(ids):
    """Deterministic, id-dependent features so a mix-up between ids shows."""
    out = np.stack([np.random.default_rng(zlib.crc32(i.encode())).normal(size=SHAPE) for i in ids])
    return out.astype(np.float32)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip(tmp_path, dtype):
    ids = [f"img/{i}.jpg" for i in range(11)]
    feats = _features(ids)
    with fc.FeatureCacheWriter(tmp_path, feature_shape=SHAPE, dtype=dtype, shard_size=4,
                               metadata={"tower": "test"}) as writer:
        writer.add(ids[:7], feats[:7])
        writer.add(ids[7:], feats[7:])
    shards = sorted(p.name for p in tmp_path.glob("shard-*.npy"))
    assert len(shards) == 3  # 4 + 4 + 3
    cache = fc.FeatureCache(tmp_path)
    assert len(cache) == 11 and cache.dtype == np.dtype(dtype) and cache.metadata == {"tower": "test"}
    for i, image_id in enumerate(ids):
        np.testing.assert_allclose(np.asarray(cache[image_id], np.float32), feats[i],
                                   rtol=1e-3 if dtype == "float16" else 0, atol=1e-3 if dtype == "float16" else 0)
    assert "nope" not in cache
    with pytest.raises(KeyError, match="nope"):
        cache["nope"]
    # Pickles without its memory maps (for data-loader worker processes) and still reads.
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone[ids[3]], cache[ids[3]])


def test_resume_after_crash_skips_cached_ids(tmp_path):
    ids = [f"im{i}" for i in range(10)]
    feats = _features(ids)
    writer = fc.FeatureCacheWriter(tmp_path, feature_shape=SHAPE, dtype="float32", shard_size=3)
    writer.add(ids[:5], feats[:5])  # one shard of 3 written, 2 only buffered ...
    del writer                      # ... and lost in the "crash" (no close)
    (tmp_path / "shard-p00000-000001.npy").write_bytes(b"half-written garbage")  # an orphan without ids file

    cache = fc.FeatureCache(tmp_path)
    assert sorted(cache.ids()) == ids[:3]

    writer = fc.FeatureCacheWriter(tmp_path, feature_shape=SHAPE, dtype="float32", shard_size=3)
    assert writer.cached_ids == frozenset(ids[:3])
    todo = [i for i in ids if i not in writer]
    assert todo == ids[3:]
    writer.add(ids, feats)  # cached ids are ignored even when passed again
    writer.close()
    assert writer.num_written == 7
    cache = fc.FeatureCache(tmp_path)
    assert len(cache) == 10
    for i, image_id in enumerate(ids):
        np.testing.assert_array_equal(cache[image_id], feats[i])
    index = json.loads((tmp_path / "index.json").read_text())
    assert set(index["ids"]) == set(ids)
    assert not [p for p in tmp_path.iterdir() if files.is_temporary(p.name)]


def test_two_writers_and_stale_index(tmp_path):
    a_ids, b_ids = ["a0", "a1", "a2"], ["b0", "b1"]
    with fc.FeatureCacheWriter(tmp_path, feature_shape=SHAPE, writer_id="p00000", shard_size=2) as w:
        w.add(a_ids, _features(a_ids))
    # A second host writes afterwards without updating the index: the reader notices and rebuilds it.
    w = fc.FeatureCacheWriter(tmp_path, feature_shape=SHAPE, writer_id="p00001", shard_size=2)
    w.add(b_ids, _features(b_ids))
    w.close(write_index=False)
    cache = fc.FeatureCache(tmp_path)
    assert sorted(cache.ids()) == sorted(a_ids + b_ids)
    np.testing.assert_allclose(cache["b1"].astype(np.float32), _features(["b1"])[0], rtol=1e-3, atol=1e-3)


def test_mismatched_settings_and_missing_folder(tmp_path):
    with fc.FeatureCacheWriter(tmp_path, feature_shape=SHAPE, dtype="float16") as w:
        w.add(["x"], _features(["x"]))
    with pytest.raises(fc.FeatureCacheError, match="shape"):
        fc.FeatureCacheWriter(tmp_path, feature_shape=(6, 4), dtype="float16")
    with pytest.raises(fc.FeatureCacheError, match="float32"):
        fc.FeatureCacheWriter(tmp_path, feature_shape=SHAPE, dtype="float32")
    with pytest.raises(ValueError, match="features of shape"):
        fc.FeatureCacheWriter(tmp_path, feature_shape=SHAPE, dtype="float16").add(["y", "z"], _features(["y"]))
    with pytest.raises(FileNotFoundError, match="cache_vision"):
        fc.FeatureCache(tmp_path / "nothing")


def test_check_vision_tower_refuses_another_towers_features(tmp_path):
    """A CLIP and a SigLIP tower can give features of one shape: the tower recorded in the metadata tells them
    apart. Caches made before the SigLIP tower record no model_type and count as CLIP's."""
    import dataclasses

    from mire_jax.config import VisionConfig
    clip = VisionConfig(hidden_size=24, num_attention_heads=4, image_size=32, patch_size=8)
    siglip = VisionConfig.siglip(hidden_size=24, num_attention_heads=4, image_size=32, patch_size=8)
    fc.check_vision_tower(tmp_path / "none_yet", clip)  # nothing cached there yet: nothing to check
    old = {k: v for k, v in dataclasses.asdict(clip).items() if k != "model_type"}
    with fc.FeatureCacheWriter(tmp_path / "old", feature_shape=(17, 24), metadata={"vision": old}):
        pass
    fc.check_vision_tower(tmp_path / "old", clip)
    with pytest.raises(fc.FeatureCacheError, match=r"old: holds the features of another vision tower than the "
                                                   r"model's \(.*model_type 'clip' != 'siglip'\)"):
        fc.check_vision_tower(tmp_path / "old", siglip)
    with pytest.raises(fc.FeatureCacheError, match=r"holds vision features of shape \(17, 24\), the model's clip "
                                                   r"tower gives \(50, 768\)"):
        fc.check_vision_tower(tmp_path / "old", VisionConfig())
