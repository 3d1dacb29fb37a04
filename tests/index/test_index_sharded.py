"""Index shards: a sharded index equals a single one, builds resume shard by shard, shards are checked by
name, and search over two processes (jax.distributed on loopback) equals search in one."""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from mire_jax.index import IndexFileError, LateInteractionIndex
from mire_jax.index import build as build_lib
from mire_jax.index.encode import encode_to_shards
from mire_jax.index.encoded_corpus import write_manifest
from mire_jax.index.synthetic import SyntheticCorpus, SyntheticSpec

SPEC = SyntheticSpec(num_passages=1600, mean_length=24, vocab_size=5000, num_common=60, num_topics=80,
                     topic_vocab=60)
SHARD_TOKENS = 10_000  # about four index shards
FIXED = {"mode": "scann", "shard_tokens": SHARD_TOKENS, "calibrate": False, "leaves_to_search": 16,
         "neighbors_per_token": 256, "fill_fraction": 0.8, "rerank_passages": 300}


@pytest.fixture(scope="module")
def corpus():
    c = SyntheticCorpus(SPEC, seed=11)
    queries, mask, _ = c.queries(24, seed=12)
    return c, c.embeddings(), queries, mask


@pytest.fixture(scope="module")
def encoded(corpus, tmp_path_factory):
    """The corpus as an encoded corpus on disk (as eval/encode_corpus.py writes it), 200 passages a shard."""
    c, embeddings, *_ = corpus
    folder = tmp_path_factory.mktemp("encoded")

    def encode(texts):
        rows = [c.passage_embeddings(int(t)) for t in texts]
        out = np.zeros((len(rows), max(len(r) for r in rows), SPEC.dim), np.float32)
        keep = np.zeros(out.shape[:2], bool)
        for i, r in enumerate(rows):
            out[i, :len(r)], keep[i, :len(r)] = r, True
        return out, keep

    summary = encode_to_shards(((f"p{i}", str(i)) for i in range(SPEC.num_passages)), folder, encode,
                               shard_size=200, progress=False)
    write_manifest(folder, summary.num_shards)
    return folder


def test_sharded_index_equals_a_single_index_in_exact_mode(corpus):
    c, embeddings, queries, mask = corpus
    ids = [f"p{i}" for i in range(SPEC.num_passages)]
    single = LateInteractionIndex.build(embeddings, c.lengths, ids, {"mode": "exact"}, progress=False)
    split = LateInteractionIndex.build(embeddings, c.lengths, ids, {"mode": "exact", "shard_tokens": SHARD_TOKENS},
                                       progress=False)
    assert len(single.shards) == 1 and len(split.shards) == 4
    assert [s.first_passage for s in split.shards] == sorted(s.first_passage for s in split.shards)
    a_ids, a_scores = single.search(queries, mask, 50)
    b_ids, b_scores = split.search(queries, mask, 50)
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-6)
    # Approximate search over the shards reranks exactly: its top passage is exact search's.
    approx = LateInteractionIndex.build(embeddings, c.lengths, ids, FIXED, progress=False)
    assert approx.search(queries, mask, 1)[0].tolist() == a_ids[:, :1].tolist()


def test_build_resumes_at_the_first_missing_shard(encoded, tmp_path, monkeypatch):
    real_build, calls = build_lib.build_shard, []

    def interrupted(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption between shards")
        calls.append(args[-1])
        return real_build(*args, **kwargs)

    monkeypatch.setattr(build_lib, "build_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        LateInteractionIndex.from_shards(encoded, FIXED, directory=tmp_path / "index", progress=False)
    assert calls == ["shard_000000", "shard_000001"]
    assert not (tmp_path / "index" / "manifest.json").exists()  # unfinished, so never loadable
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "index" / "shard_000000").rglob("*") if p.is_file()}

    monkeypatch.setattr(build_lib, "build_shard", real_build)
    built = []
    monkeypatch.setattr(build_lib, "build_shard", lambda *a, **k: built.append(a[-1]) or real_build(*a, **k))
    index = LateInteractionIndex.from_shards(encoded, FIXED, directory=tmp_path / "index", progress=False)
    assert built == ["shard_000002", "shard_000003"]
    assert index.build_info["shards_kept_here"] == [0, 1] and index.build_info["shards_built_here"] == [2, 3]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # the finished shards were not touched
    loaded = LateInteractionIndex.load(tmp_path / "index")
    assert loaded.num_passages == SPEC.num_passages and loaded.ids[:2] == ["p0", "p1"]
    built.clear()  # a finished build is just opened again
    LateInteractionIndex.from_shards(encoded, FIXED, directory=tmp_path / "index", progress=False)
    assert built == []


@pytest.fixture(scope="module")
def saved(encoded, tmp_path_factory):
    folder = tmp_path_factory.mktemp("index")
    LateInteractionIndex.from_shards(encoded, FIXED, directory=folder, progress=False)
    return folder


