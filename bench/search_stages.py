"""Where a calibrated index's search time goes, against the time 20x exact search allows.

    python bench/search_stages.py --index DIR --queries FILE.npz --name NAME [--out bench/results/search_stages.json]

The index is one that `bench/search.py --keep --workdir W` saved (W/<corpus>_index, queries in W/<corpus>_queries.npz:
arrays `queries` [Q, Nq, dim] and `mask` [Q, Nq]). At the index's calibrated settings, over one batch of queries (after
a warm-up), it times each stage of the search apart: ScaNN's token neighbours, the first stage's approximate MaxSim
per passage, the exact rerank of the candidates (with the token rows it reads), and the whole search; then exact
search over the corpus. It also measures how far a coarser first stage could go: the approximate MaxSim of every
passage from the centroids of its tokens' ScaNN partitions (the index's own partitioner; a PLAID-style "centroid
interaction" on them), as the recall of the exact top 10 and top 100 among its best N passages.
The results are added under the corpus's name to the JSON file.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import time

import numpy as np

from mire_jax.index.calibrate import NEIGHBOR_GRID, RERANK_GRID
from mire_jax.index.search import SearchSettings

RANKS = (100, 300, 1000, 2000, 4000)
DEEPEST = RERANK_GRID[-1]  # the deepest rerank calibration considers


def _timed(fn, *args):
    fn(*args)  # warm-up: compilations, first reads
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def stage_times(index, q: np.ndarray, mask: np.ndarray) -> dict:
    s = SearchSettings.of(index.config)
    key = (s.neighbors_per_token, s.fill_fraction)
    hits, scann_s = _timed(index.token_hits, q, mask, s.leaves_to_search, s.neighbors_per_token)
    first, first_s = _timed(index.merge_first_stage, mask, hits, [key], max(100, s.rerank_passages))
    candidates = [positions for positions, _ in first[key]]
    _, rerank_s = _timed(index.rerank, q, mask, candidates, 100)
    _, search_s = _timed(index.search_positions, q, mask, 100)
    _, exact_s = _timed(lambda: index.search_positions(q, mask, 100, exact=True))
    tokens = [int(np.sum(index.offsets[c + 1] - index.offsets[c])) for c in candidates]
    n = len(q)
    ms = lambda seconds: round(1000 * seconds / n, 2)
    return {"settings": dataclasses.asdict(s), "queries": n,
            "ms_per_query": {"scann_token_neighbours": ms(scann_s), "first_stage": ms(first_s),
                             "exact_rerank": ms(rerank_s), "search": ms(search_s), "exact_search": ms(exact_s),
                             "allowed_at_20x": ms(exact_s / 20)},
            "rerank": {"candidates": s.rerank_passages, "tokens_per_query": int(np.mean(tokens)),
                       "bytes_read_per_query": int(np.mean(tokens)) * index.dim * 2,
                       "ns_per_token": round(1e9 * rerank_s / max(sum(tokens), 1), 1)}}


def first_stage_sweep(index, q: np.ndarray, mask: np.ndarray, truth: np.ndarray) -> list[dict]:
    """The first stage alone (ScaNN + approximate MaxSim) at the calibrated probe and fill and at half the probe, for
    every neighbour count: its time per query, and the recall of the exact top 10 / top 100 among its best
    `DEEPEST` candidates, the most that any rerank calibration considers could reach."""
    s = SearchSettings.of(index.config)
    out = []
    for probe in sorted({max(1, s.leaves_to_search // 2), s.leaves_to_search}):
        for n in sorted({min(n, max(sh.num_tokens for sh in index.shards)) for n in NEIGHBOR_GRID}):
            settings = SearchSettings(probe, n, s.fill_fraction, DEEPEST)
            candidates, seconds = _timed(index.scored_candidates, q, mask, DEEPEST, settings)
            found10, found100 = [], []
            for (positions, _), t in zip(candidates, truth):
                t = t[t >= 0]
                found10.append(np.isin(t[:10], positions).mean())
                found100.append(np.isin(t, positions).mean())
            out.append({"leaves_to_search": probe, "neighbors_per_token": n,
                        "ms_per_query": round(1000 * seconds / len(q), 2),
                        "recall@10": round(float(np.mean(found10)), 4), "recall@100": round(float(np.mean(found100)), 4)})
    return out


def centroid_interaction_recall(index, q: np.ndarray, mask: np.ndarray, truth: np.ndarray) -> dict:
    """Recall of the exact top 10 / top 100 among the N best passages by centroid interaction: per query token, the
    best centroid score among a passage's tokens' partition centroids (each the normalised mean of its tokens)."""
    per_shard = []
    for shard in index.shards:
        assignment = pathlib.Path(shard.folder) / "scann" / "datapoint_to_token.npy"  # ScaNN's own file
        if not assignment.exists():
            raise SystemExit(f"{assignment}: missing (this ScaNN version saves its partition ids elsewhere)")
        codes = np.load(assignment).astype(np.int64)
        count = int(codes.max()) + 1
        centroids = np.zeros((count, index.dim), np.float32)
        for start in range(0, len(codes), 1 << 20):
            np.add.at(centroids, codes[start:start + (1 << 20)],
                      np.asarray(shard.embeddings[start:start + (1 << 20)], np.float32))
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        pairs = np.unique(shard.token_passage.astype(np.int64) * count + codes)  # (passage, centroid), by passage
        passage, centroid = pairs // count, pairs % count
        per_shard.append((centroids, centroid, np.searchsorted(passage, np.arange(shard.num_passages))))
    found = {n: ([], []) for n in RANKS}
    for b in range(len(q)):
        kept = q[b][mask[b]]
        scores = np.concatenate([np.maximum.reduceat((kept @ c.T)[:, cents], starts, axis=1).sum(0)
                                 for c, cents, starts in per_shard])
        rank = np.empty(len(scores), np.int64)
        rank[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
        truth_rank = rank[truth[b][truth[b] >= 0]]
        for n in RANKS:
            found[n][0].append(np.mean(truth_rank[:10] < n))
            found[n][1].append(np.mean(truth_rank < n))
    return {"centroids_per_shard": [len(c) for c, _, _ in per_shard], "queries": len(q),
            "recall_among_best": {str(n): {"recall@10": round(float(np.mean(a)), 4),
                                           "recall@100": round(float(np.mean(b)), 4)} for n, (a, b) in found.items()}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--name", required=True, help="the corpus's name in the results file")
    p.add_argument("--batch", type=int, default=64, help="queries timed (one batch)")
    p.add_argument("--centroid-queries", type=int, default=24)
    p.add_argument("--out", default="bench/results/search_stages.json")
    a = p.parse_args(argv)
    from mire_jax.index import LateInteractionIndex

    data = np.load(a.queries)
    queries, mask = np.asarray(data["queries"], np.float32), np.asarray(data["mask"], bool)
    index = LateInteractionIndex.load(a.index, verify=False)
    if index.config.mode != "scann":
        raise SystemExit(f"{a.index}: the index searches exactly (mode {index.config.mode!r}); it has no stages to time")
    q, m = queries[:a.batch], mask[:a.batch]
    result = {"tokens": int(index.offsets[-1]), "passages": index.num_passages, "dim": index.dim,
              "shards": len(index.shards), "cpus": os.cpu_count(), **stage_times(index, q, m)}
    truth, _ = index.search_positions(q, m, 100, exact=True)
    result["first_stage_at_deepest_rerank"] = first_stage_sweep(index, q, m, truth)
    c = a.centroid_queries
    result["centroid_interaction"] = centroid_interaction_recall(index, q[:c], m[:c], truth[:c])
    results = {}
    if os.path.exists(a.out):
        with open(a.out) as f:
            results = json.load(f)
    results[a.name] = result
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
