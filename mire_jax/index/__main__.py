"""Build or search a late-interaction index from the command line, in one process or many.

    python -m mire_jax.index build --encoded SHARDS/ --index INDEX/ [--config '{"shard_tokens": 4194304}']
        [--calibration-queries Q.npz]
    python -m mire_jax.index search --index INDEX/ --queries Q.npz --out RESULTS.npz [--k 100] [--exact]
        [--with-exact]
    python -m mire_jax.index calibrate INDEX/ --queries Q.npz [--config '{"target_recall_at_10": 0.99}']

`calibrate` chooses a built index's search settings again on real queries (a query log, a benchmark's queries),
without rebuilding: its index.json and manifest are replaced as one change, its shards kept (without --queries it
draws queries from the corpus again).

SHARDS/ is an encoded corpus (`mire_jax.index.encoded_corpus`, e.g. from eval/encode_corpus.py); query files are
.npz with `queries` [B, Nq, dim] and `mask` [B, Nq]. Several processes (hosts of a pod, or processes on one
machine) join through MIRE_COORDINATOR, MIRE_NUM_PROCESSES and MIRE_PROCESS_ID (`mire_jax.hosts`):
each builds and serves its own index shards; process 0 writes the results. `search` also records the time
and every process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np


def _peak_rss_kib() -> int:
    """This process's peak resident memory in KiB: VmHWM where /proc has it. Linux carries ru_maxrss over exec
    from the process that forked this one, so a small worker started by a big parent reports the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _queries(path, dim: int | None = None):
    """(queries [B, Nq, dim] float32, mask [B, Nq] bool) of a .npz query file; exits with one line naming the file
    when it is missing or malformed."""
    if path is None:
        return None
    try:
        data = np.load(path)
        missing = [key for key in ("queries", "mask") if key not in getattr(data, "files", ())]
        if missing:
            sys.exit(f"mire_jax.index: {path}: no array {missing[0]!r} (a query file is an .npz holding `queries` "
                     "[B, Nq, dim] and `mask` [B, Nq])")
        queries, mask = np.asarray(data["queries"], np.float32), np.asarray(data["mask"], bool)
    except FileNotFoundError:
        sys.exit(f"mire_jax.index: {path}: no such file")
    except (OSError, ValueError) as e:
        sys.exit(f"mire_jax.index: {path}: not a .npz query file ({' '.join(str(e).split())})")
    if queries.ndim != 3 or mask.shape != queries.shape[:2]:
        sys.exit(f"mire_jax.index: {path}: `queries` must be [B, Nq, dim] with a [B, Nq] `mask`, got "
                 f"{list(queries.shape)} and {list(mask.shape)}")
    if dim is not None and queries.shape[2] != dim:
        sys.exit(f"mire_jax.index: {path}: queries of dim {queries.shape[2]}, the index's is {dim}")
    if len(queries) == 0 or not mask.any(1).all():
        sys.exit(f"mire_jax.index: {path}: every query needs at least one kept token (mask), and there must be one")
    return queries, mask


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="index an encoded corpus, shard by shard (resumable)")
    build.add_argument("--encoded", required=True)
    build.add_argument("--index", required=True)
    build.add_argument("--config", default="{}", help="IndexConfig fields as JSON")
    build.add_argument("--calibration-queries", default=None)
    build.add_argument("--no-verify", action="store_true", help="check sizes, not sha256, of the input")
    search = sub.add_parser("search", help="search a saved index")
    search.add_argument("--index", required=True)
    search.add_argument("--queries", required=True)
    search.add_argument("--out", required=True)
    search.add_argument("--k", type=int, default=100)
    search.add_argument("--exact", action="store_true")
    search.add_argument("--with-exact", action="store_true", help="also store exact search's results (exact_*)")
    search.add_argument("--repeat", type=int, default=1, help="timed repetitions (after one warm-up)")
    calibrate = sub.add_parser("calibrate", help="choose a built index's search settings again, on real queries")
    calibrate.add_argument("index", help="a saved index folder")
    calibrate.add_argument("--queries", default=None,
                           help=".npz with `queries` [B, Nq, dim] and `mask` [B, Nq] (default: drawn from the corpus)")
    calibrate.add_argument("--config", default="{}",
                           help="IndexConfig fields to change as JSON, e.g. targets or a fixed search setting")
    calibrate.add_argument("--no-verify", action="store_true", help="check sizes, not sha256, of the index files")
    for p in (build, search, calibrate):
        p.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from mire_jax.hosts import initialize_distributed
    initialize_distributed()
    import jax

    from mire_jax.index import LateInteractionIndex
    from mire_jax.index import distributed as dist

    layout = dist.current_layout()
    if args.command == "build":
        t0 = time.perf_counter()
        index = LateInteractionIndex.from_shards(args.encoded, json.loads(args.config), verify=not args.no_verify,
                                                 progress=not args.no_progress, directory=args.index,
                                                 calibration_queries=_queries(args.calibration_queries))
        seconds = time.perf_counter() - t0
        peaks = dist.allgather(np.array([_peak_rss_kib()], np.int64), layout)[:, 0] * 1024
        if layout.index == 0:
            print("RESULT " + json.dumps({"seconds": seconds, "peak_rss_bytes_per_process": peaks.tolist(),
                                          "build": index.build_info, "calibration": index.calibration,
                                          "config": {k: v for k, v in vars(index.config).items()}}))
        return 0

    if args.command == "calibrate":
        return _calibrate(args, LateInteractionIndex, layout)

    t0 = time.perf_counter()
    index = LateInteractionIndex.load(args.index, verify=False)
    load_s = time.perf_counter() - t0
    q, m = _queries(args.queries) if layout.index == 0 else (None, None)
    warm = min(len(q), index.config.query_batch) if q is not None else 0
    warm = int(dist.broadcast(np.array([warm], np.int32), layout, (1,), np.int32)[0])
    index.search_positions(None if q is None else q[:warm], None if m is None else m[:warm], args.k,
                           exact=args.exact)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        positions, scores = index.search_positions(q, m, args.k, exact=args.exact)
        times.append(time.perf_counter() - t0)
    results = {"": (positions, scores)}
    if args.with_exact:
        results["exact_"] = index.search_positions(q, m, args.k, exact=True)
    peaks = dist.allgather(np.array([_peak_rss_kib()], np.int64), layout)[:, 0] * 1024
    if layout.index == 0:
        arrays = {}
        for prefix, (pos, sc) in results.items():
            ids = np.array([str(index.ids[p]) if p >= 0 else "" for p in pos.reshape(-1)]).reshape(pos.shape)
            arrays.update({f"{prefix}positions": pos, f"{prefix}scores": sc, f"{prefix}ids": ids})
        np.savez(args.out, **arrays)
        print("RESULT " + json.dumps({"load_s": load_s, "search_s": min(times), "queries": int(len(q)),
                                      "queries_per_s": len(q) / min(times), "processes": layout.count,
                                      "peak_rss_bytes_per_process": peaks.tolist(),
                                      "shards_per_process": int(len(index.shards)),
                                      "devices": jax.device_count()}))
    return 0


