"""Checkpoints: one orbax step holds the train state and the data-iterator position (grain's handler), keep-K
drops both together, and a restore continues with the same batches."""
import json

import jax
import numpy as np

from mire_jax.config import ImageProcessing
from mire_jax.data.pipeline import PipelineConfig, make_pipeline
from mire_jax.train.checkpoint import Checkpointer

IMAGE_FILES = ["vid2r/images/coco/train2017/000000000139.jpg", "vid2r/images/gqa/images/2354786.jpg",
               "m2kr/images/Infoseek/oven_00001234.jpg"]
MISSING_IMAGE = 2  # this record has no image: the "skip" policy drops and counts it


def _records(fixtures_dir, n):
    return [{"id": f"r{i}".encode(), "question": f"what is in picture {i}?".encode(), "instruction": b"",
             "image_id": IMAGE_FILES[i % len(IMAGE_FILES)].encode(),
             "image": b"" if i == MISSING_IMAGE else (fixtures_dir / IMAGE_FILES[i % len(IMAGE_FILES)]).read_bytes(),
             "document": f"passage {i} about the picture.".encode()} for i in range(n)]


def _pipeline(fixtures_dir, tokenizer):
    cfg = PipelineConfig(batch_size=2, image=ImageProcessing(size=32), query_maxlen=16, doc_maxlen=24, read_threads=2, read_buffer=4,
                         batch_prefetch=2, with_record_ids=True, seed=11, image_policy="skip")
    return make_pipeline(_records(fixtures_dir, 7), tokenizer, cfg, process_index=0, process_count=1)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _train_state(step):
    return {"params": np.arange(6, dtype=np.float32).reshape(2, 3) * step, "step": np.int32(step)}


def test_a_step_holds_the_iterator_position_and_a_restore_continues_with_the_same_batches(
        fixtures_dir, tokenizer, tmp_path):
    directory = tmp_path / "checkpoints"
    ckpt = Checkpointer(str(directory), keep=2)
    iterator = iter(_pipeline(fixtures_dir, tokenizer))
    for step in (1, 2, 3):
        _take(iterator, 2)
        ckpt.save(step, _train_state(step), iterator)
        if step == 3:
            skipped_at_save = iterator.num_skipped
            following = _take(iterator, 5)  # read on while the arrays are still being written
    ckpt.close()
    iterator.close()

    assert skipped_at_save >= 1
    assert sorted(p.name for p in directory.iterdir()) == ["2", "3"]  # keep-K, no folder beside the steps
    step_dir = directory / "3"
    assert {"state", "data_iterator"} <= {p.name for p in step_dir.iterdir()}
    saved = json.loads((step_dir / "data_iterator" / "process_0-of-1.json").read_text())
    assert saved["num_skipped"] == skipped_at_save and "grain" in saved

    resumed = iter(_pipeline(fixtures_dir, tokenizer))
    reopened = Checkpointer(str(directory), keep=2)
    assert reopened.latest_step() == 3
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                                      _train_state(0))
    state = reopened.restore(3, abstract, resumed)
    reopened.close()
    np.testing.assert_array_equal(state["params"], _train_state(3)["params"])
    assert int(state["step"]) == 3 and resumed.num_skipped == skipped_at_save
    again = _take(resumed, 5)
    resumed.close()
    assert [b["id"].tolist() for b in again] == [b["id"].tolist() for b in following]
    for expected, got in zip(following, again):
        for key in expected:
            np.testing.assert_array_equal(expected[key], got[key])
