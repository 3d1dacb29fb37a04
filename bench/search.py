"""Benchmark: the calibrated, sharded late-interaction index against exact MaxSim, on differently shaped corpora.

Corpora are generated (`mire_jax.index.synthetic.SHAPES`: 128-d uniform topics; 64-d short passages with many
small topics; Zipfian topic sizes, two-topic passages, tight function words, long-tailed lengths; >= 100k
passages each in the full run), written as encoded shards through the real encoding loop, and indexed from
them with default settings: calibration picks the search settings from queries drawn from the corpus, with
no hand tuning. A fresh process then opens the saved index and measures its resident memory (anonymous RSS
growth; the float16 embeddings are memory-mapped files), queries/s of the index and of exact search on the
corpus's own generated queries, and the index's recall@10/@100 against exact search. A last run builds and
searches a >= 10M-token corpus in >= 4 index shards over 2 processes joined by jax.distributed on loopback.

    python bench/search.py            # full run (tens of minutes on 2 cores; resumes: finished corpora are kept)
    python bench/search.py --small    # quick run
    python bench/search.py --pylate-python /path/to/other-venv/bin/python   # also PyLate (first corpus)

Results go to bench/results/search.json (search_small.json with --small), rewritten after every corpus.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "search.json"
REPO = pathlib.Path(__file__).resolve().parents[1]
GOALS = {"recall@10": 0.99, "recall@100": 0.95, "speedup": 20.0, "bytes_per_token": 64.0, "build_s_per_mtoken": 60.0}


def _proc_status() -> dict:
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc keeps them otherwise), so RSS shows what is still held."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def _run_child(cmd: list[str], timeout: int, env: dict | None = None) -> tuple[dict | None, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), ""
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return None, f"exit {proc.returncode}: {' | '.join(tail)}"


def _run_processes(args: list[str], processes: int, timeout: int) -> tuple[dict | None, str]:
    """`python -m mire_jax.index ARGS` in `processes` processes joined by jax.distributed on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "mire_jax.index", *args, "--no-progress"],
                              env={**env, "MIRE_COORDINATOR": f"127.0.0.1:{port}", "MIRE_NUM_PROCESSES": str(processes),
                                   "MIRE_PROCESS_ID": str(rank)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for rank in range(processes)]
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=timeout))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            return None, f"timed out after {timeout} s"
    for p, (out, err) in zip(procs, outputs):
        if p.returncode != 0:
            return None, f"a process exited {p.returncode}: {' | '.join(err.strip().splitlines()[-3:])}"
    line = next((x for x in outputs[0][0].splitlines() if x.startswith("RESULT ")), None)
    return (json.loads(line[len("RESULT "):]), "") if line else (None, "no result line")


# ------------------------------------------------------------------------------------------------------
# Worker: open the saved index in a fresh process, measure memory, time the index and exact search.


