"""The grain input pipeline: contents, determinism, sharding, resumable state, image policies, cache mode."""
import json

import numpy as np
import pytest

from mire_jax.config import ImageProcessing
from mire_jax.data import feature_cache
from mire_jax.data.pipeline import EpochShardIndices, PipelineConfig, RecordError, holdout_split, make_pipeline
from mire_jax.retrieval import images

IMAGE_FILES = [
    "vid2r/images/coco/train2017/000000000139.jpg",
    "vid2r/images/coco/train2017/000000000285.jpg",
    "vid2r/images/gqa/images/2354786.jpg",
    "m2kr/images/Infoseek/oven_00001234.jpg",
    "m2kr/images/Infoseek/oven_05000001.jpg",
    "m2kr/images/Infoseek/oven_05000002.jpg",
    "m2kr/images/Infoseek/oven_05000003.jpg",
    "aokvqa/images/coco/val2017/000000095786.jpg",
]


def _records(fixtures_dir, n, overrides=None):
    """n in-memory records in the builders' layout (bytes for texts, as tfds returns them)."""
    out = []
    for i in range(n):
        rel = IMAGE_FILES[i % len(IMAGE_FILES)]
        out.append({"id": f"r{i}".encode(), "question": f"what is shown in picture number {i}?".encode(),
                    "instruction": b"", "image_id": rel.encode(), "image": (fixtures_dir / rel).read_bytes(),
                    "document": f"passage {i} describes the picture in words.".encode(), "document_id": b"",
                    "answers": [], "negs": []})
    for i, changes in (overrides or {}).items():
        out[i].update(changes)
    return out


def _cfg(**kw):
    base = dict(batch_size=2, image=ImageProcessing(size=32), query_maxlen=16, doc_maxlen=24, read_threads=2, read_buffer=4,
                batch_prefetch=0, with_record_ids=True)
    base.update(kw)
    return PipelineConfig(**base)


def _ids(batches):
    return [b["id"].tolist() for b in batches]


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_batch_contents(fixtures_dir, tokenizer):
    records = _records(fixtures_dir, 6)
    pipe = make_pipeline(records, tokenizer, _cfg(batch_size=3, shuffle=False, num_epochs=1),
                         process_index=0, process_count=1)
    batches = list(pipe)
    assert len(batches) == 2 and _ids(batches) == [["r0", "r1", "r2"], ["r3", "r4", "r5"]]
    b = batches[1]
    expected_types = {"q_ids": np.int32, "q_mask": np.int32, "d_ids": np.int32, "d_mask": np.int32,
                      "d_keep": np.bool_, "pixels": np.float32}
    assert {k: v.dtype.type for k, v in b.items() if k != "id"} == expected_types
    assert b["q_ids"].shape == (3, 16) and b["d_keep"].shape == (3, 24) and b["pixels"].shape == (3, 32, 32, 3)
    texts = [r["question"].decode() for r in records[3:]]
    q_ids, q_mask = tokenizer.encode_queries(texts, max_len=16, attend_to_mask_tokens=True)
    np.testing.assert_array_equal(b["q_ids"], q_ids)
    np.testing.assert_array_equal(b["q_mask"], q_mask)
    d_ids, d_mask, d_keep = tokenizer.encode_docs([r["document"].decode() for r in records[3:]], max_len=24)
    np.testing.assert_array_equal(b["d_ids"], d_ids)
    np.testing.assert_array_equal(b["d_keep"], d_keep)
    for row, rec in enumerate(records[3:]):
        np.testing.assert_array_equal(b["pixels"][row], images.preprocess_bytes(rec["image"], ImageProcessing(size=32)))


def test_instruction_prefix(fixtures_dir, tokenizer):
    records = _records(fixtures_dir, 2, {0: {"instruction": b"Retrieve the passage:"}})
    batch = next(iter(make_pipeline(records, tokenizer, _cfg(shuffle=False, use_instruction=True),
                                    process_index=0, process_count=1)))
    q_ids, _ = tokenizer.encode_queries(["Retrieve the passage: " + records[0]["question"].decode()], max_len=16)
    np.testing.assert_array_equal(batch["q_ids"][0], q_ids[0])


