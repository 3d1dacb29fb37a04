"""fast-plaid (LightOn's Rust PLAID engine) on a corpus written by `bench/peers/fast_plaid.py`; run by the
python of the fast-plaid virtual environment (imports numpy, torch, fast_plaid and the standard library only).

    .venv-fast-plaid/bin/python -P bench/peers/fast_plaid_worker.py --data FOLDER [--threads 2]

FOLDER holds tokens.npy ([T, dim] float16/float32, L2-normalised rows), offsets.npy (int64 [N + 1]),
queries.npz (queries [B, Nq, dim] float32, mask [B, Nq] bool) and truth.npy (int64 [B, 100], the exact MaxSim
top 100 passage positions, best first).

For each nbits, an index is built in a child process (so that `--max-build-seconds` can stop it), timed, and
its folder measured on disk. The parent then opens it and sweeps the search settings: for every n_full_scores,
n_ivf_probe grows until recall@10 >= 0.99 and recall@100 >= 0.95 are both reached (deeper probes only cost
time), until two deeper probes in a row raise neither recall by 0.002 (the compressed residuals, not the
candidates, then bound the recall), or until one batch search takes longer than `--max-search-seconds`. Each row has recall@10/@100 against
the truth, queries/s of the whole batch (top 100) and the median single-query latency over `--single-queries`
queries. Progress lines `ROW {json}` and `BUILD {json}` are printed as they come; the last line is
`RESULT {json}` with every row, the builds and the chosen setting: the fastest one reaching both targets, or
the best recall one (largest recall@10 + recall@100) where none does. Every setting's top-100 ids are saved to
FOLDER/found/ so that the caller can recompute recall itself.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent

TARGETS = {"recall@10": 0.99, "recall@100": 0.95}
TOP_K = 100
PLATEAU = 0.002


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder written by bench/peers/fast_plaid.py write_inputs")
    p.add_argument("--work", default=None, help="where the indexes go (default: DATA/indexes)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--nbits", default="2,4", help="comma-separated residual bits to build (each its own index)")
    p.add_argument("--probes", default="1,2,4,8,16,32,64", help="n_ivf_probe values, ascending")
    p.add_argument("--full-scores", default="512,1024,2048,4096,8192",
                   help="n_full_scores values; fast-plaid returns at most n_full_scores / 4 passages, so values "
                        f"below 4 x {TOP_K} are skipped")
    p.add_argument("--kmeans-niters", type=int, default=4, help="fast-plaid's default")
    p.add_argument("--max-build-seconds", type=float, default=1800.0,
                   help="stop a build running longer (the remaining nbits are then not built either)")
    p.add_argument("--max-search-seconds", type=float, default=120.0,
                   help="a batch search slower than this ends the n_ivf_probe sweep for its n_full_scores")
    p.add_argument("--single-queries", type=int, default=16, help="queries searched one by one for the latency")
    p.add_argument("--keep", action="store_true", help="keep the indexes")
    p.add_argument("--build-one", type=int, default=None, help=argparse.SUPPRESS)  # internal: child builds nbits
    p.add_argument("--index-dir", default=None, help=argparse.SUPPRESS)  # internal: where the child builds
    return p.parse_args(argv)


def _limit_threads(threads: int) -> None:
    """CPU only, `threads` threads for torch (k-means, compression), OpenMP/MKL and the Rust engine's rayon pool;
    set before torch is imported."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = str(threads)