@pytest.mark.parametrize("name", ["shard_000001/tokens.npy", "shard_000002/scann/hashed_dataset.packed.npy",
                                  "shard_000003/ids.json", "shard_000001/shard.json"])
def test_altered_shard_is_refused_by_name(saved, tmp_path, name):
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    data = bytearray((copy / name).read_bytes())
    data[-2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=name.replace("/", ".") + ".*(altered|sha256)"):
        LateInteractionIndex.load(copy)


@pytest.mark.parametrize("name", ["shard_000002", "shard_000000/offsets.npy", "shard_000003/scann"])
def test_missing_shard_is_refused_by_name(saved, tmp_path, name):
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    target = copy / name
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(IndexFileError, match=f"{name}.*: missing"):
        LateInteractionIndex.load(copy)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], processes: int) -> dict:
    """`python -m mire_jax.index ARGS` in `processes` processes joined by jax.distributed on loopback."""
    port = _free_port()
    procs = []
    for rank in range(processes):
        env = {**os.environ, "MIRE_COORDINATOR": f"127.0.0.1:{port}", "MIRE_NUM_PROCESSES": str(processes),
               "MIRE_PROCESS_ID": str(rank)} if processes > 1 else dict(os.environ)
        procs.append(subprocess.Popen([sys.executable, "-m", "mire_jax.index", *args, "--no-progress"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    line = next(x for x in outputs[0][0].splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_search_over_two_processes_equals_one_process(encoded, corpus, tmp_path):
    _, _, queries, mask = corpus
    np.savez(tmp_path / "q.npz", queries=queries, mask=mask)
    # Built by two processes (each builds and saves its own shards), then searched by one and by two.
    config = json.dumps({**FIXED, "rerank_passages": SPEC.num_passages})  # every candidate reranked
    built = _run(["build", "--encoded", str(encoded), "--index", str(tmp_path / "index"), "--config", config], 2)
    assert sorted(built["build"]["shards_built_here"]) == [0, 2] and built["build"]["process_count"] == 2
    assert len(built["peak_rss_bytes_per_process"]) == 2
    results = {}
    for processes in (1, 2):
        out = tmp_path / f"{processes}.npz"
        info = _run(["search", "--index", str(tmp_path / "index"), "--queries", str(tmp_path / "q.npz"),
                     "--out", str(out), "--k", "20", "--with-exact"], processes)
        assert info["processes"] == processes and info["shards_per_process"] == 4 // processes
        results[processes] = np.load(out)
    for prefix in ("", "exact_"):
        np.testing.assert_array_equal(results[1][prefix + "ids"], results[2][prefix + "ids"])
        np.testing.assert_allclose(results[1][prefix + "scores"], results[2][prefix + "scores"], rtol=1e-6)
    # Every candidate reranked exactly: the approximate search found exact search's best passages.
    np.testing.assert_array_equal(results[1]["ids"][:, :3], results[1]["exact_ids"][:, :3])
    # The same index opened in this process (no jax.distributed) agrees too.
    index = LateInteractionIndex.load(tmp_path / "index")
    ids, _ = index.search(queries, mask, 20, exact=True)
    assert ids.tolist() == results[1]["exact_ids"].tolist()
    assert pathlib.Path(tmp_path / "index" / "manifest.json").exists()


def test_calibrate_over_two_processes(encoded, corpus, tmp_path):
    """`python -m mire_jax.index calibrate` under jax.distributed: every process calibrates on its own shards,
    process 0's queries, and process 0 replaces index.json and the manifest; the shards stay as built."""
    _, _, queries, mask = corpus
    np.savez(tmp_path / "q.npz", queries=queries, mask=mask)
    LateInteractionIndex.from_shards(encoded, FIXED, directory=tmp_path / "index", progress=False)
    shards = {p: p.stat().st_mtime_ns for p in (tmp_path / "index").rglob("shard_*/*") if p.is_file()}
    free = {"neighbors_per_token": None, "fill_fraction": None, "rerank_passages": None, "exact_if_cheaper": False}
    result = _run(["calibrate", str(tmp_path / "index"), "--queries", str(tmp_path / "q.npz"),
                   "--config", json.dumps(free)], 2)
    assert result["after"]["source"] == "given" and result["after"]["num_queries"] == len(queries)
    index = LateInteractionIndex.load(tmp_path / "index")
    assert index.calibration["processes"] == 2 and index.calibration["source"] == "given"
    assert index.config.leaves_to_search == FIXED["leaves_to_search"]  # given, so kept
    assert {k: getattr(index.config, k) for k in index.calibration["settings"]} == index.calibration["settings"]
    assert {p: p.stat().st_mtime_ns for p in shards} == shards
