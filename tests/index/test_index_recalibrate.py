"""Recalibrating a built index on real queries without rebuilding it (`python -m mire_jax.index calibrate`): index.json
and the manifest are replaced as one change, the shards are kept, and an interrupted replacement never leaves a mix."""
import json
import os
import shutil

import numpy as np
import pytest

from mire_jax.index import IndexFileError, LateInteractionIndex, storage
from mire_jax.index.__main__ import main
from mire_jax.index.search import SearchSettings, write_calibration
from mire_jax.index.synthetic import SyntheticCorpus, SyntheticSpec

SPEC = SyntheticSpec(num_passages=1500, mean_length=24, vocab_size=5000, num_common=60, num_topics=80, topic_vocab=60)
FIXED = {"mode": "scann", "calibrate": False, "leaves_to_search": 2, "neighbors_per_token": 32, "fill_fraction": 0.5,
         "rerank_passages": 100}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved index with rough search settings (not calibrated), its corpus and real queries."""
    corpus = SyntheticCorpus(SPEC, seed=4)
    folder = tmp_path_factory.mktemp("recalibrate") / "index"
    LateInteractionIndex.build(corpus.embeddings(), corpus.lengths, [f"p{i}" for i in range(SPEC.num_passages)],
                               FIXED, progress=False).save(folder)
    return folder, corpus


def _shard_files(folder):
    return {p: (p.stat().st_mtime_ns, storage.sha256_file(p)) for p in folder.rglob("shard_*/**/*") if p.is_file()}


def test_calibrate_command_chooses_settings_on_given_queries_and_keeps_the_shards(saved, tmp_path, capsys):
    folder, corpus = saved
    index_dir = tmp_path / "index"
    shutil.copytree(folder, index_dir)
    shards = _shard_files(index_dir)
    before = LateInteractionIndex.load(index_dir)
    assert before.calibration is None
    queries, mask, _ = corpus.queries(48, seed=1)
    np.savez(tmp_path / "log.npz", queries=queries, mask=mask)
    free = {k: None for k in ("neighbors_per_token", "fill_fraction", "rerank_passages")}  # the probe stays
    assert main(["calibrate", str(index_dir), "--queries", str(tmp_path / "log.npz"), "--no-progress",
                 "--config", json.dumps({**free, "exact_if_cheaper": False})]) == 0
    result = json.loads(next(line for line in capsys.readouterr().out.splitlines()
                             if line.startswith("RESULT "))[len("RESULT "):])
    assert result["after"]["source"] == "given" and result["after"]["num_queries"] == 48

    after = LateInteractionIndex.load(index_dir)  # verify=True: index.json and the manifest agree
    report = after.calibration
    assert report["source"] == "given" and report["num_queries"] == 48 and report["mix"] == {"given": 48}
    assert report["query_file"]["name"] == "log.npz"
    assert report["query_file"]["sha256"] == storage.sha256_file(tmp_path / "log.npz")
    assert set(report["uncertainty"]) >= {"recall@10", "recall@100"}
    assert SearchSettings.of(after.config) == SearchSettings(**report["settings"])
    assert report["reached"] and report["lower_bound"]["recall@10"] >= 0.99
    assert _shard_files(index_dir) == shards  # not rebuilt, not rewritten
    assert not list(index_dir.glob("*" + storage.PENDING))
    # On other queries of the same kind the chosen settings hold what was reported.
    held_out, held_mask, _ = corpus.queries(96, seed=2)
    measured = after.measure_recall(held_out, held_mask)
    assert measured["recall@10"] >= report["measured"]["recall@10"] - 0.01


def test_calibrate_command_refuses_bad_query_files_in_one_line(saved, tmp_path):
    folder, _ = saved
    np.savez(tmp_path / "dim.npz", queries=np.zeros((2, 4, 7), np.float32), mask=np.ones((2, 4), bool))
    np.savez(tmp_path / "nomask.npz", queries=np.zeros((2, 4, SPEC.dim), np.float32))
    for name, message in (("dim.npz", "queries of dim 7, the index's is 128"), ("nomask.npz", "no array 'mask'"),
                          ("absent.npz", "no such file")):
        with pytest.raises(SystemExit, match=f"{name}: {message}"):
            main(["calibrate", str(folder), "--queries", str(tmp_path / name), "--no-progress"])
    with pytest.raises(SystemExit, match=r"unknown IndexConfig fields \['target'\]"):
        main(["calibrate", str(folder), "--config", '{"target": 1}', "--no-progress"])


def test_an_interrupted_replacement_never_leaves_a_mix(saved, tmp_path, monkeypatch):
    folder, _ = saved
    index_dir = tmp_path / "index"
    shutil.copytree(folder, index_dir)
    index = LateInteractionIndex.load(index_dir)
    old = index.config
    new = old.__class__(**{**vars(old), "rerank_passages": 200})
    renames = []
    real_replace = os.replace

    def crash_at(n):
        def replace(src, dst):
            if str(src).endswith(storage.PENDING):  # a pending file renamed into place (not a file's own write)
                if len(renames) == n:
                    raise KeyboardInterrupt("simulated crash")
                renames.append(dst)
            real_replace(src, dst)
        return replace

    # Killed before anything was renamed: the old index, whole.
    monkeypatch.setattr(storage.os, "replace", crash_at(0))
    with pytest.raises(KeyboardInterrupt):
        write_calibration(index_dir, new, {"note": "new"})
    assert LateInteractionIndex.load(index_dir).config.rerank_passages == 100
    # Killed between index.json and the manifest: the new index.json, which the pending manifest lists.
    renames.clear()
    monkeypatch.setattr(storage.os, "replace", crash_at(1))
    with pytest.raises(KeyboardInterrupt):
        write_calibration(index_dir, new, {"note": "new"})
    assert (index_dir / ("manifest.json" + storage.PENDING)).exists()
    loaded = LateInteractionIndex.load(index_dir)
    assert loaded.config.rerank_passages == 200 and loaded.calibration == {"note": "new"}
    # The next replacement finishes cleanly.
    monkeypatch.setattr(storage.os, "replace", real_replace)
    write_calibration(index_dir, old, {"note": "old again"})
    assert not list(index_dir.glob("*" + storage.PENDING))
    loaded = LateInteractionIndex.load(index_dir)
    assert loaded.config.rerank_passages == 100 and loaded.calibration == {"note": "old again"}
    # An index.json altered by hand still is refused by name.
    path = index_dir / "index.json"
    path.write_bytes(path.read_bytes().replace(b'"old again"', b'"old agaiN"'))
    with pytest.raises(IndexFileError, match="index.json"):
        LateInteractionIndex.load(index_dir)


def test_recalibration_refuses_another_build(saved, tmp_path):
    folder, _ = saved
    index_dir = tmp_path / "index"
    shutil.copytree(folder, index_dir)
    config = LateInteractionIndex.load(index_dir).config
    with pytest.raises(IndexFileError, match="num_leaves"):
        write_calibration(index_dir, config.__class__(**{**vars(config), "num_leaves": 3}), None)