def _search_worker(args) -> None:
    import jax.numpy as jnp

    from mire_jax.index import LateInteractionIndex

    data = np.load(args.queries)
    queries, mask = data["queries"], data["mask"]
    jnp.zeros(8).block_until_ready()  # JAX's runtime is the process's fixed cost, not the index's
    before = _proc_status()
    t0 = time.perf_counter()
    index = LateInteractionIndex.load(args.index, verify=False)
    load_s = time.perf_counter() - t0
    loaded = _proc_status()
    batch = index.config.query_batch
    index.search_positions(queries[:batch], mask[:batch], 100)  # warm-up (thread pools, compiles, first reads)
    t0 = time.perf_counter()
    positions, _ = index.search_positions(queries, mask, 100)
    search_s = time.perf_counter() - t0
    untrimmed = _proc_status()
    _release_free_heap()  # what the index keeps, not the heap pages the search's buffers left behind
    after = _proc_status()
    t0 = time.perf_counter()
    truth, _ = index.search_positions(queries, mask, 100, exact=True)
    exact_s = time.perf_counter() - t0
    num_tokens = int(index.offsets[-1])
    scann_dirs = [pathlib.Path(s.folder) / "scann" for s in index.shards]
    scann_bytes = sum(p.stat().st_size for d in scann_dirs if d.exists() for p in d.iterdir())
    result = {
        "load_s": load_s, "queries": len(queries), "search_s": search_s, "queries_per_s": len(queries) / search_s,
        "exact_search_s": exact_s, "exact_queries_per_s": len(queries) / exact_s,
        "speedup_vs_exact": exact_s / search_s,
        "recall@10": _recall(positions, truth, 10), "recall@100": _recall(positions, truth, 100),
        "mode": index.config.mode, "shards": len(index.shards),
        "memory": {
            "rss_anon_after_load_bytes": loaded["RssAnon"] - before["RssAnon"],
            "rss_anon_after_search_bytes": after["RssAnon"] - before["RssAnon"],
            "rss_file_after_search_bytes": after["RssFile"] - before["RssFile"],
            "anon_bytes_per_token_after_load": (loaded["RssAnon"] - before["RssAnon"]) / num_tokens,
            "anon_bytes_per_token_after_search": (after["RssAnon"] - before["RssAnon"]) / num_tokens,
            "file_pages_bytes_per_token_after_search": (after["RssFile"] - before["RssFile"]) / num_tokens,
            "scann_files_bytes_per_token": scann_bytes / num_tokens,
            "search_heap_before_trim_bytes": untrimmed["RssAnon"] - loaded["RssAnon"],
        },
    }
    print("RESULT " + json.dumps(result))


def _pylate_worker(args) -> None:
    """PyLate's PLAID on the same corpus (runs under another interpreter; numpy and pylate only)."""
    data, q = np.load(args.corpus), np.load(args.queries)
    embeddings, offsets = data["embeddings"], data["offsets"]
    docs = [embeddings[offsets[i]:offsets[i + 1]].astype(np.float32) for i in range(len(offsets) - 1)]
    query_list = [q["queries"][b][q["mask"][b]].astype(np.float32) for b in range(len(q["queries"]))]
    from pylate import indexes, retrieve

    folder = tempfile.mkdtemp(prefix="pylate-plaid-")
    try:
        t0 = time.perf_counter()
        index = indexes.PLAID(index_folder=folder, index_name="bench", override=True)
        index.add_documents(documents_ids=[str(i) for i in range(len(docs))], documents_embeddings=docs)
        build_s = time.perf_counter() - t0
        retriever = retrieve.ColBERT(index=index)
        t0 = time.perf_counter()
        results = retriever.retrieve(queries_embeddings=query_list, k=100)
        search_s = time.perf_counter() - t0
        found = np.full((len(results), 100), -1, np.int64)
        for b, row in enumerate(results):
            ids = [int(r["id"]) for r in row][:100]
            found[b, :len(ids)] = ids
        print("RESULT " + json.dumps({"build_s": build_s, "queries_per_s": len(query_list) / search_s,
                                      "recall@10": _recall(found, q["truth"], 10),
                                      "recall@100": _recall(found, q["truth"], 100)}))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------
# One corpus.


def _write_encoded(corpus, folder: pathlib.Path, shard_size: int) -> float:
    """The corpus as encoded shards (the fake "model" maps a passage number to its generated tokens)."""
    from mire_jax.index.encode import encode_to_shards
    from mire_jax.index.encoded_corpus import write_manifest

    t0 = time.perf_counter()
    dim = corpus.spec.dim

    def fake_encoder(texts):
        rows = [corpus.passage_embeddings(int(t)) for t in texts]
        out = np.zeros((len(rows), max(len(r) for r in rows), dim), np.float32)
        keep = np.zeros(out.shape[:2], bool)
        for i, r in enumerate(rows):
            out[i, :len(r)], keep[i, :len(r)] = r, True
        return out, keep

    n = corpus.spec.num_passages
    summary = encode_to_shards(((f"p{i}", str(i)) for i in range(n)), folder, fake_encoder, shard_size=shard_size,
                               batch_size=256, total=n, progress=False)
    write_manifest(folder, summary.num_shards)
    return time.perf_counter() - t0


