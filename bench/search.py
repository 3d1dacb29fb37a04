"""Benchmark: the ScaNN late-interaction index against exact MaxSim (and PyLate, when it installs).

A clustered corpus is generated (`mire_jax.index.synthetic`: word-like clusters, topics, Zipfian common
words; >= 100k passages x ~64 tokens x 128-d in the full run), written as shards through the real
encoding loop, indexed, saved, and searched from a fresh process that opens the saved index. Recall is
measured against the exact top-100 computed by brute force over the same float16 embeddings.

Reported: build time (and per million tokens), resident memory of the loaded index (RSS deltas split
into anonymous memory and file pages; the float16 embeddings are memory-mapped and only candidate rows
are read), the in-RAM sizes of its parts, queries/s and recall@10/@100 for the index and exact search.

    python bench/search.py            # full run (several minutes on 2 cores)
    python bench/search.py --small    # quick run
    python bench/search.py --pylate-python /path/to/other-venv/bin/python   # also PyLate's indexes

PyLate is never imported here: when a separate interpreter with pylate is given, this same file runs
under it as a worker (`--pylate-worker`) that only needs numpy and pylate.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "search.json"


def _proc_status() -> dict:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]
    return float(np.mean(hits))


# ------------------------------------------------------------------------------------------------------
# Worker: open the saved index in a fresh process, measure memory, time the searches.


def _search_worker(args) -> None:
    from mire_jax.index import LateInteractionIndex

    data = np.load(args.queries)
    queries, mask, truth = data["queries"], data["mask"], data["truth"]
    before = _proc_status()
    t0 = time.perf_counter()
    index = LateInteractionIndex.load(args.index, verify=False)
    load_s = time.perf_counter() - t0
    loaded = _proc_status()
    batch = index.config.query_batch
    index.search_positions(queries[:batch], mask[:batch], 100)  # warm-up (thread pools, first reads)
    t0 = time.perf_counter()
    positions, _ = index.search_positions(queries, mask, 100)
    search_s = time.perf_counter() - t0
    after = _proc_status()
    num_tokens = int(index.offsets[-1])
    scann_dir = pathlib.Path(args.index) / "scann"
    in_ram = {
        "scann_files_bytes": sum(p.stat().st_size for p in scann_dir.iterdir()) if scann_dir.exists() else 0,
        "offsets_bytes": int(index.offsets.nbytes),
        "ids_bytes": int(sum(sys.getsizeof(i) for i in index.ids) + sys.getsizeof(index.ids)),
    }
    result = {
        "load_s": load_s,
        "queries": len(queries),
        "search_s": search_s,
        "queries_per_s": len(queries) / search_s,
        "recall@10": _recall(positions, truth, 10),
        "recall@100": _recall(positions, truth, 100),
        "memory": {
            "rss_anon_after_load_bytes": loaded["RssAnon"] - before["RssAnon"],
            "rss_anon_after_search_bytes": after["RssAnon"] - before["RssAnon"],
            "rss_file_after_search_bytes": after["RssFile"] - before["RssFile"],
            "rss_total_after_search_bytes": after["VmRSS"] - before["VmRSS"],
            "anon_bytes_per_token_after_load": (loaded["RssAnon"] - before["RssAnon"]) / num_tokens,
            "anon_bytes_per_token_after_search": (after["RssAnon"] - before["RssAnon"]) / num_tokens,
            "file_pages_bytes_per_token_after_search": (after["RssFile"] - before["RssFile"]) / num_tokens,
            "in_ram_parts": in_ram,
            "in_ram_parts_bytes_per_token": sum(in_ram.values()) / num_tokens,
        },
    }
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------------------------------------
# Worker: PyLate (runs under another interpreter; numpy and pylate only).


def _pylate_worker(args) -> None:
    import resource

    data = np.load(args.corpus)
    embeddings, offsets = data["embeddings"], data["offsets"]
    q = np.load(args.queries)
    queries, mask, truth = q["queries"], q["mask"], q["truth"]
    docs = [embeddings[offsets[i]:offsets[i + 1]].astype(np.float32) for i in range(len(offsets) - 1)]
    doc_ids = [str(i) for i in range(len(docs))]
    query_list = [queries[b][mask[b]].astype(np.float32) for b in range(len(queries))]
    out = {}
    from pylate import indexes, retrieve  # noqa: F401  (the import itself is part of the check)

    for name in args.pylate_indexes.split(","):
        folder = tempfile.mkdtemp(prefix=f"pylate-{name}-")
        try:
            t0 = time.perf_counter()
            if name == "plaid":
                index = indexes.PLAID(index_folder=folder, index_name="bench", override=True)
            else:
                index = indexes.Voyager(index_folder=folder, index_name="bench", override=True)
            index.add_documents(documents_ids=doc_ids, documents_embeddings=docs)
            build_s = time.perf_counter() - t0
            retriever = retrieve.ColBERT(index=index)
            retriever.retrieve(queries_embeddings=query_list[:8], k=100)
            t0 = time.perf_counter()
            results = retriever.retrieve(queries_embeddings=query_list, k=100)
            search_s = time.perf_counter() - t0
            found = np.full((len(results), 100), -1, np.int64)
            for b, row in enumerate(results):
                ids = [int(r["id"]) for r in row][:100]
                found[b, :len(ids)] = ids
            out[name] = {"build_s": build_s, "queries_per_s": len(queries) / search_s,
                         "recall@10": _recall(found, truth, 10), "recall@100": _recall(found, truth, 100),
                         "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
        except Exception as e:  # noqa: BLE001  (record why, keep the other index)
            out[name] = f"unavailable: {type(e).__name__}: {e}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    print("RESULT " + json.dumps(out))


def _run_child(cmd: list[str], timeout: int) -> tuple[dict | None, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1])})
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), ""
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return None, f"exit {proc.returncode}: {' | '.join(tail)}"


def _pylate(args, work: pathlib.Path, embeddings, offsets, query_file: pathlib.Path) -> dict:
    python = args.pylate_python or os.environ.get("MIRE_PYLATE_PYTHON")
    reasons = "unavailable: no interpreter with pylate given (--pylate-python / MIRE_PYLATE_PYTHON)"
    if not python:
        return {"plaid": reasons, "voyager": reasons}
    if not os.path.exists(python):
        reason = f"unavailable: {python} does not exist"
        return {"plaid": reason, "voyager": reason}
    probe, why = _run_child([python, "-c", "import pylate, json; print('RESULT ' + json.dumps("
                                           "{'version': pylate.__version__}))"], 300)
    if probe is None:
        reason = f"unavailable: pylate does not import ({why})"
        return {"plaid": reason, "voyager": reason}
    corpus_file = work / "pylate_corpus.npz"
    np.savez(corpus_file, embeddings=np.asarray(embeddings), offsets=offsets)
    out = {"pylate_version": probe["version"]}
    out |= {name: "not run (not in --pylate-indexes)" for name in ("plaid", "voyager")
            if name not in args.pylate_indexes.split(",")}
    for name in args.pylate_indexes.split(","):  # one process each: a timeout loses only that index
        result, why = _run_child([python, __file__, "--pylate-worker", "--corpus", str(corpus_file),
                                  "--queries", str(query_file), "--pylate-indexes", name], args.pylate_timeout)
        out[name] = result[name] if result is not None else f"unavailable: the PyLate run failed ({why})"
    corpus_file.unlink()
    return out


# ------------------------------------------------------------------------------------------------------
# Main benchmark.


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="a quick run (5k passages, 32 queries)")
    parser.add_argument("--passages", type=int, default=None)
    parser.add_argument("--queries-count", type=int, default=None)
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/search.json, "
                        "search_small.json with --small)")
    parser.add_argument("--workdir", default=None, help="where shards and the index go (default: a temp dir)")
    parser.add_argument("--pylate-python", default=None, help="python of a separate venv with pylate")
    parser.add_argument("--pylate-indexes", default="plaid,voyager")
    parser.add_argument("--pylate-timeout", type=int, default=1800, help="seconds per PyLate index")
    parser.add_argument("--note", default=None, help="free text stored in the results")
    parser.add_argument("--search-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pylate-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", help=argparse.SUPPRESS)
    parser.add_argument("--queries", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.search_worker:
        return _search_worker(args)
    if args.pylate_worker:
        return _pylate_worker(args)

    from mire_jax.index import LateInteractionIndex, exact_search
    from mire_jax.index.encode import encode_to_shards
    from mire_jax.index.shards import read_corpus, write_manifest
    from mire_jax.index.synthetic import SyntheticCorpus, SyntheticSpec

    num_passages = args.passages or (5_000 if args.small else 100_000)
    num_queries = args.queries_count or (32 if args.small else 128)
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="mire-bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = SyntheticSpec(num_passages=num_passages, mean_length=64, dim=128)
    report = {"benchmark": "late-interaction search", "small": args.small, "spec": spec.__dict__,
              "cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg(), "note": args.note}

    t0 = time.perf_counter()
    corpus = SyntheticCorpus(spec, seed=0)
    queries, mask, sources = corpus.queries(num_queries, seed=1)

    def fake_encoder(texts):  # the "model": passage index -> its generated embeddings
        rows = [corpus.passage_embeddings(int(t)) for t in texts]
        width = max(len(r) for r in rows)
        out = np.zeros((len(rows), width, spec.dim), np.float32)
        keep = np.zeros((len(rows), width), bool)
        for i, r in enumerate(rows):
            out[i, :len(r)], keep[i, :len(r)] = r, True
        return out, keep

    shard_dir = work / "shards"
    encode_to_shards(((f"p{i}", str(i)) for i in range(num_passages)), shard_dir, fake_encoder,
                     shard_size=20_000, batch_size=256, total=num_passages)
    write_manifest(shard_dir)
    report["generate_and_write_shards_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    embeddings, lengths, ids = read_corpus(shard_dir, verify=True, progress=True)
    read_s = time.perf_counter() - t0
    num_tokens = int(embeddings.shape[0])
    t0 = time.perf_counter()
    index = LateInteractionIndex.build(embeddings, lengths, ids, {"mode": "scann"})
    build_s = time.perf_counter() - t0
    index_dir = work / "index"
    t0 = time.perf_counter()
    index.save(index_dir)
    save_s = time.perf_counter() - t0
    report["corpus"] = {"passages": num_passages, "tokens": num_tokens, "dim": spec.dim,
                        "mean_tokens_per_passage": num_tokens / num_passages}
    report["index_config"] = dataclasses.asdict(index.config)
    report["build"] = {"read_verified_shards_s": read_s, "index_build_s": build_s,
                       "index_build_s_per_million_tokens": build_s / num_tokens * 1e6,
                       "save_s": save_s,
                       "files_bytes": {p.name: p.stat().st_size for p in index_dir.iterdir() if p.is_file()}
                       | {"scann/": sum(p.stat().st_size for p in (index_dir / "scann").iterdir())}}
    offsets = index.offsets
    del index, embeddings
    gc.collect()

    on_disk = np.load(index_dir / "embeddings.npy", mmap_mode="r")
    t0 = time.perf_counter()
    truth, _ = exact_search(on_disk, offsets, queries, mask, 100, passages_per_block=256)
    exact_s = time.perf_counter() - t0
    report["exact"] = {"queries": num_queries, "search_s": exact_s, "queries_per_s": num_queries / exact_s,
                       "recall@10": 1.0, "recall@100": 1.0, "source_passage_at_rank_1": float(
                           np.mean(truth[:, 0] == sources))}
    query_file = work / "queries.npz"
    np.savez(query_file, queries=queries, mask=mask, truth=truth)

    result, why = _run_child([sys.executable, __file__, "--search-worker", "--index", str(index_dir),
                              "--queries", str(query_file)], 1800)
    report["index"] = result if result is not None else f"failed: {why}"
    if result is not None:
        report["index"]["speedup_vs_exact"] = result["queries_per_s"] / report["exact"]["queries_per_s"]
    try:
        report["pylate"] = _pylate(args, work, on_disk, offsets, query_file)
    except Exception as e:  # noqa: BLE001  (the comparison must not lose the main results)
        report["pylate"] = f"unavailable: {type(e).__name__}: {e}"
    report["goals"] = {
        "recall@10>=0.99": isinstance(result, dict) and result["recall@10"] >= 0.99,
        "recall@100>=0.95": isinstance(result, dict) and result["recall@100"] >= 0.95,
        "speedup>=20x": isinstance(result, dict) and result["speedup_vs_exact"] >= 20,
        "memory<=64B/token": isinstance(result, dict)
        and result["memory"]["anon_bytes_per_token_after_search"] <= 64,
        "build<=60s/Mtoken": report["build"]["index_build_s_per_million_tokens"] <= 60,
    }
    report["load_average_at_end"] = os.getloadavg()
    out = pathlib.Path(args.out or (RESULTS.with_name("search_small.json") if args.small else RESULTS))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
