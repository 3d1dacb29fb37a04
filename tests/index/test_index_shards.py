"""Shard files: round trip, manifest, atomic writes, refusal of altered or missing files."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from mire_jax import files
from mire_jax.index import encoded_corpus as shards
from mire_jax.index import storage

REPO = pathlib.Path(__file__).resolve().parents[2]


def _write_three(folder):
    rng = np.random.default_rng(1)
    expected = []
    for index, lengths in enumerate([[3, 0, 2], [4], [1, 1]]):
        emb = rng.standard_normal((sum(lengths), 8)).astype(np.float16)
        ids = [f"s{index}p{i}" for i in range(len(lengths))]
        shards.write_shard(folder, index, emb, lengths, ids, settings={"model": "m"})
        expected.append((emb, lengths, ids))
    return expected


def test_round_trip_in_corpus_order(tmp_path):
    expected = _write_three(tmp_path)
    manifest = shards.write_manifest(tmp_path)
    assert manifest["num_shards"] == 3 and manifest["num_passages"] == 6 and manifest["num_tokens"] == 11
    assert set(manifest["shards"][0]["files"]) == {"embeddings.npy", "lengths.npy", "ids.json"}
    assert all(len(f["sha256"]) == 64 for f in manifest["shards"][1]["files"].values())
    embeddings, lengths, ids = shards.read_corpus(tmp_path)
    np.testing.assert_array_equal(embeddings, np.concatenate([e for e, _, _ in expected]))
    assert lengths.tolist() == [3, 0, 2, 4, 1, 1]
    assert ids == [i for _, _, s in expected for i in s]


def test_altered_shard_file_is_refused_by_name(tmp_path):
    _write_three(tmp_path)
    shards.write_manifest(tmp_path)
    path = tmp_path / "shard_000001" / "embeddings.npy"
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(shards.ShardError, match="shard_000001.embeddings.npy: sha256"):
        shards.read_corpus(tmp_path)
    shards.read_corpus(tmp_path, verify=False)  # size and counts still agree: only the checksum tells


def test_missing_files_are_refused_by_name(tmp_path):
    _write_three(tmp_path)
    shards.write_manifest(tmp_path)
    (tmp_path / "shard_000002" / "ids.json").unlink()
    with pytest.raises(shards.ShardError, match="shard_000002.ids.json: missing"):
        shards.read_corpus(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(shards.ShardError, match="manifest.json: missing"):
        shards.read_corpus(tmp_path)


def test_manifest_refuses_a_gap(tmp_path):
    _write_three(tmp_path)
    for f in (tmp_path / "shard_000001").iterdir():
        f.unlink()
    (tmp_path / "shard_000001").rmdir()
    with pytest.raises(shards.ShardError, match="shard_000001: missing"):
        shards.write_manifest(tmp_path)
    with pytest.raises(shards.ShardError, match="shard_000003: missing"):
        _write_three(tmp_path)
        shards.write_manifest(tmp_path, num_shards=4)


def test_unfinished_write_is_not_a_shard(tmp_path):
    _write_three(tmp_path)
    # A process killed after writing the data files, before the shard's metadata (no cleanup runs).
    killed = ("import os, sys, numpy as np\n"
              "from mire_jax.index import encoded_corpus, storage\n"
              "storage.sha256_file = lambda path: os._exit(9)\n"
              "encoded_corpus.write_shard(sys.argv[1], 3, np.zeros((3, 2)), [1, 2], ['a', 'b'])\n")
    proc = subprocess.run([sys.executable, "-c", killed, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 9, proc.stderr[-2000:]
    (tmp,) = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert files.is_temporary(tmp.name) and (tmp / "embeddings.npy").exists()
    assert shards.list_shards(tmp_path) == [0, 1, 2]
    assert shards.finished_shard(tmp_path, 3) is None
    assert shards.remove_stale_temporaries(tmp_path, [2]) == []
    assert shards.remove_stale_temporaries(tmp_path, [3]) == [tmp.name]
    assert not tmp.exists()


def test_an_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "sha256_file", lambda path: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        shards.write_shard(tmp_path, 0, np.zeros((3, 2)), [1, 2], ["a", "b"])
    assert list(tmp_path.iterdir()) == []


def test_other_settings_are_refused(tmp_path):
    _write_three(tmp_path)
    assert shards.finished_shard(tmp_path, 0, {"model": "m"})["num_passages"] == 3
    with pytest.raises(shards.ShardError, match="shard_000000.shard.json: made with settings"):
        shards.finished_shard(tmp_path, 0, {"model": "other"})


def test_write_rejects_inconsistent_counts(tmp_path):
    with pytest.raises(ValueError, match="lengths sum to 3 but there are 4"):
        shards.write_shard(tmp_path, 0, np.zeros((4, 2)), [1, 2], ["a", "b"])
    assert shards.list_shards(tmp_path) == []
    meta = json.loads(json.dumps(shards.write_shard(tmp_path, 0, np.zeros((3, 2)), [1, 2], ["a", "b"])))
    assert meta["num_tokens"] == 3 and meta["dtype"] == "float16"