def bench_corpus(name: str, spec, work: pathlib.Path, num_queries: int, args) -> dict:
    from mire_jax.index import LateInteractionIndex
    from mire_jax.index.synthetic import SyntheticCorpus

    corpus = SyntheticCorpus(spec, seed=0)
    encoded, index_dir = work / f"{name}_encoded", work / f"{name}_index"
    shutil.rmtree(index_dir, ignore_errors=True)
    generate_s = _write_encoded(corpus, encoded, 20_000) if not (encoded / "manifest.json").exists() else None
    queries, mask, _ = corpus.queries(num_queries, seed=1)
    query_file = work / f"{name}_queries.npz"
    np.savez(query_file, queries=queries, mask=mask)
    t0 = time.perf_counter()
    index = LateInteractionIndex.from_shards(encoded, None, directory=index_dir, progress=False)
    build_s = time.perf_counter() - t0
    tokens, shards = int(index.offsets[-1]), len(index.shards)
    info, calibration = dict(index.build_info), index.calibration
    del index
    result, why = _run_child([sys.executable, __file__, "--search-worker", "--index", str(index_dir),
                              "--queries", str(query_file)], 3600)
    report = {"spec": spec.__dict__, "passages": spec.num_passages, "tokens": tokens, "dim": spec.dim,
              "index_shards": shards, "generate_and_write_shards_s": generate_s,
              "build": {"seconds": build_s, "s_per_million_tokens": build_s / tokens * 1e6,
                        "index_shards_s": info.get("build_seconds"), "calibration_s": info.get("calibration_seconds"),
                        "calibration_share": info.get("calibration_seconds", 0) / build_s},
              "calibration": calibration, "search": result if result is not None else f"failed: {why}"}
    if result is not None:
        report["goals"] = {
            "recall@10>=0.99": result["recall@10"] >= GOALS["recall@10"],
            "recall@100>=0.95": result["recall@100"] >= GOALS["recall@100"],
            "speedup>=20x": result["speedup_vs_exact"] >= GOALS["speedup"],
            "resident<=64B/token": result["memory"]["anon_bytes_per_token_after_search"] <= GOALS["bytes_per_token"],
            "build<=60s/Mtoken": report["build"]["s_per_million_tokens"] <= GOALS["build_s_per_mtoken"]}
    if args.pylate_python and name == "uniform128":
        report["pylate"] = _pylate(args, work, index_dir, query_file)
    if not args.keep:
        shutil.rmtree(index_dir, ignore_errors=True)
    return report


def _pylate(args, work, index_dir, query_file) -> dict | str:
    from mire_jax.index import LateInteractionIndex

    index = LateInteractionIndex.load(index_dir, verify=False)
    q = np.load(query_file)
    truth, _ = index.search_positions(q["queries"], q["mask"], 100, exact=True)
    corpus_file, queries_file = work / "pylate_corpus.npz", work / "pylate_queries.npz"
    np.savez(corpus_file, embeddings=np.asarray(index.embeddings), offsets=index.offsets)
    np.savez(queries_file, queries=q["queries"], mask=q["mask"], truth=truth)
    result, why = _run_child([args.pylate_python, __file__, "--pylate-worker", "--corpus", str(corpus_file),
                              "--queries", str(queries_file)], args.pylate_timeout)
    corpus_file.unlink()
    return result if result is not None else f"unavailable: {why}"


