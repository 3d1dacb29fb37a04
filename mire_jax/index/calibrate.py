"""Calibration: the index measures its own recall against exact search and picks its search settings.

Queries (real ones when the caller has them, else drawn from the corpus by `draw_query_mix`: kinds from easy to
hard, `QUERY_KINDS`, so that what calibration measures is a lower bound of what real queries get) are searched
exactly once (`mire_jax.index.exact`, MaxSim from `mire_jax.scoring`) for their true top 100. Then a
small grid of search settings is evaluated, ordered by cost: partitions probed (a fraction of each shard's
leaves), neighbours per query token, the first stage's fill, and candidates reranked. Because the rerank
is exact, a true top-k passage is returned exactly when it is among the reranked candidates, so the
recall of every rerank depth follows from one first-stage ranking per (probe, neighbours, fill), and one
ScaNN search per probe serves every neighbour count (ScaNN returns each token's neighbours best first).
Costs per query are estimated here (ScaNN time per probe, first-stage time, rerank time per candidate);
the `VERIFIED` settings of lowest estimated cost that reach both targets are then searched for real on the
calibration queries, and the fastest wins (estimates of near-equal settings differed by up to 1.5x from the
search's own time, and picked different settings in different builds); exact search wins when it is cheaper
still. Under `jax.distributed` every process evaluates its own shards; found counts are summed and times maxed over
processes, so all processes choose the same settings.

The report says what the recall was measured on (`source`: drawn or given, `num_queries`, the `mix` of kinds), its
`uncertainty` (standard errors), the recall of each kind (`by_kind`), the recall the index stands behind (`reported`:
the given queries' mean, or the hardest drawn kind's), that of short drawn queries at the settings chosen
(`short_queries`, not used to choose them), and whether the reported recall can be taken as a lower bound (`trust`;
the build warns when it cannot).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
import warnings

import numpy as np

from mire_jax.index import distributed as dist
from mire_jax.index.config import SEARCH_FIELDS, IndexConfig
from mire_jax.index.search import SearchSettings, query_chunks

RERANK_GRID = (100, 125, 160, 200, 250, 320, 400, 500, 640, 800, 1000, 1250, 1600, 2000, 2500, 3200, 4000)
NEIGHBOR_GRID = (128, 256, 512, 1024, 2048, 4096, 8192, 16384)
LEAF_FRACTIONS = (1 / 256, 1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8)
FILL_GRID = (0.8, 0.5)
VERIFIED = 3  # feasible settings of lowest estimated cost whose real search time is measured
TRUTH_K = 100
TRUST_MARGIN = 0.02  # a kind of drawn query this far below a target makes the recall measured no lower bound
NEARBY_PASSAGES = 10  # passages near a source passage that a drawn query also takes tokens from


@dataclasses.dataclass(frozen=True)
class QueryKind:
    """One kind of drawn query: where its tokens come from (shares of its tokens) and how far they are moved.

    Attributes:
        sources: unrelated source passages the query is about (a mixed-topic query has several).
        source_share: share of tokens copied from the source passages.
        near_share: share from passages near a source (found by searching the source's own tokens).
        noise: range of the norm of the Gaussian noise added to each (unit) token before it is re-normalised, drawn
            per query: 0.5 moves a token to cosine ~0.9 of where it was, 1 to ~0.7, 1.7 to ~0.5.
        length: range of the share of the query's tokens that are kept (the rest masked), drawn per query.
    The rest of the tokens are random corpus tokens: generic words, mostly the corpus's most frequent ones.
    """

    sources: int
    source_share: float
    near_share: float
    noise: tuple[float, float]
    length: tuple[float, float] = (0.75, 1.0)


# The difficulty mix of drawn queries, from the easy end to the hard end; the calibration queries cycle through it.
QUERY_KINDS = {
    "near": QueryKind(1, 0.5, 0.35, (0.3, 0.9)),       # words of a passage and of its neighbours, lightly moved
    "noisy": QueryKind(1, 0.55, 0.35, (1.0, 1.8)),     # mostly noise around a source passage
    "generic": QueryKind(1, 0.25, 0.1, (0.5, 1.2)),    # mostly generic (frequent) words, a quarter from one passage
    "mixed": QueryKind(3, 0.6, 0.25, (0.5, 1.2)),      # three unrelated topics in one query
}
# Short queries (a few words: 4 to 8 of 32 tokens) get less recall from the same settings; they are not used to choose
# the settings (that would make every search pay for them) but measured at the settings chosen, and reported apart.
SHORT_KIND = QueryKind(1, 0.3, 0.4, (0.5, 1.3), (0.125, 0.25))
SHORT_BELOW = 0.5  # queries with fewer kept tokens than this share of the calibration queries' length are short


def draw_queries(index, count: int, tokens: int, seed: int = 0, kind: str = "near") -> tuple[np.ndarray, np.ndarray]:
    """Queries of one kind of `QUERY_KINDS` drawn from the corpus (`draw_query_mix`; calibration draws all kinds):
    -> (embeddings [count, tokens, dim] float32, mask [count, tokens] bool)."""
    q, mask, _ = draw_query_mix(index, count, tokens, seed, {kind: {**QUERY_KINDS, "short": SHORT_KIND}[kind]})
    return q, mask


def draw_query_mix(index, count: int, tokens: int, seed: int = 0,
                   kinds: dict[str, QueryKind] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Calibration queries drawn from the corpus, of every difficulty a real query may have.

    A real query shares some words with its best passages and is about their topic; it may also be worded unlike
    them, be mostly generic words, or mix topics. Each drawn query is of one kind of `kinds` (`QUERY_KINDS`, the
    queries cycling through them): it takes its tokens from its source passage(s), from passages near them (found by
    searching a source's own tokens) and from random corpus tokens (generic words), every token moved by Gaussian
    noise of a norm drawn per query in the kind's range and re-normalised, so that no drawn query is a copy of a
    passage; a share of its `tokens` are kept (3/4 to all, a few for short queries). The hard kinds are there so that
    the recall measured is a lower bound of what real queries get, not an average over easy ones. Under
    `jax.distributed` each process draws its share from its own shards and all processes get all queries.

    Returns:
        (embeddings [count, tokens, dim] float32, mask [count, tokens] bool, the kind of every query).
    """
    kinds = QUERY_KINDS if kinds is None else kinds
    names = list(kinds)
    layout = index.layout
    per_process = math.ceil(count / layout.count)
    order = [names[(layout.index * per_process + b) % len(names)] for b in range(per_process)]
    all_kinds = [names[b % len(names)] for b in range(per_process * layout.count)][:count]
    rng = np.random.default_rng([seed, layout.index])
    view = index.local_view()
    embeddings, offsets = view.embeddings, view.offsets
    dim = embeddings.shape[1]
    lengths = np.diff(offsets)
    nonempty = np.flatnonzero(lengths > 0)
    q = np.zeros((per_process, tokens, dim), np.float32)
    mask = np.zeros((per_process, tokens), bool)
    if len(nonempty):  # a process serving no passage draws empty queries
        sources = [rng.choice(nonempty, kinds[name].sources) for name in order]
        flat = np.concatenate(sources)
        near_of = dict(zip(flat.tolist(), _neighbours(index, embeddings, offsets, flat, tokens)))
        for b, name in enumerate(order):
            kind = kinds[name]
            low, high = (max(1, round(tokens * f)) for f in kind.length)
            n = int(rng.integers(low, max(low, high) + 1))
            n_src = max(1, round(n * kind.source_share))
            n_near = min(round(n * kind.near_share), n - n_src)
            src = rng.choice(sources[b], n_src)
            near = np.concatenate([near_of[int(s)] for s in sources[b]] + [sources[b]])
            near = rng.choice(near, n_near)
            rows = np.concatenate([offsets[src] + rng.integers(0, lengths[src]),
                                   offsets[near] + rng.integers(0, np.maximum(lengths[near], 1)),
                                   rng.integers(0, offsets[-1], n - n_src - n_near)])
            sorted_rows = np.argsort(rows, kind="stable")  # sorted reads, original order kept
            x = np.empty((n, dim), np.float32)
            x[sorted_rows] = np.asarray(embeddings[rows[sorted_rows]], np.float32)
            noise = rng.uniform(*kind.noise)
            x += rng.standard_normal(x.shape).astype(np.float32) * (noise / np.sqrt(dim))
            q[b, :n] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            mask[b, :n] = True
    q = dist.allgather(q, layout).reshape(-1, tokens, dim)[:count]
    mask = dist.allgather(mask, layout).reshape(-1, tokens)[:count]
    return q, mask, all_kinds


def _neighbours(index, embeddings, offsets, sources, tokens: int) -> list[np.ndarray]:
    """Local positions of the passages nearest each source passage (its first `tokens` tokens as the
    query; ranks 2 to `NEARBY_PASSAGES` + 1 of an approximate search with rule-of-thumb settings)."""
    q = np.zeros((len(sources), tokens, embeddings.shape[1]), np.float32)
    m = np.zeros((len(sources), tokens), bool)
    for b, source in enumerate(sources):
        rows = np.arange(offsets[source], min(offsets[source + 1], offsets[source] + tokens))
        q[b, :len(rows)] = np.asarray(embeddings[rows], np.float32)
        m[b, :len(rows)] = True
    if index.searcher is None:
        return [np.zeros(0, np.int64)] * len(sources)
    settings = SearchSettings.of(index.config.with_default_search(int(offsets[-1])))
    candidates = [pos for pos, _ in index.scored_candidates(q, m, NEARBY_PASSAGES * 4, settings)]
    found, _ = index.rerank(q, m, candidates, NEARBY_PASSAGES + 1)
    local = index.to_local(np.maximum(found, 0))
    return [row[(f >= 0) & (row != s)][:NEARBY_PASSAGES] for row, f, s in zip(local, found, sources)]


def exact_report(config: IndexConfig) -> dict:
    """The calibration record of an exact index: its recall is 1 by construction."""
    return {"mode": "exact", "reached": True, "measured": {"recall@10": 1.0, "recall@100": 1.0},
            "targets": {"recall@10": config.target_recall_at_10, "recall@100": config.target_recall_at_100},
            "num_queries": 0, "queries": "none: exact search", "source": "none", "mix": {},
            "uncertainty": {"recall@10": 0.0, "recall@100": 0.0}, "note": "exact search: recall 1 by construction",
            "reported": {"recall@10": 1.0, "recall@100": 1.0, "basis": "exact search"},
            "trust": {"lower_bound": True, "note": "exact search: recall 1 on any query by construction"}}


def _ranks(candidates: list[np.ndarray], truth: np.ndarray, width: int) -> np.ndarray:
    """[Q, width]: rank of each true top-`width` passage among its query's candidates (large if absent)."""
    out = np.full((len(truth), width), np.iinfo(np.int32).max, np.int64)
    for b, cand in enumerate(candidates):
        t = truth[b, :width]
        order = np.argsort(t)
        sorted_t = t[order]
        at = np.minimum(np.searchsorted(sorted_t, cand), width - 1)
        hit = (sorted_t[at] == cand) & (cand >= 0)
        out[b, order[at[hit]]] = np.flatnonzero(hit)
    return out


def _recall(found: np.ndarray, valid: np.ndarray, sigmas: float) -> tuple[float, float]:
    """(recall over all queries, that minus `sigmas` standard errors of the per-query mean)."""
    keep = valid > 0
    if not keep.any():
        return 1.0, 1.0
    mean = float(found[keep].sum() / valid[keep].sum())
    per_query = found[keep] / valid[keep]
    error = float(per_query.std(ddof=1) / np.sqrt(keep.sum())) if keep.sum() > 1 else 0.0
    return mean, mean - sigmas * error


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _global_max(value: float, layout) -> float:
    return float(dist.allgather(np.array([value], np.float64), layout).max())


def _rerank_seconds_per_candidate(index, q, mask, candidates, layout) -> float:
    """Exact rerank time per candidate passage (after a warm-up compiling its block shapes)."""
    sample = min(8, len(q))
    cands = [c for c in candidates[:sample]]
    index.rerank(q[:sample], mask[:sample], cands, 10)
    _, seconds = _timed(index.rerank, q[:sample], mask[:sample], cands, 10)
    total = sum(len(c) for c in cands)
    return _global_max(seconds / max(total, 1), layout)


def _prepare_queries(index, cfg, queries, query_mask):
    """(queries, mask, kinds): the caller's (process 0's, under jax.distributed; kinds None) or drawn ones (the
    `QUERY_KINDS` mix, then `calibration_short_queries` short ones, of kind "short")."""
    layout = index.layout
    given = queries is not None
    if layout.distributed:  # process 0's queries (or none) for every process
        given = bool(dist.broadcast(np.array([given], np.int32), layout, (1,), np.int32)[0])
        if given:
            queries, query_mask, _, _ = dist.broadcast_queries(queries, query_mask, 0, False, layout)
    if given:
        return np.asarray(queries, np.float32), np.asarray(query_mask, bool), None
    kinds = None
    if cfg.calibration_kinds is not None:
        unknown = sorted(set(cfg.calibration_kinds) - set(QUERY_KINDS))
        if unknown or not cfg.calibration_kinds:
            raise ValueError(f"IndexConfig.calibration_kinds: {unknown or 'none'} given, the kinds are "
                             f"{list(QUERY_KINDS)}")
        kinds = {name: QUERY_KINDS[name] for name in cfg.calibration_kinds}
    q, m, names = draw_query_mix(index, cfg.calibration_queries, cfg.calibration_query_tokens, cfg.seed, kinds)
    if cfg.calibration_short_queries > 0:
        short_q, short_m, _ = draw_query_mix(index, cfg.calibration_short_queries, cfg.calibration_query_tokens,
                                             cfg.seed + 1, {"short": SHORT_KIND})
        q, m = np.concatenate([q, short_q]), np.concatenate([m, short_m])
        names = names + ["short"] * len(short_q)
    return q, m, names


class _Grid:
    """The settings grid of one calibration and the best points found so far."""

    def __init__(self, index, cfg, fixed, truth):
        self.cfg, self.truth = cfg, truth
        self.leaves = [fixed["leaves_to_search"]] if "leaves_to_search" in fixed else sorted(
            {max(1, round(f * cfg.num_leaves)) for f in LEAF_FRACTIONS})
        # The largest shard of any process: every process must evaluate the same grid (collectives).
        max_tokens = int(dist.allgather(np.array([max([s.num_tokens for s in index.shards] + [1])], np.int32),
                                        index.layout).max())
        self.neighbors = [fixed["neighbors_per_token"]] if "neighbors_per_token" in fixed else sorted(
            {min(n, max_tokens) for n in NEIGHBOR_GRID})
        self.fills = [fixed["fill_fraction"]] if "fill_fraction" in fixed else list(FILL_GRID)
        cap = max(min(index.num_passages, RERANK_GRID[-1]), 1)
        self.depths = [fixed["rerank_passages"]] if "rerank_passages" in fixed else sorted(
            {min(r, cap) for r in RERANK_GRID})
        self.full_depth = min(TRUTH_K, index.num_passages)
        self.valid10, self.valid100 = (truth[:, :10] >= 0).sum(1), (truth >= 0).sum(1)
        self.best = self.best_effort = None
        self.feasible = []  # per (probe, neighbours, fill): its shallowest rerank depth reaching the targets
        self.points = 0

    def pairs(self):
        return [(n, f) for n in self.neighbors for f in self.fills]

    def consider(self, probe, n, fill, cost_before_rerank, rerank_s, found10, found100) -> None:
        """Score every rerank depth of one (probe, neighbours, fill) from its found counts [Q, depths]."""
        t10, t100 = self.cfg.target_recall_at_10, self.cfg.target_recall_at_100
        for j, depth in enumerate(self.depths):
            self.points += 1
            rec10, low10 = _recall(found10[:, j], self.valid10, self.cfg.calibration_sigmas)
            rec100, low100 = _recall(found100[:, j], self.valid100, self.cfg.calibration_sigmas)
            if depth < self.full_depth:
                rec100 = low100 = 0.0
            cost = cost_before_rerank + depth * rerank_s
            point = {"cost": float(cost), "recall@10": rec10, "recall@100": rec100,
                     "lower_bound": {"recall@10": low10, "recall@100": low100},
                     "settings": {"leaves_to_search": int(probe), "neighbors_per_token": int(n),
                                  "fill_fraction": float(fill), "rerank_passages": int(depth)},
                     "per_query": (found10[:, j], found100[:, j] if depth >= self.full_depth else None)}
            if low10 >= t10 and low100 >= t100:
                self.feasible.append(point)
                if self.best is None or cost < self.best["cost"]:
                    self.best = point
                return  # deeper reranks of this (n, fill) only cost more
            shortfall = min(low10 - t10, low100 - t100)
            if self.best_effort is None or shortfall > self.best_effort[0] or (
                    shortfall == self.best_effort[0] and cost < self.best_effort[1]["cost"]):
                self.best_effort = (shortfall, point)


def _evaluate_probe(index, grid: _Grid, probe, queries, query_mask, estimates, rerank_s):
    """Evaluate every (neighbours, fill) worth trying at one probe, query chunk by query chunk.

    `estimates` maps (n, fill) to its first-stage seconds per query measured at an earlier probe; pairs
    that cannot beat the best point even so are skipped. Returns (scann seconds per query at the fewest
    neighbours, updated estimates, rerank seconds per candidate).
    """
    layout = index.layout
    best_cost = grid.best["cost"] if grid.best else np.inf
    floor = grid.depths[0] * (rerank_s or 0.0)
    pairs = [pf for pf in grid.pairs() if estimates.get(pf, 0.0) + floor < best_cost]
    found = {pf: ([], []) for pf in pairs}
    first_s = dict.fromkeys(pairs, 0.0)
    scann_s = dict.fromkeys(grid.neighbors, 0.0)  # ScaNN seconds per neighbour count, on the first chunk
    for chunk in query_chunks(query_mask, grid.neighbors[-1]):
        q, m = queries[chunk], query_mask[chunk]
        hits, seconds = _timed(index.token_hits, q, m, probe, grid.neighbors[-1])
        if chunk.start == 0:
            scann_s[grid.neighbors[-1]] = seconds
            for n in grid.neighbors[:-1]:
                scann_s[n] = _timed(index.token_hits, q, m, probe, n)[1]
        # One pass for all pairs. Each neighbour count is charged its own first stage, timed alone once
        # (on the first chunk of the first probe evaluated; the probe hardly changes it).
        results = index.merge_first_stage(m, hits, pairs, grid.depths[-1])
        for n, fill in pairs:
            if chunk.start == 0 and (n, fill) not in estimates:
                same_n = [v for (n2, _), v in first_s.items() if n2 == n and v > 0]
                first_s[(n, fill)] = same_n[0] if same_n else _timed(
                    index.merge_first_stage, m, hits, [(n, fill)], grid.depths[-1])[1]
            positions = [c for c, _ in results[(n, fill)]]
            if rerank_s is None:
                rerank_s = _rerank_seconds_per_candidate(index, q, m, positions, layout)
            for width, out in ((10, found[(n, fill)][0]), (TRUTH_K, found[(n, fill)][1])):
                out.append((_ranks(positions, grid.truth[chunk], width)[..., None] < np.asarray(grid.depths)).sum(1))
    first_chunk = query_chunks(query_mask, grid.neighbors[-1])[0]
    timed_queries = first_chunk.stop - first_chunk.start
    scann_s = dict(zip(scann_s, dist.allgather(np.array(list(scann_s.values())), layout).max(0) / timed_queries))
    scann_min = scann_s[grid.neighbors[0]]
    if not pairs:
        return scann_min, estimates, rerank_s
    stacked10 = dist.allgather(np.stack([np.concatenate(found[pf][0]) for pf in pairs]), layout).sum(0)
    stacked100 = dist.allgather(np.stack([np.concatenate(found[pf][1]) for pf in pairs]), layout).sum(0)
    times = dist.allgather(np.array([first_s[pf] / timed_queries if pf not in estimates else estimates[pf]
                                     for pf in pairs], np.float64), layout).max(0)
    for i, (n, fill) in enumerate(pairs):
        estimates = {**estimates, (n, fill): float(times[i])}
        grid.consider(probe, n, fill, scann_s[n] + times[i], rerank_s, stacked10[i], stacked100[i])
    return scann_min, estimates, rerank_s


def _search_probes(grid: _Grid, evaluate) -> None:
    """Probe counts in the order most likely to find the cheapest feasible one in few evaluations: start
    at ~1/64 of the partitions; while nothing reaches the targets, probe more (recall grows with the
    probe); then try fewer while that finds cheaper settings, and one more than the first that worked."""
    leaves = grid.leaves
    start = int(np.argmin([abs(l - grid.cfg.num_leaves / 64) for l in leaves]))
    done = set()

    def run(i):
        done.add(i)
        return evaluate(i)

    i = start
    run(i)
    while grid.best is None and i + 1 < len(leaves):
        i += 1
        run(i)
    if grid.best is None:
        return
    first_feasible = i
    j = min(start, first_feasible) - 1
    while j >= 0 and j not in done:
        improved, _ = run(j)
        if not improved:
            break
        j -= 1
    k = first_feasible + 1
    if k < len(leaves) and k not in done:
        _, scann_min = run(k)


def calibrate_index(index, queries=None, query_mask=None, progress: bool = False, **overrides) -> dict:
    """Choose the cheapest search settings reaching the config's recall targets against exact search, on `queries`
    (e.g. real ones) or on queries drawn from the corpus; sets `index.config` and `index.calibration` and returns
    the latter. Collective under `jax.distributed`."""
    t0 = time.perf_counter()
    config, report = calibrate(index, queries, query_mask, progress=progress, **overrides)
    report["seconds"] = time.perf_counter() - t0
    index.config, index.calibration = config, report
    return report


def calibrate(index, queries=None, query_mask=None, progress: bool = False, **overrides):
    """Choose the index's search settings (see the module docstring) -> (config, report)."""
    layout = index.layout
    previous = (index.calibration or {}).get("calibrated", [])  # chosen by an earlier calibration: free again
    cfg = dataclasses.replace(index.config, **{name: None for name in previous})
    if index.searcher is not None:
        cfg = dataclasses.replace(cfg, mode="scann")
    cfg = dataclasses.replace(cfg, **overrides)
    fixed = {name: getattr(cfg, name) for name in SEARCH_FIELDS if getattr(cfg, name) is not None}
    queries, query_mask, kinds = _prepare_queries(index, cfg, queries, query_mask)
    given = kinds is None
    # Compiled first: on a small corpus compilation is most of a cold search's time, and counted as search time it
    # made exact search look dearer than ScaNN's (the demo's 300 passages: 11.5 ms a query against 1.6).
    index.compile_exact(len(queries), queries.shape[1], TRUTH_K)
    (truth, _), exact_s = _timed(index.search_positions, queries, query_mask, TRUTH_K, False, True)
    exact_per_query = _global_max(exact_s, layout) / max(len(queries), 1)
    short = None  # the short queries, checked at the settings chosen only
    if not given and "short" in kinds:
        cut = kinds.index("short")
        short = (queries[cut:], query_mask[cut:], truth[cut:])
        queries, query_mask, truth, kinds = queries[:cut], query_mask[:cut], truth[:cut], kinds[:cut]
    num_queries = len(queries)

    grid = _Grid(index, cfg, fixed, truth)
    state = {"estimates": {}, "rerank_s": None}

    def evaluate(i: int) -> tuple[bool, float]:
        before = grid.best
        scann_min, state["estimates"], state["rerank_s"] = _evaluate_probe(
            index, grid, grid.leaves[i], queries, query_mask, state["estimates"], state["rerank_s"])
        return grid.best is not before, scann_min

    _search_probes(grid, evaluate)

    t10, t100 = cfg.target_recall_at_10, cfg.target_recall_at_100
    report = {"targets": {"recall@10": t10, "recall@100": t100}, "num_queries": num_queries,
              "queries": "given" if given else "drawn from the corpus", "source": "given" if given else "drawn",
              "mix": {"given": num_queries} if given else dict(collections.Counter(kinds)), "processes": layout.count,
              "calibrated": [n for n in SEARCH_FIELDS if n not in fixed], "grid_points": grid.points,
              "seconds_per_query": {"exact": exact_per_query}}
    best, mode = grid.best, "scann"
    if best is not None:
        best, report["verified"] = _fastest(index, sorted(grid.feasible, key=lambda p: p["cost"])[:VERIFIED],
                                            queries, query_mask)
    if best is not None and cfg.exact_if_cheaper and best["measured"] >= exact_per_query:
        best = None
        mode, note = "exact", "exact search is cheaper than every approximate setting reaching the targets"
    elif best is None and cfg.calibration_fallback == "exact":
        mode, note = "exact", "no approximate setting reached the targets: exact search chosen"
    elif best is None:
        best, note = grid.best_effort[1], "targets not reached: the settings with the highest recall are kept"
    else:
        note = "targets reached"
    if mode == "exact":
        report.update(mode="exact", reached=True, measured={"recall@10": 1.0, "recall@100": 1.0}, note=note,
                      uncertainty={"recall@10": 0.0, "recall@100": 0.0},
                      reported={"recall@10": 1.0, "recall@100": 1.0, "basis": "exact search"},
                      trust={"lower_bound": True, "note": "exact search: recall 1 on any query by construction"})
        return dataclasses.replace(cfg, mode="exact").with_default_search(int(index.offsets[-1])), report
    low = best["lower_bound"]
    reached = low["recall@10"] >= t10 and low["recall@100"] >= t100
    report.update(mode="scann", reached=bool(reached), note=note, settings=best["settings"],
                  measured={"recall@10": best["recall@10"], "recall@100": best["recall@100"]},
                  lower_bound={**low, "sigmas": cfg.calibration_sigmas})
    report.update(_spread(best["per_query"], grid, kinds))
    report["seconds_per_query"]["chosen"] = best.get("measured", best["cost"])
    report["reported"] = _reported(report)
    if short is not None:
        report["short_queries"] = _check_short(index, short, SearchSettings(**best["settings"]), cfg)
    report["trust"] = _trust(report, cfg)
    if not reached:
        warnings.warn(f"index calibration: {note} (recall@10 {best['recall@10']:.3f}, recall@100 "
                      f"{best['recall@100']:.3f}; targets {t10}, {t100})", stacklevel=3)
    elif not report["trust"]["lower_bound"]:
        warnings.warn(f"index calibration: {report['trust']['note']}", stacklevel=3)
    return dataclasses.replace(cfg, **best["settings"]), report


def _spread(per_query, grid: _Grid, kinds) -> dict:
    """The uncertainty of the chosen setting's recall (the standard error of its mean over the calibration queries)
    and, for drawn queries, its recall on each kind of query."""
    out = {"uncertainty": {}, "by_kind": {}}
    for key, found, valid in (("recall@10", per_query[0], grid.valid10), ("recall@100", per_query[1], grid.valid100)):
        if found is None:
            continue
        keep = valid > 0
        recall = found[keep] / valid[keep]
        out["uncertainty"][key] = float(recall.std(ddof=1) / np.sqrt(len(recall))) if len(recall) > 1 else 0.0
        for name in sorted(set(kinds or [])):
            of_kind = keep & (np.asarray(kinds) == name)
            entry = out["by_kind"].setdefault(name, {"queries": int(of_kind.sum())})
            entry[key] = float(found[of_kind].sum() / max(valid[of_kind].sum(), 1))
    if not out["by_kind"]:
        del out["by_kind"]
    return out


def _reported(report: dict) -> dict:
    """The recall the index stands behind: on given queries, their mean; on drawn ones, that of the hardest kind (the
    mix runs from easy to hard queries, and which kind is hardest depends on the corpus)."""
    if report["source"] == "given" or not report.get("by_kind"):
        return {**{k: float(report["measured"][k]) for k in ("recall@10", "recall@100")}, "basis": "the given queries"}
    out, basis = {}, {}
    for key in ("recall@10", "recall@100"):
        name = min(report["by_kind"], key=lambda n: report["by_kind"][n].get(key, 0.0))
        out[key], basis[key] = float(report["by_kind"][name].get(key, 0.0)), name
    return {**out, "basis": f"the hardest kind of drawn query ({basis['recall@10']} / {basis['recall@100']})"}


def _check_short(index, short, settings: SearchSettings, cfg) -> dict:
    """Recall of the chosen settings on the drawn short queries (collective)."""
    q, mask, truth = short
    found, _ = index.search_positions(q, mask, TRUTH_K, settings=settings)
    kept = mask.sum(1)
    out = {"queries": int(len(q)), "tokens": [int(kept.min()), int(kept.max())],
           "below_tokens": max(1, round(SHORT_BELOW * q.shape[1]))}
    reaches = True
    for k, target in ((10, cfg.target_recall_at_10), (TRUTH_K, cfg.target_recall_at_100)):
        valid = (truth[:, :k] >= 0).sum(1)
        hits = np.array([len(set(f[:k][f[:k] >= 0].tolist()) & set(t[:k][t[:k] >= 0].tolist()))
                         for f, t in zip(found, truth)])
        keep = valid > 0
        per_query = hits[keep] / valid[keep]
        out[f"recall@{k}"] = float(hits[keep].sum() / max(valid[keep].sum(), 1))
        out.setdefault("uncertainty", {})[f"recall@{k}"] = (
            float(per_query.std(ddof=1) / np.sqrt(len(per_query))) if len(per_query) > 1 else 0.0)
        reaches = reaches and out[f"recall@{k}"] >= target - TRUST_MARGIN
    out["reaches_targets"] = bool(reaches)
    return out


def _trust(report: dict, cfg) -> dict:
    """Whether the recall measured can be taken as a lower bound of what real queries get, and why.

    Given queries: for queries like them, within the uncertainty. Drawn ones: the recall reported is the hardest
    kind's, a lower bound of what real queries no harder than that kind get; but when a kind gets more than
    `TRUST_MARGIN` less than a target, the recall depends strongly on how hard a query is and real queries like that
    kind miss the targets: the report says so (and the build warns).
    """
    if report["source"] == "given":
        return {"lower_bound": True, "note": "measured on the given queries: it holds for queries like them, within "
                                             f"{cfg.calibration_sigmas:g} standard errors"}
    lagging = []
    for name, entry in report.get("by_kind", {}).items():
        for key, target in report["targets"].items():
            if key in entry and entry[key] < target - TRUST_MARGIN:
                lagging.append(f"{name} queries get {key} {entry[key]:.3f}")
    short = report.get("short_queries")
    short_note = "" if short is None else (
        f" Short queries ({short['tokens'][0]}-{short['tokens'][1]} tokens) get recall@10 {short['recall@10']:.3f}, "
        f"recall@100 {short['recall@100']:.3f}" + ("." if short["reaches_targets"] else
                                                    ": searching queries of fewer than "
                                                    f"{short['below_tokens']} tokens warns."))
    if lagging:
        return {"lower_bound": False, "note": (
            f"the recall of these settings depends on how hard a query is ({'; '.join(lagging)}; targets "
            f"{report['targets']['recall@10']} / {report['targets']['recall@100']}): real queries like those get less "
            "than the targets. Calibrate on real queries (python -m mire_jax.index calibrate INDEX --queries FILE), "
            "or let the server's audit measure live ones." + short_note)}
    return {"lower_bound": True, "note": (
        "drawn queries from easy to hard; the recall reported is the hardest kind's, a lower bound of what real "
        "queries of the calibration queries' length get when they are no harder than the hardest kind." + short_note)}


def _fastest(index, points: list[dict], queries, query_mask) -> tuple[dict, list[dict]]:
    """The point whose search (settings as chosen, top 100) is fastest on the calibration queries, after one
    untimed search of a few queries each (collective: every process times the same points in the same order).
    -> (that point with its measured seconds per query, [{settings, estimated, measured}] of every point)."""
    measured = []
    for point in points:
        settings = SearchSettings(**point["settings"])
        index.search_positions(queries[:2], query_mask[:2], TRUTH_K, settings=settings)
        _, seconds = _timed(index.search_positions, queries, query_mask, TRUTH_K, False, False, settings)
        measured.append({**point, "measured": _global_max(seconds, index.layout) / max(len(queries), 1)})
    best = min(measured, key=lambda p: p["measured"])
    return best, [{"settings": p["settings"], "estimated": p["cost"], "measured": p["measured"]} for p in measured]