def _recall(found, truth, k: int) -> float:
    """bench/search.py's `_recall`: overlap of the top-k sets / k, averaged over queries."""
    import numpy as np

    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def _folder_bytes(folder: pathlib.Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def _load_inputs(data: pathlib.Path):
    import numpy as np

    tokens = np.load(data / "tokens.npy", mmap_mode="r")
    offsets = np.load(data / "offsets.npy").astype(np.int64)
    q = np.load(data / "queries.npz")
    truth = np.load(data / "truth.npy")
    return tokens, offsets, q["queries"], q["mask"].astype(bool), truth


def build_one(args) -> None:
    """Child process: build the index of `args.build_one` bits and print `BUILT {json}`."""
    import torch
    from fast_plaid import search

    torch.set_num_threads(args.threads)
    data = pathlib.Path(args.data)
    tokens, offsets, *_ = _load_inputs(data)
    # One float16 tensor per passage (fast-plaid packs them to float16 itself); views of one array, no copies.
    all_tokens = torch.from_numpy(tokens.astype("float16", copy=False))
    docs = [all_tokens[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    folder = pathlib.Path(args.index_dir)
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    index = search.FastPlaid(index=str(folder), device="cpu")
    # start_from_scratch=0: without it, an index of <= 1000 passages also keeps every raw embedding on disk (for
    # later rebuilds on update), which is no part of searching it and would inflate the bytes per token.
    index.create(documents_embeddings=docs, nbits=args.build_one, kmeans_niters=args.kmeans_niters,
                 start_from_scratch=0)
    build_s = time.perf_counter() - t0
    meta = json.loads((folder / "metadata.json").read_text())
    print("BUILT " + json.dumps({"build_s": build_s, "metadata": meta}), flush=True)


def _run_build(args, nbits: int, index_dir: pathlib.Path) -> tuple[dict | None, str]:
    cmd = [sys.executable, "-P", __file__, "--data", args.data, "--threads", str(args.threads),
           "--kmeans-niters", str(args.kmeans_niters), "--build-one", str(nbits), "--index-dir", str(index_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.max_build_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the build's own process group (k-means threads, the Rust engine)
        proc.communicate()
        return None, f"build (nbits={nbits}) stopped after {args.max_build_seconds:.0f} s (--max-build-seconds)"
    for line in out.splitlines():
        if line.startswith("BUILT "):
            return json.loads(line[len("BUILT "):]), ""
    tail = (err or out).strip().splitlines()[-3:]
    return None, f"build (nbits={nbits}) exited {proc.returncode}: {' | '.join(tail)}"


def _ids(results, k: int):
    import numpy as np

    found = np.full((len(results), k), -1, np.int64)
    for b, row in enumerate(results):
        ids = [int(pid) for pid, _ in row][:k]
        found[b, :len(ids)] = ids
    return found


def sweep(args, index_dir: pathlib.Path, nbits: int, queries, truth, found_dir: pathlib.Path) -> list[dict]:
    """Every (n_full_scores, n_ivf_probe) setting of one index; see the module docstring for the early stops."""
    import numpy as np
    from fast_plaid import search

    probes = sorted(int(x) for x in args.probes.split(","))
    full_scores = sorted(int(x) for x in args.full_scores.split(","))
    if any(f < 4 * TOP_K for f in full_scores):
        print(f"NOTE n_full_scores below {4 * TOP_K} skipped: fast-plaid returns at most n_full_scores / 4 "
              f"passages, fewer than the top {TOP_K}", flush=True)
        full_scores = [f for f in full_scores if f >= 4 * TOP_K] or [4 * TOP_K]
    t0 = time.perf_counter()
    index = search.FastPlaid(index=str(index_dir), device="cpu")
    load_s = time.perf_counter() - t0
    single = queries[:max(1, min(args.single_queries, len(queries)))]

    def run(qs, probe, full, processes):
        return index.search(queries_embeddings=qs, top_k=TOP_K, n_ivf_probe=probe, n_full_scores=full,
                            show_progress=False, n_processes=processes)

    run(queries[:8], probes[0], full_scores[0], args.threads)  # warm-up: first reads of the mapped files, pools
    rows = []
    for full in full_scores:
        flat = 0  # consecutive deeper probes that raised neither recall by PLATEAU
        for probe in probes:
            t0 = time.perf_counter()
            results = run(queries, probe, full, args.threads)
            batch_s = time.perf_counter() - t0
            found = _ids(results, TOP_K)
            latencies = []
            for q in single:
                t0 = time.perf_counter()
                run([q], probe, full, 1)
                latencies.append(time.perf_counter() - t0)
            name = f"nbits{nbits}_probe{probe}_full{full}"
            np.save(found_dir / f"{name}.npy", found)
            row = {"setting": name, "nbits": nbits, "n_ivf_probe": probe, "n_full_scores": full,
                   "recall@10": _recall(found, truth, 10), "recall@100": _recall(found, truth, 100),
                   "batch_s": batch_s, "queries_per_s": len(queries) / batch_s,
                   "single_query_ms_median": 1000 * float(np.median(latencies)), "load_s": load_s}
            row["reaches_targets"] = all(row[k] >= v for k, v in TARGETS.items())
            print("ROW " + json.dumps(row), flush=True)
            rows.append(row)
            if row["reaches_targets"]:
                break  # deeper probes at this n_full_scores only cost time
            previous = rows[-2] if len(rows) > 1 and rows[-2]["n_full_scores"] == full else None
            gained = previous is None or any(row[k] - previous[k] >= PLATEAU for k in TARGETS)
            flat = 0 if gained else flat + 1
            if flat >= 2:
                print(f"NOTE nbits={nbits} n_full_scores={full}: recall flat over the last two probe steps "
                      f"(n_ivf_probe {probe}), deeper probes skipped", flush=True)
                break
            if batch_s > args.max_search_seconds:
                print(f"NOTE nbits={nbits} n_full_scores={full}: a batch search took {batch_s:.0f} s "
                      f"(> --max-search-seconds), deeper probes skipped", flush=True)
                break
    index.close()
    return rows


def choose(rows: list[dict]) -> dict | None:
    """The fastest (queries/s) row reaching both targets, else the one of best recall@10 + recall@100."""
    if not rows:
        return None
    reached = [r for r in rows if r["reaches_targets"]]
    if reached:
        return {**max(reached, key=lambda r: r["queries_per_s"]), "chosen_because": "fastest reaching the targets"}
    best = max(rows, key=lambda r: (r["recall@10"] + r["recall@100"], r["queries_per_s"]))
    return {**best, "chosen_because": "targets never reached: best recall@10 + recall@100"}


def main(argv=None) -> None:
    # Run as a script without -P, this file's folder is sys.path[0], and it holds the project's `fast_plaid.py`
    # (the caller's side of this peer), which would shadow the real package: drop it before importing fast_plaid.
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE]
    args = parse_args(argv)
    _limit_threads(args.threads)
    if args.build_one is not None:
        build_one(args)
        return
    from importlib import metadata

    import fast_plaid  # noqa: F401  (fails here, with its own message, where the package is broken)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    data = pathlib.Path(args.data)
    tokens, offsets, queries, mask, truth = _load_inputs(data)
    num_tokens = int(offsets[-1])
    # fast-plaid trims only trailing all-zero rows of a padded query: give it each query's kept tokens instead.
    query_list = [torch.from_numpy(np.ascontiguousarray(queries[b][mask[b]], np.float32)) for b in range(len(queries))]
    work = pathlib.Path(args.work) if args.work else data / "indexes"
    found_dir = data / "found"
    shutil.rmtree(found_dir, ignore_errors=True)  # no ids of an earlier run
    found_dir.mkdir(parents=True)
    builds, rows, skipped = {}, [], None
    for nbits in [int(x) for x in args.nbits.split(",")]:
        if skipped:
            builds[str(nbits)] = f"not built: {skipped}"
            continue
        index_dir = work / f"nbits{nbits}"
        built, why = _run_build(args, nbits, index_dir)
        if built is None:
            print(f"NOTE {why}", flush=True)
            builds[str(nbits)] = why
            if "stopped after" in why:
                skipped = why
            shutil.rmtree(index_dir, ignore_errors=True)
            continue
        files = _folder_bytes(index_dir)
        disk = sum(files.values())
        info = {"build_s": built["build_s"], "build_s_per_million_tokens": built["build_s"] / num_tokens * 1e6,
                "disk_bytes": disk, "bytes_per_token": disk / num_tokens, "files_bytes": files,
                "num_partitions": built["metadata"].get("num_partitions")}
        print("BUILD " + json.dumps({"nbits": nbits, **info}), flush=True)
        builds[str(nbits)] = info
        index_rows = sweep(args, index_dir, nbits, query_list, truth, found_dir)
        for r in index_rows:
            r.update(build_s=info["build_s"], bytes_per_token=info["bytes_per_token"])
        rows += index_rows
        if not args.keep:
            shutil.rmtree(index_dir, ignore_errors=True)
    result = {"engine": "fast-plaid", "version": metadata.version("fast-plaid"), "torch": torch.__version__,
              "device": "cpu", "threads": args.threads, "passages": len(offsets) - 1, "tokens": num_tokens,
              "dim": int(tokens.shape[1]), "queries": len(query_list), "targets": TARGETS, "top_k": TOP_K,
              "builds": builds, "rows": rows, "best": choose(rows)}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