def bench_distributed(spec, work: pathlib.Path, num_queries: int, shard_tokens: int, args) -> dict:
    """A >= 10M-token corpus in >= 4 index shards, built and searched by 2 processes (jax.distributed)."""
    from mire_jax.index.synthetic import SyntheticCorpus

    corpus = SyntheticCorpus(spec, seed=0)
    encoded, index_dir = work / "distributed_encoded", work / "distributed_index"
    shutil.rmtree(index_dir, ignore_errors=True)
    generate_s = _write_encoded(corpus, encoded, spec.num_passages // 8) \
        if not (encoded / "manifest.json").exists() else None
    queries, mask, _ = corpus.queries(num_queries, seed=1)
    np.savez(work / "distributed_queries.npz", queries=queries, mask=mask)
    tokens = int(corpus.num_tokens)
    build, why = _run_processes(["build", "--encoded", str(encoded), "--index", str(index_dir),
                                 "--config", json.dumps({"shard_tokens": shard_tokens}), "--no-verify"], 2, 7200)
    if build is None:
        return {"failed": f"build: {why}"}
    search, why = _run_processes(["search", "--index", str(index_dir), "--queries", str(work / "distributed_queries.npz"),
                                  "--out", str(work / "distributed_results.npz"), "--with-exact"], 2, 7200)
    report = {"spec": spec.__dict__, "passages": spec.num_passages, "tokens": tokens, "processes": 2,
              "generate_and_write_shards_s": generate_s,
              "build": {"seconds": build["seconds"], "s_per_million_tokens": build["seconds"] / tokens * 1e6,
                        "million_tokens_per_s": tokens / build["seconds"] / 1e6, "details": build["build"],
                        "peak_rss_bytes_per_process": build["peak_rss_bytes_per_process"]},
              "calibration": build["calibration"]}
    if search is None:
        report["search"] = f"failed: {why}"
        return report
    results = np.load(work / "distributed_results.npz")
    report["search"] = {**search, "recall@10": _recall(results["positions"], results["exact_positions"], 10),
                        "recall@100": _recall(results["positions"], results["exact_positions"], 100),
                        "recall_sample": int(len(queries))}
    if not args.keep:
        shutil.rmtree(index_dir, ignore_errors=True)
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="a quick run (5k-passage corpora, 32 queries)")
    parser.add_argument("--passages", type=int, default=None, help="passages per corpus")
    parser.add_argument("--queries-count", type=int, default=None)
    parser.add_argument("--corpora", default="uniform128,short64,zipf_mixed,distributed")
    parser.add_argument("--out", default=None)
    parser.add_argument("--workdir", default=None, help="where shards and indexes go (default: a temp dir)")
    parser.add_argument("--force", action="store_true",
                        help="rerun the named corpora even if the results file has them (the others are kept)")
    parser.add_argument("--keep", action="store_true", help="keep the built indexes")
    parser.add_argument("--pylate-python", default=None, help="python of a separate venv with pylate")
    parser.add_argument("--pylate-timeout", type=int, default=2400)
    parser.add_argument("--note", default=None)
    for hidden in ("--search-worker", "--pylate-worker"):
        parser.add_argument(hidden, action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--index", "--queries", "--corpus"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.search_worker:
        return _search_worker(args)
    if args.pylate_worker:
        return _pylate_worker(args)

    from mire_jax.index.synthetic import SHAPES, SyntheticCorpus

    passages = args.passages or (5_000 if args.small else 100_000)
    num_queries = args.queries_count or (32 if args.small else 128)
    out = pathlib.Path(args.out or (RESULTS.with_name("search_small.json") if args.small else RESULTS))
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="mire-bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    report = json.loads(out.read_text()) if out.exists() else {}
    if report.get("small") != args.small or report.get("passages_per_corpus") != passages:
        report = {}
    report.update({"benchmark": "calibrated sharded late-interaction index vs exact MaxSim", "small": args.small,
                   "passages_per_corpus": passages, "queries_per_corpus": num_queries, "goals": GOALS,
                   "cpu_count": os.cpu_count(), "note": args.note})
    report.setdefault("corpora", {})
    for name in args.corpora.split(","):
        if not args.force and name in report["corpora"] and not isinstance(report["corpora"][name].get("search"), str):
            print(f"{name}: kept from {out}")
            continue
        load = os.getloadavg()
        t0 = time.perf_counter()
        if name == "distributed":  # >= 10M tokens (10k passages with --small), in 4 index shards
            spec = SHAPES["uniform128"].scaled(160_000 if not args.small else 10_000)
            tokens = SyntheticCorpus(spec, seed=0).num_tokens
            result = bench_distributed(spec, work, min(num_queries, 64), tokens // 4 + 1, args)
        else:
            result = bench_corpus(name, SHAPES[name].scaled(passages), work, num_queries, args)
        result.update(wall_s=time.perf_counter() - t0, load_average_at_start=load, load_average_at_end=os.getloadavg())
        report["corpora"][name] = result
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps({name: {k: result.get(k) for k in ("search", "build", "goals")}}, indent=1))


if __name__ == "__main__":
    main()