def _calibrate(args, index_class, layout) -> int:
    """`calibrate`: load, calibrate collectively on process 0's queries, and (process 0) replace the saved settings."""
    import dataclasses
    import os

    from mire_jax.index import distributed as dist
    from mire_jax.index.config import IndexConfig
    from mire_jax.index.storage import IndexFileError, sha256_file

    try:
        overrides = json.loads(args.config)
        known = {f.name for f in dataclasses.fields(IndexConfig)}
        unknown = sorted(set(overrides) - known) if isinstance(overrides, dict) else ["(not a JSON object)"]
    except json.JSONDecodeError as e:
        sys.exit(f"mire_jax.index: --config is not JSON: {e}")
    if unknown:
        sys.exit(f"mire_jax.index: --config: unknown IndexConfig fields {unknown}")
    try:
        index = index_class.load(args.index, verify=not args.no_verify)
    except (IndexFileError, FileNotFoundError) as e:
        sys.exit(f"mire_jax.index: {' '.join(str(e).split())}")
    if index.searcher is None:
        sys.exit(f"mire_jax.index: {args.index}: an exact index (no ScaNN searcher) has nothing to calibrate")
    given, failure = None, None
    if layout.index == 0:
        try:
            given = _queries(args.queries, index.dim)
        except SystemExit as e:  # the other processes are told before this one stops
            failure = e
    if layout.distributed and not int(dist.broadcast(np.array([failure is None], np.int32), layout, (1,), np.int32)[0]):
        raise failure if failure is not None else SystemExit(1)
    if failure is not None:
        raise failure
    before = dict(index.calibration or {})
    t0 = time.perf_counter()
    q, m = given if given is not None else (None, None)
    report = index.calibrate(q, m, progress=not args.no_progress, **overrides)
    if args.queries is not None and layout.index == 0:
        report["query_file"] = {"name": os.path.basename(args.queries), "sha256": sha256_file(args.queries)}
    index.save_calibration(args.index)
    if layout.index == 0:
        keys = ("mode", "reached", "source", "num_queries", "measured", "lower_bound", "uncertainty", "settings", "note")
        print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "index": args.index,
                                      "before": {k: before.get(k) for k in keys if k in before},
                                      "after": {k: report.get(k) for k in keys if k in report}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