def test_epoch_permutations_are_deterministic():
    def order(seed, epochs=3, n=13):
        ds = EpochShardIndices(n, seed=seed, shuffle=True, process_index=0, process_count=1, num_epochs=epochs)
        return [ds[i] for i in range(len(ds))]

    a, b = order(seed=5), order(seed=5)
    assert a == b
    epochs = [a[i * 13:(i + 1) * 13] for i in range(3)]
    assert all(sorted(e) == list(range(13)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert order(seed=6) != a


@pytest.mark.parametrize("n", [10, 11])
def test_two_processes_get_disjoint_covering_shards(n):
    shards = [EpochShardIndices(n, seed=3, shuffle=True, process_index=p, process_count=2, num_epochs=2)
              for p in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 2 * (n // 2)
    for epoch in range(2):
        got = [[s[epoch * (n // 2) + k] for k in range(n // 2)] for s in shards]
        assert not set(got[0]) & set(got[1])
        union = set(got[0]) | set(got[1])
        assert len(union) == 2 * (n // 2) and union <= set(range(n))
        if n % 2 == 0:
            assert union == set(range(n))


def test_pipeline_order_and_sharding(fixtures_dir, tokenizer):
    records = _records(fixtures_dir, 8)

    def run():
        return _ids(make_pipeline(records, tokenizer, _cfg(num_epochs=2, seed=1), process_index=0, process_count=1))

    first, again = run(), run()
    assert first == again
    flat = sum(first, [])
    assert sorted(flat[:8]) == sorted(flat[8:]) == sorted(f"r{i}" for i in range(8))
    assert flat[:8] != flat[8:]  # the second epoch is reshuffled

    per_process = [sum(_ids(make_pipeline(records, tokenizer, _cfg(num_epochs=1, seed=1), process_index=p,
                                          process_count=2)), []) for p in (0, 1)]
    assert len(per_process[0]) == len(per_process[1]) == 4
    assert not set(per_process[0]) & set(per_process[1])
    assert set(per_process[0]) | set(per_process[1]) == {f"r{i}" for i in range(8)}


@pytest.mark.parametrize("workers,prefetch", [(0, 0), (0, 2), (2, 1)])
def test_state_save_restore(fixtures_dir, tokenizer, workers, prefetch):
    records = _records(fixtures_dir, 7, {2: {"image": b""}})  # one skipped record inside the stream
    cfg = _cfg(seed=11, worker_count=workers, batch_prefetch=prefetch, image_policy="skip")
    pipe = make_pipeline(records, tokenizer, cfg, process_index=0, process_count=1)
    it = iter(pipe)
    first = _take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    skipped_then = it.num_skipped
    following = _take(it, 6)
    it.close()

    resumed = iter(make_pipeline(records, tokenizer, cfg, process_index=0, process_count=1))
    resumed.set_state(state)
    assert resumed.num_skipped == skipped_then
    again = _take(resumed, 6)
    resumed.close()
    assert _ids(again) == _ids(following)
    for x, y in zip(following, again):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    # The skipped record never shows up, and every time the index stream reached it before the 18th kept record
    # (9 batches of 2) it was counted: an epoch holds 3 whole batches (6 of the 7 records).
    assert all("r2" not in ids for ids in _ids(following))
    stream = EpochShardIndices(7, seed=11, shuffle=True, process_index=0, process_count=1, num_epochs=None, chunk=2)
    kept = skips = position = 0
    while kept < 18:
        if stream[position] == 2:
            skips += 1
        else:
            kept += 1
        position += 1
    assert resumed.num_skipped == it.num_skipped == skips >= 2
    if workers:  # worker processes change nothing in the batches
        plain = iter(make_pipeline(records, tokenizer, _cfg(seed=11, image_policy="skip"), process_index=0,
                                   process_count=1))
        assert _ids(_take(plain, 9)) == _ids(first + following)


def test_missing_and_corrupt_images(fixtures_dir, tokenizer, tmp_path):
    data = (fixtures_dir / IMAGE_FILES[0]).read_bytes()
    records = _records(fixtures_dir, 6, {1: {"image": b""}, 3: {"image": data[: len(data) // 2]}})
    cfg = _cfg(shuffle=False, num_epochs=1)
    with pytest.raises(images.ImageError, match=r"record 'r1'.*" + IMAGE_FILES[1]):
        list(make_pipeline(records, tokenizer, cfg, process_index=0, process_count=1))
    records[1]["image"] = (fixtures_dir / IMAGE_FILES[1]).read_bytes()
    with pytest.raises(images.ImageError, match=r"record 'r3'.*" + IMAGE_FILES[3]):
        list(make_pipeline(records, tokenizer, cfg, process_index=0, process_count=1))

    records[1]["image"] = b""
    it = iter(make_pipeline(records, tokenizer, _cfg(shuffle=False, num_epochs=1, image_policy="skip"),
                            process_index=0, process_count=1))
    assert _ids(list(it)) == [["r0", "r2"], ["r4", "r5"]]
    assert it.num_skipped == 2

    # Records without bytes are read from image_root; a file missing there fails naming its path.
    root = tmp_path / "root"
    (root / "vid2r/images/coco/train2017").mkdir(parents=True)
    data = (fixtures_dir / IMAGE_FILES[1]).read_bytes()
    (root / IMAGE_FILES[1]).write_bytes(data)
    records = _records(fixtures_dir, 2)
    for r in records:
        r["image"] = b""
    cfg = _cfg(shuffle=False, num_epochs=1, batch_size=1, image_root=str(root))
    with pytest.raises(images.ImageError, match=rf"record 'r0'.*{root / IMAGE_FILES[0]}"):
        list(make_pipeline(records, tokenizer, cfg, process_index=0, process_count=1))
    it = iter(make_pipeline(records, tokenizer, _cfg(shuffle=False, num_epochs=1, batch_size=1,
                                                     image_root=str(root), image_policy="skip"),
                            process_index=0, process_count=1))
    batches = list(it)
    assert _ids(batches) == [["r1"]] and it.num_skipped == 1
    np.testing.assert_array_equal(batches[0]["pixels"][0], images.preprocess_bytes(data, ImageProcessing(size=32)))


def test_bad_records_fail_naming_the_record(fixtures_dir, tokenizer):
    cfg = _cfg(shuffle=False, num_epochs=1, image_policy="skip")
    records = _records(fixtures_dir, 4, {2: {"question": b"   "}})
    with pytest.raises(RecordError, match=r"record 2 \(id 'r2'\): empty question"):
        list(make_pipeline(records, tokenizer, cfg, process_index=0, process_count=1))
    records = _records(fixtures_dir, 4)
    del records[1]["document"]
    with pytest.raises(RecordError, match=r"record 1 \(id 'r1'\): missing required field 'document'"):
        list(make_pipeline(records, tokenizer, cfg, process_index=0, process_count=1))


def test_cached_vision_features(fixtures_dir, tokenizer, tmp_path):
    records = _records(fixtures_dir, 6)
    shape = (5, 8)
    ids = sorted({r["image_id"].decode() for r in records})
    rng = np.random.default_rng(0)
    feats = {i: rng.normal(size=shape).astype(np.float32) for i in ids}
    with feature_cache.FeatureCacheWriter(tmp_path, feature_shape=shape, dtype="float32", shard_size=2) as w:
        w.add(ids[:-1], np.stack([feats[i] for i in ids[:-1]]))  # the last image is not cached
    missing = ids[-1]
    bad = [r["id"].decode() for r in records if r["image_id"].decode() == missing]

    cfg = _cfg(shuffle=False, num_epochs=1, vision_cache_dir=str(tmp_path), image_policy="skip", batch_size=1)
    it = iter(make_pipeline(records, tokenizer, cfg, process_index=0, process_count=1))
    batches = list(it)
    assert it.num_skipped == len(bad) and len(batches) == 6 - len(bad)
    for b in batches:
        assert "pixels" not in b and b["vision_features"].shape == (1, *shape)
        rec = records[int(b["id"][0][1:])]
        np.testing.assert_array_equal(b["vision_features"][0], feats[rec["image_id"].decode()])
    with pytest.raises(images.ImageError, match=rf"record '{bad[0]}'.*{missing}.*vision cache"):
        list(make_pipeline(records, tokenizer, _cfg(shuffle=False, num_epochs=1, vision_cache_dir=str(tmp_path)),
                           process_index=0, process_count=1))


def test_end_to_end_from_tfds(vid2r_source, fixtures_dir, tokenizer):
    cfg = _cfg(batch_size=2, num_epochs=1, seed=0)
    batches = list(make_pipeline(vid2r_source, tokenizer, cfg, process_index=0, process_count=1))
    assert len(batches) == 2  # 5 records, drop remainder
    records = json.loads((fixtures_dir / "vid2r" / "ViD2R.json").read_text())
    by_id = {r["id"]: r for r in records}
    for b in batches:
        for row, record_id in enumerate(b["id"]):
            path = fixtures_dir / "vid2r" / "images" / by_id[record_id]["image"]
            np.testing.assert_array_equal(b["pixels"][row], images.preprocess_bytes(path.read_bytes(), ImageProcessing(size=32)))


@pytest.mark.parametrize("processes,accum", [(1, 1), (2, 1), (4, 1), (2, 2), (4, 2)])
def test_a_global_batch_is_the_same_records_in_the_same_order_on_any_process_count(processes, accum):
    """Process p's batch holds its share of each micro-batch; putting the shares back (micro-batch after
    micro-batch, process after process) gives the single-process batch, so negatives groups (runs of
    consecutive examples) are the same on any number of hosts."""
    n, global_batch, epochs = 37, 8, 2

    def batches(p, count):
        per = global_batch // count
        ds = EpochShardIndices(n, seed=4, shuffle=True, process_index=p, process_count=count, num_epochs=epochs,
                               chunk=per // accum, global_batch=global_batch)
        flat = [ds[i] for i in range(len(ds))]
        return [flat[i:i + per] for i in range(0, len(flat), per)]

    single = batches(0, 1)
    shares = [batches(p, processes) for p in range(processes)]
    assert all(len(s) == len(single) == epochs * (n // global_batch) for s in shares)
    for step, whole in enumerate(single):
        micro = [np.split(np.asarray(s[step]), accum) for s in shares]
        rebuilt = [int(x) for i in range(accum) for p in range(processes) for x in micro[p][i]]
        assert rebuilt == whole, step
    per_epoch = [sum(single[e * (n // global_batch):(e + 1) * (n // global_batch)], []) for e in range(epochs)]
    assert all(len(set(e)) == len(e) == 32 for e in per_epoch)  # whole batches only, no record twice


def test_the_published_order_repeats_every_epoch():
    def epochs(reshuffle):
        ds = EpochShardIndices(12, seed=2, shuffle=True, process_index=0, process_count=1, num_epochs=3, chunk=4,
                               reshuffle=reshuffle)
        return [[ds[e * 12 + i] for i in range(12)] for e in range(3)]
    same, new = epochs(False), epochs(True)
    assert same[0] == same[1] == same[2] and sorted(same[0]) == list(range(12))
    assert new[0] == same[0] and new[1] != new[0] and new[2] != new[1]


def test_held_out_records_never_reach_training(fixtures_dir, tokenizer):
    train_indices, held = holdout_split(10, 3, seed=5)
    assert len(held) == 3 and not set(held) & set(train_indices) and set(held) | set(train_indices) == set(range(10))
    assert np.array_equal(holdout_split(10, 3, seed=5)[1], held) and not np.array_equal(holdout_split(10, 3, 6)[1], held)
    records = _records(fixtures_dir, 10)
    seen = {i for b in make_pipeline(records, tokenizer, _cfg(num_epochs=3, seed=1), process_index=0, process_count=1,
                                     record_indices=train_indices) for i in b["id"].tolist()}
    assert seen == {f"r{i}" for i in train_indices}
    with pytest.raises(ValueError, match="hold out"):
        holdout_split(10, 10, seed=0)
