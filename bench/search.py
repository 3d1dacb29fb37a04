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

Scale (`--scale`): one generator (`--corpora`, default uniform128) at several corpus sizes. Each corpus is generated
and written as encoded float16 shards of `--encode-shard-passages` passages, one shard at a time (the whole float32
token matrix, 32 GB at 1M passages, never exists); the exact truth (MaxSim top 100 over the encoded float16 tokens,
scored in float32) is computed one encoded shard at a time and merged; a child process builds the index from the
shards (`LateInteractionIndex.from_shards` into a folder: index shard by index shard, then calibration) and reports
its peak RSS; another opens it and measures, against that truth, queries/s and recall@10/@100 at defaults, along an
effort ladder (every ScaNN search knob of the defaults x0.25, x0.5, x2, x4) and of exact search over the stored
tokens (all queries up to `--exact-all-max-tokens`, else `--exact-queries`, 32: said in the JSON), the median
single-query latency at defaults and at the fastest setting reaching recall@10 >= 0.99 and @100 >= 0.95 (chosen on
the benchmark's own queries), and the calibrated (reported) recall against the measured one. fast-plaid
(bench/peers/README.md) then runs on the same float16 tokens, queries and truth where the corpus has at most
`--peer-max-tokens` tokens (its build takes about 320 s per million tokens on 2 cores, per nbits; larger corpora
say "skipped" and why in the JSON; so does a missing or broken fast-plaid), and the verdict of "ours >= fast-plaid's
queries/s at >= its recall" is recorded per corpus. Per shape, the queries/s drop between sizes is set against the
goal (3.2x per 10x corpus at defaults; exact search's own drop beside it). Results: bench/results/search_scale.json
(search_scale_small.json with --small), rewritten after every size (a rerun keeps finished sizes unless --force);
each size is also an entry of "corpora" with the fields of search.json's corpora.

    python bench/search.py --scale 3000,5000,20000 --small --peer-max-tokens 200000 \
        --fast-plaid-python PATH/.venv-fast-plaid/bin/python           # the small run (minutes)

The 100k -> 1M run (fast-plaid on the 20k corpus, the largest its build fits in --peer-max-build-seconds):

    python bench/search.py --scale 20000,100000,1000000 --progress --workdir /big/disk/bench-scale \
        --fast-plaid-python PATH/.venv-fast-plaid/bin/python

Measured here (2 cores, bench/results/search_scale_small.json): from 3k to 20k passages (193k to 1.28M tokens)
queries/s at defaults fell 3.2x where the goal allows 2.6x for that growth; the index took 158 bytes per token and
87 s per million tokens to build at 20k. At that rate the 1M corpus (64M tokens) needs about 1.5 hours of build and
16 GB of encoded float16 shards: not run on 2 cores.
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
if str(REPO) not in sys.path:  # bench.peers, bench.exact_search
    sys.path.insert(0, str(REPO))
from bench.peers.fast_plaid_worker import choose as choose_fastest  # noqa: E402  (one rule for both engines)

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


def _run_child(cmd: list[str], timeout: int, env: dict | None = None,
               show_stderr: bool = False) -> tuple[dict | None, str]:
    """Run a worker; -> (its RESULT, "") or (None, why). `show_stderr`: its progress bars and warnings go to this
    process's stderr as they come (else they are kept for the error message)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if show_stderr else subprocess.PIPE,
                              text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), ""
    tail = (proc.stderr or proc.stdout or "(its stderr is above)").strip().splitlines()[-3:]
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


def _open_index(args):
    """The worker's queries and opened index: (queries, mask, index, load seconds, /proc status before, after)."""
    import jax.numpy as jnp

    from mire_jax.index import LateInteractionIndex

    data = np.load(args.queries)
    jnp.zeros(8).block_until_ready()  # JAX's runtime is the process's fixed cost, not the index's
    before = _proc_status()
    t0 = time.perf_counter()
    index = LateInteractionIndex.load(args.index, verify=False)
    return data["queries"], data["mask"], index, time.perf_counter() - t0, before, _proc_status()


def _search_worker(args) -> None:
    queries, mask, index, load_s, before, loaded = _open_index(args)
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


def _write_encoded(corpus, folder: pathlib.Path, shard_size: int, progress: bool = False) -> float:
    """The corpus as encoded shards, one shard of `shard_size` passages generated, written and freed at a time (the
    fake "model" maps a passage number to its generated tokens)."""
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
                               batch_size=256, total=n, progress=progress)
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


# ------------------------------------------------------------------------------------------------------
# Scale: one generator at several corpus sizes, each built shard by shard, with fast-plaid as the peer.

TARGETS = {"recall@10": GOALS["recall@10"], "recall@100": GOALS["recall@100"]}
SCALE_DROP_PER_DECADE = 3.2  # the goal: at most 3.2x fewer queries/s from 100k to 1M passages (exact: about 10x)
EFFORT = (0.25, 0.5, 2.0, 4.0)  # the sweep scales every ScaNN search knob of the defaults by these factors
TRUTH_K = 100


def _vm_hwm() -> int:
    """This process's peak resident memory (bytes)."""
    return _proc_status().get("VmHWM", 0)


def _folder_bytes(folder: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in pathlib.Path(folder).rglob("*") if p.is_file())


def truth_from_encoded(encoded_dir, queries: np.ndarray, mask: np.ndarray, k: int = TRUTH_K,
                       progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact MaxSim top k over an encoded corpus (its float16 tokens, scored in float32), one encoded shard at a
    time (memory-mapped): never more than one shard in memory. -> (positions [B, k] int64, scores [B, k])."""
    from tqdm.auto import tqdm

    from mire_jax.index import exact_search
    from mire_jax.index.encoded_corpus import read_manifest, read_shard

    manifest = read_manifest(encoded_dir)
    best_pos = np.full((len(queries), 0), -1, np.int64)
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    first = 0
    for entry in tqdm(manifest["shards"], desc="exact truth", unit="shard", disable=not progress):
        tokens, lengths, _ = read_shard(encoded_dir, entry, verify=False, mmap=True)
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        pos, scores = exact_search(tokens, offsets, queries, mask, min(k, len(lengths)), progress=False)
        pos = np.where(pos >= 0, pos + first, -1)
        all_pos, all_scores = np.concatenate([best_pos, pos], 1), np.concatenate([best_scores, scores], 1)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        best_pos, best_scores = np.take_along_axis(all_pos, order, 1), np.take_along_axis(all_scores, order, 1)
        first += len(lengths)
        del tokens
    return best_pos, best_scores


def peer_verdict(ours: list[dict], peer_best: dict) -> dict:
    """The goal "ours >= fast-plaid's queries/s at >= its recall": our fastest row whose recall@10 and @100 are both
    at least those of fast-plaid's chosen setting, against that setting."""
    need = {k: peer_best[k] for k in TARGETS}
    able = [r for r in ours if all(r[k] >= need[k] for k in need)]
    out = {"fast_plaid": {k: peer_best.get(k) for k in ("setting", "recall@10", "recall@100", "queries_per_s")}}
    if not able:
        return {**out, "holds": False, "why": "no setting of ours reaches fast-plaid's recall"}
    mine = max(able, key=lambda r: r["queries_per_s"])
    return {**out, "ours": {k: mine.get(k) for k in ("setting", "recall@10", "recall@100", "queries_per_s")},
            "queries_per_s_ratio": mine["queries_per_s"] / peer_best["queries_per_s"],
            "holds": bool(mine["queries_per_s"] >= peer_best["queries_per_s"])}


def _build_worker(args) -> None:
    """Build the index from the encoded shards into a folder (shard by shard; `from_shards`); report its peak RSS."""
    from mire_jax.index import LateInteractionIndex

    t0 = time.perf_counter()
    index = LateInteractionIndex.from_shards(args.corpus, json.loads(args.config or "null"), verify=False,
                                             progress=args.progress, directory=args.index)
    seconds = time.perf_counter() - t0
    print("RESULT " + json.dumps({
        "seconds": seconds, "tokens": int(index.offsets[-1]), "index_shards": len(index.shards),
        "mode": index.config.mode, "search_settings": index.config.search_fields(),
        "token_codec": index.config.token_codec, "build_info": index.build_info, "calibration": index.calibration,
        "peak_rss_bytes": _vm_hwm()}))


def _scale_search_worker(args) -> None:
    """Open the saved index in a fresh process; queries/s and recall against the exact truth at defaults, along an
    effort ladder of ScaNN settings and exactly (on `--exact-queries` of the queries); single-query latency."""
    import dataclasses

    from mire_jax.index.search import SearchSettings

    queries, mask, index, load_s, before, loaded = _open_index(args)
    truth = np.load(args.truth)
    single = min(args.single_queries, len(queries))

    def measure(name, settings=None, exact=False, count=None, warm=2):
        count = count or len(queries)
        q, m = queries[:count], mask[:count]
        index.search_positions(q[:warm], m[:warm], TRUTH_K, exact=exact, settings=settings)
        t0 = time.perf_counter()
        pos, _ = index.search_positions(q, m, TRUTH_K, exact=exact, settings=settings)
        seconds = time.perf_counter() - t0
        row = {"setting": name, "exact": exact, "settings": None if settings is None else dataclasses.asdict(settings),
               "queries": count, "search_s": seconds, "queries_per_s": count / seconds,
               "recall@10": _recall(pos, truth[:count], 10), "recall@100": _recall(pos, truth[:count], 100)}
        row["reaches_targets"] = bool(all(row[k] >= v for k, v in TARGETS.items()))
        print(f"  {name}: {row['queries_per_s']:.1f} q/s, recall@10 {row['recall@10']:.3f}, "
              f"@100 {row['recall@100']:.3f} ({count} queries)", file=sys.stderr, flush=True)
        return row

    def latency(settings=None, exact=False):
        times = []
        for b in range(single):
            t0 = time.perf_counter()
            index.search_positions(queries[b:b + 1], mask[b:b + 1], TRUTH_K, exact=exact, settings=settings)
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1e3)

    mode = index.config.mode
    defaults = measure("defaults", warm=min(index.config.query_batch, len(queries)))
    defaults["mode"] = mode
    defaults["single_query_ms_median"] = latency()
    rows = [defaults]
    if index.searcher is not None:  # the ScaNN settings of the defaults (rule of thumb ones when calibrated exact)
        base = SearchSettings.of(index.config)
        if mode == "scann":
            defaults["settings"] = dataclasses.asdict(base)
        for factor in EFFORT:
            settings = SearchSettings(
                leaves_to_search=int(min(max(1, round(base.leaves_to_search * factor)), index.config.num_leaves)),
                neighbors_per_token=int(max(8, round(base.neighbors_per_token * factor))),
                fill_fraction=base.fill_fraction, rerank_passages=int(max(TRUTH_K, round(base.rerank_passages * factor))))
            if mode == "scann" and settings == base:
                continue
            rows.append(measure(f"scann x{factor:g}", settings))
    exact_count = min(args.exact_queries or len(queries), len(queries))
    index.compile_exact(exact_count, queries.shape[1], TRUTH_K)
    exact = measure("exact", exact=True, count=exact_count)
    exact["note"] = ("exact MaxSim over the index's stored tokens (codec " + index.config.token_codec + "); recall "
                     "against the float16 encoded corpus's exact truth")
    rows.append(exact)
    fastest = choose_fastest(rows)
    fastest_settings = None if fastest["settings"] is None else SearchSettings(**fastest["settings"])
    fastest["single_query_ms_median"] = (defaults["single_query_ms_median"] if fastest["setting"] == "defaults"
                                         else latency(fastest_settings, fastest["exact"]))
    _release_free_heap()
    after = _proc_status()
    num_tokens = int(index.offsets[-1])
    print("RESULT " + json.dumps({
        "load_s": load_s, "queries": len(queries), "mode": mode, "shards": len(index.shards), "rows": rows,
        "defaults": defaults, "fastest_at_targets": fastest, "exact": exact, "single_queries": single,
        "memory": {"rss_anon_after_load_bytes": loaded["RssAnon"] - before["RssAnon"],
                   "rss_anon_after_search_bytes": after["RssAnon"] - before["RssAnon"],
                   "anon_bytes_per_token_after_search": (after["RssAnon"] - before["RssAnon"]) / num_tokens,
                   "peak_rss_bytes": _vm_hwm()}}))


def _peer_python(args) -> str:
    """fast-plaid's python: `--fast-plaid-python` checked, or the repo's `.venv-fast-plaid` (made when missing).
    Raises PeerUnavailable (one line)."""
    from bench.peers import fast_plaid as peer

    if args.fast_plaid_python:
        python = pathlib.Path(args.fast_plaid_python)
        if not python.exists():
            raise peer.PeerUnavailable(f"--fast-plaid-python {python}: no such file")
        peer._check(python)
        return str(python)
    return peer.ensure_venv(REPO, install=not args.no_peer_install)


def _run_peer(tag: str, encoded: pathlib.Path, queries, mask, truth, work: pathlib.Path, args, state: dict):
    """fast-plaid on the same corpus (its float16 tokens), queries and truth; or a one-line reason it was skipped."""
    from bench.peers import fast_plaid as peer
    from mire_jax.index.encoded_corpus import read_corpus, read_manifest

    tokens = int(read_manifest(encoded)["num_tokens"])
    if args.no_peer:
        return "skipped: --no-peer"
    if tokens > args.peer_max_tokens:
        return (f"skipped: {tokens} tokens > --peer-max-tokens {args.peer_max_tokens} (fast-plaid builds at about "
                f"320 s per million tokens on 2 cores)")
    if "python" not in state:
        try:
            state["python"] = _peer_python(args)
        except peer.PeerUnavailable as e:
            state["python"] = None
            state["why"] = f"skipped: {e}"
    if state["python"] is None:
        return state["why"]
    folder = work / f"{tag}_fast_plaid"
    embeddings, lengths, _ = read_corpus(encoded, verify=False)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    peer.write_inputs(folder, embeddings, offsets, queries, mask, truth)
    del embeddings
    print(f"{tag}: fast-plaid ({tokens} tokens, builds up to {args.peer_max_build_seconds:.0f} s each)",
          file=sys.stderr, flush=True)
    try:
        return peer.run(folder, state["python"], timeout=args.peer_timeout, threads=args.peer_threads,
                        max_build_seconds=args.peer_max_build_seconds)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def _engines(ours: dict, build: dict, index_bytes: int, tokens: int, peer) -> dict:
    """Per engine: the fastest setting at the targets (or the best recall), build time, bytes/token, latency."""
    best = ours["fastest_at_targets"]
    out = {"ours": {"best": {k: best.get(k) for k in ("setting", "settings", "exact", "recall@10", "recall@100",
                                                       "queries_per_s", "queries", "chosen_because")},
                    "build_s": build["seconds"], "bytes_per_token": index_bytes / tokens,
                    "single_query_ms_median": best["single_query_ms_median"]}}
    if isinstance(peer, dict) and peer.get("best"):
        b = peer["best"]
        out["fast_plaid"] = {"best": {k: b.get(k) for k in ("setting", "nbits", "n_ivf_probe", "n_full_scores",
                                                             "recall@10", "recall@100", "queries_per_s",
                                                             "chosen_because")},
                             "build_s": b.get("build_s"), "bytes_per_token": b.get("bytes_per_token"),
                             "single_query_ms_median": b.get("single_query_ms_median")}
        out["verdict"] = peer_verdict(ours["rows"], b)
    else:
        out["fast_plaid"] = peer
    return out


def bench_scale_size(shape: str, passages: int, work: pathlib.Path, num_queries: int, args, peer_state: dict) -> dict:
    """One corpus size: generate and write it shard by shard, exact truth shard by shard, build the index from the
    shards (a child process), search it (another), then fast-plaid where the corpus is small enough."""
    from mire_jax.index.synthetic import SHAPES, SyntheticCorpus

    spec = SHAPES[shape].scaled(passages)
    corpus = SyntheticCorpus(spec, seed=0)
    tag = f"{shape}_{passages}"
    encoded, index_dir = work / f"{tag}_encoded", work / f"{tag}_index"
    say = lambda text: print(f"{tag}: {text}", file=sys.stderr, flush=True)  # noqa: E731
    shutil.rmtree(index_dir, ignore_errors=True)
    generate_s = None
    if not (encoded / "manifest.json").exists():
        say(f"generating and writing {corpus.num_tokens} tokens in shards of {args.encode_shard_passages} passages")
        generate_s = _write_encoded(corpus, encoded, args.encode_shard_passages, progress=args.progress)
    tokens = corpus.num_tokens
    queries, mask, _ = corpus.queries(num_queries, seed=1)
    query_file, truth_file = work / f"{tag}_queries.npz", work / f"{tag}_truth.npy"
    np.savez(query_file, queries=queries, mask=mask)
    say("exact truth over the encoded shards")
    t0 = time.perf_counter()
    truth, _ = truth_from_encoded(encoded, queries, mask, TRUTH_K, progress=args.progress)
    truth_s = time.perf_counter() - t0
    np.save(truth_file, truth)
    say("building the index (a child process)")
    build, why = _run_child([sys.executable, __file__, "--build-worker", "--corpus", str(encoded), "--index",
                             str(index_dir)] + (["--progress"] if args.progress else []), args.child_timeout,
                            show_stderr=args.progress)
    report = {"spec": spec.__dict__, "shape": shape, "passages": passages, "tokens": tokens, "dim": spec.dim,
              "queries": num_queries, "generate_and_write_shards_s": generate_s,
              "encode_shard_passages": args.encode_shard_passages,
              "encoded_corpus": {"bytes": _folder_bytes(encoded), "bytes_per_token": _folder_bytes(encoded) / tokens,
                                 "dtype": "float16"},
              "truth": {"seconds": truth_s, "what": "exact MaxSim top 100 over the encoded corpus's float16 tokens "
                                                    "(scored in float32), one encoded shard at a time"}}
    if build is None:
        report["build"] = f"failed: {why}"
        return report
    index_bytes = _folder_bytes(index_dir)
    scann_bytes = sum(_folder_bytes(d) for d in index_dir.glob("shard_*/scann"))
    report.update(index_shards=build["index_shards"], build={
        "seconds": build["seconds"], "s_per_million_tokens": build["seconds"] / tokens * 1e6,
        "index_shards_s": build["build_info"].get("build_seconds"),
        "calibration_s": build["build_info"].get("calibration_seconds"), "peak_rss_bytes": build["peak_rss_bytes"],
        "mode": build["mode"], "token_codec": build["token_codec"], "search_settings": build["search_settings"]},
        calibration=build["calibration"],
        disk={"index_bytes": index_bytes, "index_bytes_per_token": index_bytes / tokens,
              "scann_bytes_per_token": scann_bytes / tokens,
              "stored_tokens_and_rest_bytes_per_token": (index_bytes - scann_bytes) / tokens})
    exact_queries = args.exact_queries or (num_queries if tokens <= args.exact_all_max_tokens else 32)
    say("searching (a child process)")
    ours, why = _run_child([sys.executable, __file__, "--scale-search-worker", "--index", str(index_dir),
                            "--queries", str(query_file), "--truth", str(truth_file), "--exact-queries",
                            str(exact_queries), "--single-queries", str(args.single_queries)], args.child_timeout,
                           show_stderr=args.progress)
    if ours is None:
        report["search"] = f"failed: {why}"
        return report
    defaults, exact = ours["defaults"], ours["exact"]
    reported = (build["calibration"] or {}).get("reported") or {}
    report["search"] = {  # the fields of bench/results/search.json's corpora, and more
        **{k: ours[k] for k in ("load_s", "queries", "mode", "shards", "memory", "rows", "single_queries")},
        "queries_per_s": defaults["queries_per_s"], "recall@10": defaults["recall@10"],
        "recall@100": defaults["recall@100"], "single_query_ms_median": defaults["single_query_ms_median"],
        "exact_queries_per_s": exact["queries_per_s"], "exact_queries": exact["queries"],
        "exact_recall_vs_truth": {k: exact[k] for k in TARGETS},
        "speedup_vs_exact": defaults["queries_per_s"] / exact["queries_per_s"],
        "fastest_at_targets": ours["fastest_at_targets"],
        "reported_vs_measured": {k: {"reported": reported.get(k), "measured": defaults[k],
                                     "difference": None if reported.get(k) is None else reported[k] - defaults[k]}
                                 for k in TARGETS}}
    report["goals"] = {"recall@10>=0.99": defaults["recall@10"] >= TARGETS["recall@10"],
                       "recall@100>=0.95": defaults["recall@100"] >= TARGETS["recall@100"],
                       "bytes_per_token<=160": index_bytes / tokens <= 160,
                       "reported_within_0.01": all(abs(v["difference"]) <= 0.01 for v in
                                                   report["search"]["reported_vs_measured"].values()
                                                   if v["difference"] is not None)}
    peer = _run_peer(tag, encoded, queries, mask, truth, work, args, peer_state)
    report["fast_plaid"] = peer
    report["engines"] = _engines(ours, build, index_bytes, tokens, peer)
    report["parent_peak_rss_bytes"] = _vm_hwm()
    if not args.keep:
        shutil.rmtree(index_dir, ignore_errors=True)
        shutil.rmtree(encoded, ignore_errors=True)
    return report


def scale_ratios(sizes: dict) -> list[dict]:
    """queries/s from each size to the next (and first to last): the drop at defaults, at the fastest setting
    reaching the targets and of exact search, against the goal scaled to the size ratio (3.2x per 10x corpus)."""
    done = sorted((int(n), r) for n, r in sizes.items() if isinstance(r.get("search"), dict))
    pairs = list(zip(done, done[1:])) + ([(done[0], done[-1])] if len(done) > 2 else [])
    out = []
    for (a, ra), (b, rb) in pairs:
        sa, sb = ra["search"], rb["search"]
        ratio = rb["tokens"] / ra["tokens"]
        allowed = SCALE_DROP_PER_DECADE ** np.log10(ratio)
        drop = sa["queries_per_s"] / sb["queries_per_s"]
        at_targets = [s["fastest_at_targets"] for s in (sa, sb)]
        out.append({
            "from_passages": a, "to_passages": b, "token_ratio": ratio,
            "queries_per_s_drop_at_defaults": drop,
            "queries_per_s_drop_at_targets": (at_targets[0]["queries_per_s"] / at_targets[1]["queries_per_s"]
                                              if all(t["reaches_targets"] for t in at_targets) else None),
            "exact_queries_per_s_drop": sa["exact_queries_per_s"] / sb["exact_queries_per_s"],
            "allowed_drop": float(allowed),
            "goal_met": bool(drop <= allowed and ra["goals"]["recall@10>=0.99"] and rb["goals"]["recall@10>=0.99"]
                             and ra["goals"]["recall@100>=0.95"] and rb["goals"]["recall@100>=0.95"])})
    return out


def run_scale(args, sizes: list[int], shapes: list[str], num_queries: int, work: pathlib.Path) -> None:
    from bench.exact_search import machine_load

    out = pathlib.Path(args.out or RESULTS.with_name("search_scale_small.json" if args.small else "search_scale.json"))
    report = json.loads(out.read_text()) if out.exists() else {}
    if report.get("queries_per_corpus") != num_queries:
        report = {}
    report.update({"benchmark": "the index at several corpus sizes of one generator, built shard by shard, and "
                                "fast-plaid on the same corpora and queries", "small": args.small,
                   "queries_per_corpus": num_queries, "goals": {**GOALS, "bytes_per_token": 160.0,
                                                                "queries_per_s_drop_per_10x": SCALE_DROP_PER_DECADE},
                   "cpu_count": os.cpu_count(), "machine_at_start": machine_load(), "note": args.note,
                   "command": " ".join(sys.argv)})
    report.setdefault("corpora", {})
    report.setdefault("scale", {})
    peer_state: dict = {}
    for shape in shapes:
        entry = report["scale"].setdefault(shape, {"sizes": {}})
        for passages in sizes:
            key = f"{shape}@{passages}"
            kept = report["corpora"].get(key)
            if not args.force and kept and isinstance(kept.get("search"), dict):
                print(f"{key}: kept from {out}")
                continue
            load = os.getloadavg()
            t0 = time.perf_counter()
            result = bench_scale_size(shape, passages, work, num_queries, args, peer_state)
            result.update(wall_s=time.perf_counter() - t0, load_average_at_start=load,
                          load_average_at_end=os.getloadavg())
            report["corpora"][key] = result
            entry["sizes"][str(passages)] = key
            entry["ratios"] = scale_ratios({n: report["corpora"][k] for n, k in entry["sizes"].items()})
            verdicts = [report["corpora"][k].get("engines", {}).get("verdict") for k in entry["sizes"].values()]
            entry["ours_at_least_fast_plaid"] = [v["holds"] for v in verdicts if v] or None
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1) + "\n")
            print(json.dumps({key: {k: result.get(k) for k in ("build", "disk", "goals", "engines", "wall_s")}},
                             indent=1, default=str))
    checked = [r.get("engines", {}).get("verdict") for r in report["corpora"].values()]
    checked = [v for v in checked if v]
    report["verdict_ours_at_least_fast_plaid_on_every_corpus"] = (all(v["holds"] for v in checked) if checked
                                                                   else "fast-plaid ran on no corpus")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"results: {out}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="a quick run (5k-passage corpora, 32 queries)")
    parser.add_argument("--passages", type=int, default=None, help="passages per corpus")
    parser.add_argument("--queries-count", type=int, default=None)
    parser.add_argument("--corpora", default=None,
                        help="default uniform128,short64,zipf_mixed,distributed (with --scale: uniform128)")
    parser.add_argument("--scale", default=None,
                        help="comma-separated corpus sizes (passages), e.g. 100000,1000000: each corpus of --corpora "
                             "at each size, built shard by shard, with fast-plaid as the peer "
                             "(bench/results/search_scale.json)")
    parser.add_argument("--encode-shard-passages", type=int, default=20_000,
                        help="passages generated, written and freed at a time (encoded shards)")
    parser.add_argument("--exact-queries", type=int, default=None,
                        help="queries exact search is timed on (default: all up to --exact-all-max-tokens, else 32)")
    parser.add_argument("--exact-all-max-tokens", type=int, default=16_000_000)
    parser.add_argument("--single-queries", type=int, default=16, help="queries searched one by one (latency)")
    parser.add_argument("--child-timeout", type=int, default=6 * 3600, help="seconds for one build or search child")
    parser.add_argument("--progress", action="store_true", help="progress bars of generation, truth, build")
    parser.add_argument("--fast-plaid-python", default=None,
                        help="python of an environment with fast-plaid >= 1.7 (default: the repo's .venv-fast-plaid, "
                             "made when missing)")
    parser.add_argument("--no-peer-install", action="store_true", help="never pip install fast-plaid")
    parser.add_argument("--no-peer", action="store_true", help="skip fast-plaid")
    parser.add_argument("--peer-max-tokens", type=int, default=1_500_000,
                        help="fast-plaid is skipped on larger corpora (its build: about 320 s per million tokens on "
                             "2 cores, for each of 2 and 4 bits)")
    parser.add_argument("--peer-max-build-seconds", type=float, default=1200.0, help="one fast-plaid build's limit")
    parser.add_argument("--peer-timeout", type=float, default=4 * 3600, help="seconds for fast-plaid's whole run")
    parser.add_argument("--peer-threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--workdir", default=None, help="where shards and indexes go (default: a temp dir)")
    parser.add_argument("--force", action="store_true",
                        help="rerun the named corpora even if the results file has them (the others are kept)")
    parser.add_argument("--keep", action="store_true", help="keep the built indexes")
    parser.add_argument("--pylate-python", default=None, help="python of a separate venv with pylate")
    parser.add_argument("--pylate-timeout", type=int, default=2400)
    parser.add_argument("--note", default=None)
    for hidden in ("--search-worker", "--pylate-worker", "--build-worker", "--scale-search-worker"):
        parser.add_argument(hidden, action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--index", "--queries", "--corpus", "--truth", "--config"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.search_worker:
        return _search_worker(args)
    if args.pylate_worker:
        return _pylate_worker(args)
    if args.build_worker:
        return _build_worker(args)
    if args.scale_search_worker:
        return _scale_search_worker(args)
    if args.scale:
        sizes = [int(x) for x in args.scale.split(",")]
        work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="mire-bench-scale-"))
        work.mkdir(parents=True, exist_ok=True)
        return run_scale(args, sizes, (args.corpora or "uniform128").split(","),
                         args.queries_count or (32 if args.small else 128), work)
    args.corpora = args.corpora or "uniform128,short64,zipf_mixed,distributed"

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
