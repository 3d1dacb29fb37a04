"""Exact late-interaction (MaxSim) search over stored tokens, on every local device of a mesh.

The tokens are read from `mire_jax.index.token_store` stores, whose layout is already the search's: passages grouped
by padded length, each group one contiguous [passages, length, width] array whose padding repeats a passage's own
first token (it can never change a maximum, so no mask is applied). `ExactSearcher` splits every group into blocks
of about `block_tokens` tokens, lays the blocks out over the devices of a one-axis mesh (`jax.shard_map`), and per
device scans its blocks: decode a block (the store's codec), one product of every query token against every token
of the block, the maximum per passage and query token, the sum over query tokens (MaxSim, the value of
`mire_jax.scoring.maxsim`), and a running top k. The per-device top k are merged into one on the device; the groups'
top k are merged as the groups go by; under `jax.distributed` each process searches the shards it serves
(`mire_jax.index.distributed`: shard g on process g % count) and the processes' top k are merged by the caller.

Every group is cut into pieces of at most `PIECE_BYTES` of codes (one compiled program per group's shape, a second
for its last piece). Pieces stay on the devices between searches while the searcher's pieces take at most
`resident_bytes` (a server's index); a larger corpus is copied piece by piece from the memory-mapped store at every
search, each piece once for all queries.

Per platform: on CPU a block is decoded to float32 and multiplied in float32, a few queries at a time so that each
similarity tile stays in cache (`CPU_TILE_ELEMENTS`); on accelerators quantised codes (small integers, exact in
bfloat16) are multiplied as bfloat16 against the query split into two bfloat16 halves (hi + lo, float32
accumulation): float32's accuracy at the bfloat16 rate; float16 stores are multiplied in float32 at full precision.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from mire_jax.index.distributed import merge_topk
from mire_jax.index.token_store import FLOAT32, Codec, TokenStore, codec_of, group_lengths
from mire_jax.scoring import MASKED_SCORE

CPU_BLOCK_TOKENS = 4096  # passage tokens per block on CPU (a similarity tile of 8 queries stays in cache)
ACCELERATOR_BLOCK_TOKENS = 32768
CPU_TILE_ELEMENTS = 1 << 18  # similarity values per product on CPU (a 1 MB tile)
PIECE_BYTES = 256 << 20  # codes per compiled piece of a group
CPU_RESIDENT_FRACTION = 0.25  # of the host's memory that a CPU searcher keeps resident by default
ACCELERATOR_RESIDENT_FRACTION = 0.75  # of the devices' memory
AXIS = "devices"

try:  # jax >= 0.6.1
    _shard_map = functools.partial(jax.shard_map, check_vma=False)
except AttributeError:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _legacy_shard_map
    _shard_map = functools.partial(_legacy_shard_map, check_rep=False)


def default_resident_bytes(devices: Sequence) -> int:
    """Bytes of pieces a searcher keeps on `devices` between searches by default: a quarter of the host's memory on
    CPU, three quarters of the devices' memory elsewhere."""
    if devices[0].platform == "cpu":
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * CPU_RESIDENT_FRACTION)
        except (ValueError, OSError, AttributeError):  # pragma: no cover
            return 4 << 30
    total = 0
    for device in devices:
        stats = device.memory_stats() or {}
        total += int(stats.get("bytes_limit", 16 << 30) - stats.get("bytes_in_use", 0))
    return int(total * ACCELERATOR_RESIDENT_FRACTION)


def fits_devices(num_rows: int, bytes_per_row: int, devices: Sequence | None = None) -> bool:
    """Whether a store of `num_rows` rows of `bytes_per_row` bytes fits the devices' default resident bytes."""
    devices = list(devices or jax.local_devices())
    return num_rows * bytes_per_row <= default_resident_bytes(devices)


@dataclasses.dataclass
class _Piece:
    """Consecutive blocks of one group, laid out for the mesh: [blocks, passages, length, width] codes."""

    length: int
    per_block: int
    codes: np.ndarray | jax.Array
    scales: np.ndarray | jax.Array | None
    ids: np.ndarray | jax.Array
    tokens: int  # real (unpadded) passage tokens
    resident: bool = False

    @property
    def nbytes(self) -> int:
        return int(self.codes.size * self.codes.dtype.itemsize
                   + (0 if self.scales is None else self.scales.size * 2) + self.ids.size * 4)


class ExactSearcher:
    """Top-k passages by exact MaxSim over token stores, on the local devices (see the module docstring).

    Args:
        stores: this process's stores (`TokenStore`), all of one codec and dimension.
        first_passages: the global position of each store's first passage (returned positions are global).
        devices: the mesh's devices (default: every local device).
        resident_bytes: most bytes of pieces kept on the devices between searches (None: `default_resident_bytes`).
        block_tokens: passage tokens per block (None: by platform).
    """

    def __init__(self, stores: Sequence[TokenStore], first_passages: Sequence[int], devices: Sequence | None = None,
                 resident_bytes: int | None = None, block_tokens: int | None = None):
        self.devices = list(devices or jax.local_devices())
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        self.platform = self.devices[0].platform
        self.stores = list(stores)
        codecs = {s.codec for s in self.stores}
        dims = {s.dim for s in self.stores}
        if len(codecs) > 1 or len(dims) > 1:
            raise ValueError(f"stores of different codecs or sizes cannot be searched together: {codecs}, {dims}")
        self.codec: Codec = codecs.pop() if codecs else FLOAT32
        self.dim = dims.pop() if dims else 0
        self.block_tokens = int(block_tokens or (CPU_BLOCK_TOKENS if self.platform == "cpu"
                                                 else ACCELERATOR_BLOCK_TOKENS))
        self.resident_bytes = default_resident_bytes(self.devices) if resident_bytes is None else int(resident_bytes)
        self.num_tokens = sum(s.shape[0] for s in self.stores)
        empty = [np.flatnonzero(s.layout.lengths == 0) + int(f) for s, f in zip(self.stores, first_passages)]
        self.empty = np.concatenate(empty).astype(np.int64) if empty else np.zeros(0, np.int64)
        self.pieces = self._plan(first_passages)
        self._keep_resident()

    # Layout ------------------------------------------------------------------------------------------

    def _plan(self, first_passages) -> list[_Piece]:
        """Every group of every store, cut into pieces of whole blocks laid out for the mesh (host arrays)."""
        groups: dict[int, list] = {}
        for store, first in zip(self.stores, first_passages):
            for bucket in store.layout.buckets:
                groups.setdefault(bucket.length, []).append((store, bucket, int(first)))
        n_dev = len(self.devices)
        pieces = []
        for length in sorted(groups):
            per_block = max(1, self.block_tokens // length)
            row_bytes = self.codec.bytes_per_token(self.dim)
            per_piece = max(per_block * n_dev, PIECE_BYTES // (row_bytes * length) // (per_block * n_dev)
                            * per_block * n_dev)  # passages per piece: whole blocks on every device
            parts = groups[length]
            total = sum(b.count for _, b, _ in parts)
            for start in range(0, total, per_piece):
                pieces.append(self._piece(parts, length, per_block, start, min(per_piece, total - start)))
        return pieces

    def _piece(self, parts, length: int, per_block: int, start: int, count: int) -> _Piece:
        """Passages start..start+count of a group (over its stores, in order), padded to whole blocks on every
        device with passages of id -1."""
        n_dev = len(self.devices)
        padded = -(-count // (per_block * n_dev)) * per_block * n_dev
        width = self.codec.width(self.dim)
        codes = np.zeros((padded, length, width), self.codec.dtype)
        scales = np.zeros((padded, length), np.float16) if self.codec.quantised else None
        ids = np.full(padded, -1, np.int32)
        row, seen, tokens = 0, 0, 0
        for store, bucket, first in parts:
            lo, hi = max(start - seen, 0), min(start + count - seen, bucket.count)
            seen += bucket.count
            if hi <= lo:
                continue
            c, s = store.bucket_arrays(bucket)
            codes[row:row + hi - lo] = c[lo:hi]
            if scales is not None:
                scales[row:row + hi - lo] = s[lo:hi]
            passages = store.layout.order[bucket.start + lo:bucket.start + hi]
            ids[row:row + hi - lo] = passages + first
            tokens += int(store.layout.lengths[passages].sum())
            row += hi - lo
        shape = (padded // per_block, per_block)
        return _Piece(length, per_block, codes.reshape(*shape, length, width),
                      None if scales is None else scales.reshape(*shape, length), ids.reshape(shape), tokens)

    def _keep_resident(self) -> None:
        """Put pieces on the devices, smallest first, while they fit `resident_bytes`; the others stay on the host
        (copied to the devices at each search)."""
        used = 0
        for piece in sorted(self.pieces, key=lambda p: p.nbytes):
            if used + piece.nbytes > self.resident_bytes:
                break
            self._to_devices(piece)
            used += piece.nbytes
        self.resident_bytes_used = used

    def _to_devices(self, piece: _Piece) -> None:
        sharding = NamedSharding(self.mesh, P(AXIS))
        piece.codes = jax.device_put(piece.codes, sharding)
        piece.scales = None if piece.scales is None else jax.device_put(piece.scales, sharding)
        piece.ids = jax.device_put(piece.ids, sharding)
        piece.resident = True

    def _device_arrays(self, piece: _Piece):
        if piece.resident:
            return piece.codes, piece.scales, piece.ids
        sharding = NamedSharding(self.mesh, P(AXIS))
        return (jax.device_put(piece.codes, sharding),
                None if piece.scales is None else jax.device_put(piece.scales, sharding),
                jax.device_put(piece.ids, sharding))

    @property
    def num_rows(self) -> int:
        """Padded passage rows over every piece (the work of one query)."""
        return int(sum(p.ids.size * p.length for p in self.pieces))

    def describe(self) -> dict:
        """Sizes of the searcher: devices, tokens, padded rows, pieces and what stays resident."""
        return {"devices": len(self.devices), "platform": self.platform, "codec": self.codec.name,
                "tokens": int(self.num_tokens), "rows_searched": self.num_rows, "pieces": len(self.pieces),
                "groups": len({p.length for p in self.pieces}), "block_tokens": self.block_tokens,
                "resident_pieces": sum(p.resident for p in self.pieces), "resident_bytes": self.resident_bytes_used}

    # Search ------------------------------------------------------------------------------------------

    def _query_tile(self, batch: int, query_len: int, piece: _Piece) -> int:
        if self.platform != "cpu":
            return batch
        per_query = query_len * piece.per_block * piece.length
        tile = 1 << max(0, int(math.floor(math.log2(max(1, CPU_TILE_ELEMENTS // max(per_query, 1))))))
        return int(min(batch, tile))

    def _executable(self, piece: _Piece, batch: int, query_len: int, k: int):
        """The compiled search of a piece's shape for a query batch (compiled once per shape, and kept: calling
        `jax.jit` after lowering it ahead of time would lower it again)."""
        tile = self._query_tile(batch, query_len, piece)
        key = (self.mesh, self.codec, self.dim, k, tile, self.platform, batch, query_len, piece.codes.shape)
        if key not in _EXECUTABLES:
            fn = _piece_program(self.mesh, self.codec, self.dim, k, tile, self.platform)
            split, whole = NamedSharding(self.mesh, P(AXIS)), NamedSharding(self.mesh, P())
            struct = jax.ShapeDtypeStruct
            scales = None if piece.scales is None else struct(piece.scales.shape, jnp.float16, sharding=split)
            _EXECUTABLES[key] = fn.lower(struct((batch, query_len, self.dim), jnp.float32, sharding=whole),
                                         struct(piece.codes.shape, piece.codes.dtype, sharding=split), scales,
                                         struct(piece.ids.shape, jnp.int32, sharding=split),
                                         struct((batch, k), jnp.float32, sharding=whole),
                                         struct((batch, k), jnp.int32, sharding=whole)).compile()
        return _EXECUTABLES[key]

    def _run(self, piece: _Piece, arrays, q, best, k: int):
        codes, scales, ids = arrays
        return self._executable(piece, q.shape[0], q.shape[1], k)(q, codes, scales, ids, *best)

    def search(self, queries: np.ndarray, query_mask: np.ndarray, k: int, *, query_batch: int = 64,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k passages of every query by exact MaxSim over the stores.

        Args:
            queries: [B, Nq, dim] query token embeddings.
            query_mask: [B, Nq] bool, True where a token counts.
            k: results per query.
            query_batch: queries scored together (fewer queries are padded to the next power of 4 only).
            progress: a progress bar over pieces.

        Returns:
            (global passage positions [B, k] int64, scores [B, k] float32), best first; -1 and -inf past the
            corpus's end. A passage without tokens scores `MASKED_SCORE` per query token.
        """
        queries = np.asarray(queries, np.float32)
        query_mask = np.asarray(query_mask, bool)
        num_queries, query_len = queries.shape[:2]
        batch = query_batch_size(num_queries, query_batch)
        q = np.zeros((-(-num_queries // batch) * batch,) + queries.shape[1:], np.float32)
        q[:num_queries] = queries * query_mask[..., None]
        replicated = NamedSharding(self.mesh, P())
        batches = [jax.device_put(q[s:s + batch], replicated) for s in range(0, len(q), batch)]
        kk = result_width(k)
        best = [(jax.device_put(np.full((batch, kk), -np.inf, np.float32), replicated),
                 jax.device_put(np.full((batch, kk), -1, np.int32), replicated)) for _ in batches]
        for piece in tqdm(self.pieces, desc="exact MaxSim", unit="piece", disable=not progress):
            arrays = self._device_arrays(piece)
            for i, qb in enumerate(batches):
                best[i] = self._run(piece, arrays, qb, best[i], kk)
            del arrays
        scores = np.concatenate([np.asarray(s) for s, _ in best])[:num_queries]
        positions = np.concatenate([np.asarray(i) for _, i in best])[:num_queries].astype(np.int64)
        if len(self.empty):  # passages without tokens: a constant score, merged on the host
            fill = np.full((num_queries, min(kk, len(self.empty))), MASKED_SCORE * query_len, np.float32)
            empty = np.broadcast_to(self.empty[:fill.shape[1]], fill.shape)
            positions, scores = merge_topk(np.stack([positions, _pad(empty, kk, -1)]),
                                           np.stack([scores, _pad(fill, kk, -np.inf)]), kk)
        positions[~np.isfinite(scores)] = -1
        return positions[:, :k], scores[:, :k]

    def compile(self, num_queries: int, query_len: int, k: int, query_batch: int = 64) -> None:
        """Compile every program `search` runs for these queries, on zero queries, so that a timed search measures
        search, not compilation (pieces are not copied: the programs are lowered from their shapes)."""
        batch = query_batch_size(num_queries, query_batch)
        for piece in self.pieces:
            self._executable(piece, batch, query_len, result_width(k))


def query_batch_size(num_queries: int, query_batch: int) -> int:
    """Queries per compiled search: `query_batch`, or for fewer queries the next power of 4 (a server's single
    queries cost one query's work; few compiled shapes)."""
    return int(max(1, min(query_batch, 4 ** math.ceil(math.log(max(num_queries, 1), 4)))))


def result_width(k: int) -> int:
    """Results kept per query on the devices: k rounded up to a power of two, at least 16 (few compiled shapes)."""
    return int(max(16, 1 << max(int(k) - 1, 0).bit_length()))


def _pad(array: np.ndarray, width: int, value) -> np.ndarray:
    if array.shape[1] >= width:
        return array
    return np.pad(array, ((0, 0), (0, width - array.shape[1])), constant_values=value)


def _block_scores(q, codes, scales, codec: Codec, dim: int, query_tile: int, platform: str):
    """MaxSim of every query [B, Nq, dim] against every passage of a block (codes [P, L, width]) -> [B, P]."""
    batch, nq, _ = q.shape
    per_block, length = codes.shape[:2]
    if platform == "cpu" or not codec.quantised:
        tokens = codec.decode_jax(codes, scales, dim).reshape(per_block * length, dim)

        def tile(qt):
            precision = None if platform == "cpu" else jax.lax.Precision.HIGHEST
            sim = jnp.dot(qt.reshape(-1, dim), tokens.T, precision=precision)
            return sim.reshape(qt.shape[0], nq, per_block, length).max(-1).sum(1)
    else:  # integer codes are exact in bfloat16; the query as hi + lo bfloat16 halves
        values = codec.decode_jax(codes, jnp.ones(codes.shape[:2], jnp.float32), dim, jnp.bfloat16)
        values = values.reshape(per_block * length, dim)
        row_scale = scales.reshape(-1).astype(jnp.float32)

        def tile(qt):
            flat = qt.reshape(-1, dim)
            hi = flat.astype(jnp.bfloat16)
            lo = (flat - hi.astype(jnp.float32)).astype(jnp.bfloat16)
            sim = (jnp.dot(hi, values.T, preferred_element_type=jnp.float32)
                   + jnp.dot(lo, values.T, preferred_element_type=jnp.float32)) * row_scale
            return sim.reshape(qt.shape[0], nq, per_block, length).max(-1).sum(1)
    if query_tile >= batch:
        return tile(q)
    tiles = jax.lax.map(tile, q.reshape(batch // query_tile, query_tile, nq, dim))
    return tiles.reshape(batch, per_block)


def _merge(best_scores, best_ids, scores, ids, k: int):
    """The top k of a running best [B, k] and new candidates [B, n] (ties keep the running best first)."""
    all_scores = jnp.concatenate([best_scores, scores], axis=1)
    all_ids = jnp.concatenate([best_ids, jnp.broadcast_to(ids, scores.shape)], axis=1)
    top, pos = jax.lax.top_k(all_scores, k)
    return top, jnp.take_along_axis(all_ids, pos, axis=1)


_EXECUTABLES: dict = {}  # compiled piece searches, by mesh, codec, sizes and shapes


@functools.lru_cache(maxsize=None)
def _piece_program(mesh: Mesh, codec: Codec, dim: int, k: int, query_tile: int, platform: str):
    """The jitted search of one piece: per device a scan over its blocks with a running top k, then one merge of
    the devices' top k into the running best."""
    quantised = codec.quantised

    def local(q, codes, *rest):
        scales, ids = rest if quantised else (None, rest[0])
        batch = q.shape[0]
        init = (jnp.full((batch, k), -jnp.inf, jnp.float32), jnp.full((batch, k), -1, jnp.int32))

        def step(carry, block):
            c, s, i = block
            scores = _block_scores(q, c, s, codec, dim, query_tile, platform)
            scores = jnp.where(i[None, :] >= 0, scores, -jnp.inf)
            return _merge(*carry, scores, i[None, :], k), None

        (top, top_ids), _ = jax.lax.scan(step, init, (codes, scales, ids))
        return top[None], top_ids[None]

    spec = P(AXIS)
    in_specs = (P(), spec, spec, spec) if quantised else (P(), spec, spec)
    sharded = _shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=(spec, spec))

    whole = NamedSharding(mesh, P())

    @functools.partial(jax.jit, out_shardings=(whole, whole))
    def run(q, codes, scales, ids, best_scores, best_ids):
        args = (q, codes, scales, ids) if quantised else (q, codes, ids)
        top, top_ids = sharded(*args)  # [devices, B, k]
        batch = q.shape[0]
        top = jnp.moveaxis(top, 0, 1).reshape(batch, -1)
        top_ids = jnp.moveaxis(top_ids, 0, 1).reshape(batch, -1)
        return _merge(best_scores, best_ids, top, top_ids, k)

    return run


def exact_search(embeddings: np.ndarray, offsets: np.ndarray, queries: np.ndarray, query_mask: np.ndarray, k: int,
                 *, query_batch: int = 64, progress: bool = True, devices: Sequence | None = None,
                 **unused) -> tuple[np.ndarray, np.ndarray]:
    """Top-k passages of every query by exact MaxSim over a corpus given as an array of its tokens.

    Args:
        embeddings: [total_tokens, dim] every passage's tokens, concatenated in passage order (float16 arrays are
            searched as float16 values, any other float dtype as float32).
        offsets: [N + 1] token offsets of the passages.
        queries: [B, Nq, dim] query token embeddings.
        query_mask: [B, Nq] bool.
        k: results per query (at most N; fewer passages give -1 ids with -inf scores).
        query_batch: queries scored together.
        progress: show a progress bar.
        devices: the devices to spread the corpus over (default: every local device).

    Returns:
        (passage indices [B, k] int64, scores [B, k] float32), best first.
    """
    offsets = np.asarray(offsets, np.int64)
    codec = codec_of("float16") if np.asarray(embeddings[:0]).dtype == np.float16 else FLOAT32
    store = TokenStore.encode(embeddings, np.diff(offsets), codec)
    searcher = ExactSearcher([store], [0], devices=devices)
    return searcher.search(queries, query_mask, k, query_batch=query_batch, progress=progress)


CODEC_SAMPLE_PASSAGES = 2000  # passages of the corpus the codec check searches
CODEC_CHECK_QUERIES = 96
CODEC_RECALL = {"recall@10": 0.99, "recall@100": 0.98}  # on hard drawn queries; the generated ones lose a third


def choose_codec(embeddings, offsets: np.ndarray, queries: np.ndarray | None = None,
                 query_mask: np.ndarray | None = None, *, candidates: Sequence[str] = ("int8",),
                 fallback: str = "float16", seed: int = 0) -> tuple[str, dict]:
    """The first of `candidates` whose exact search returns the float32 exact search's top 10 and top 100 (recall
    at least `CODEC_RECALL`) on a sample of the corpus, else `fallback`: -> (codec name, what was measured).

    A sample of `CODEC_SAMPLE_PASSAGES` passages is searched with `queries` (e.g. the calibration queries) or, without
    them, with `CODEC_CHECK_QUERIES` queries drawn from it (half of a query's 32 tokens from a source passage, the
    rest random tokens of the sample, all perturbed by Gaussian noise of a norm drawn in [0.3, 0.9]). Quantised
    tokens lose little where passages' scores are well apart and much where they crowd together: on these queries
    int8 keeps 99.2-99.4% of the top 10 of the synthetic corpora (99.6-99.9% on their own generated queries) and 98%
    of a tiny random model's 16-d tokens (97% on its own queries), where float16 is kept.
    """
    offsets = np.asarray(offsets, np.int64)
    rng = np.random.default_rng(seed)
    lengths_all = np.diff(offsets)
    nonempty = np.flatnonzero(lengths_all > 0)
    report = {"thresholds": dict(CODEC_RECALL), "candidates": list(candidates), "fallback": fallback}
    if len(nonempty) == 0:
        return candidates[0], {**report, "chosen": candidates[0], "note": "no tokens to measure on"}
    passages = np.sort(rng.choice(nonempty, min(len(nonempty), CODEC_SAMPLE_PASSAGES), replace=False))
    lengths = lengths_all[passages]
    rows = np.concatenate([np.arange(offsets[p], offsets[p + 1]) for p in passages])
    sample = np.asarray(embeddings[rows], np.float32)
    local = np.concatenate([[0], np.cumsum(lengths)])
    if queries is None:
        queries, query_mask = _draw_check_queries(sample, local, rng)
        source = "drawn from the sample"
    else:
        queries = np.asarray(queries, np.float32)[:CODEC_CHECK_QUERIES]
        query_mask = np.asarray(query_mask, bool)[:CODEC_CHECK_QUERIES]
        source = "given"
    groups = group_lengths(lengths, 4)  # few compiled programs: the sample is small
    truth = ExactSearcher([TokenStore.encode(sample, lengths, FLOAT32, groups)], [0]).search(queries, query_mask,
                                                                                             100)[0]
    report.update(sample_passages=int(len(passages)), queries=int(len(queries)), query_source=source, measured={})
    for name in candidates:
        codec = codec_of(name)
        codes, scales = codec.encode(sample)  # searched as float32 values: the truth's compiled programs serve
        decoded = codec.decode(codes, scales, sample.shape[1])
        found = ExactSearcher([TokenStore.encode(decoded, lengths, FLOAT32, groups)], [0]).search(
            queries, query_mask, 100)[0]
        recall = {f"recall@{k}": _recall(found, truth, k) for k in (10, 100)}
        report["measured"][name] = recall
        if all(recall[key] >= CODEC_RECALL[key] for key in CODEC_RECALL):
            return name, {**report, "chosen": name}
    return fallback, {**report, "chosen": fallback}


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = [len(set(f[:k][f[:k] >= 0].tolist()) & set(t[:k][t[:k] >= 0].tolist())) for f, t in zip(found, truth)]
    valid = [int((t[:k] >= 0).sum()) for t in truth]
    return float(sum(hits) / max(sum(valid), 1))


def _draw_check_queries(sample: np.ndarray, offsets: np.ndarray, rng, tokens: int = 32):
    """Queries for `choose_codec`: half of each from a source passage of the sample, the rest random tokens."""
    dim = sample.shape[1]
    lengths = np.diff(offsets)
    q = np.zeros((CODEC_CHECK_QUERIES, tokens, dim), np.float32)
    mask = np.zeros((CODEC_CHECK_QUERIES, tokens), bool)
    for b, source in enumerate(rng.integers(0, len(lengths), CODEC_CHECK_QUERIES)):
        n = int(rng.integers(tokens * 3 // 4, tokens + 1))
        own = n // 2
        rows = np.concatenate([offsets[source] + rng.integers(0, lengths[source], own),
                               rng.integers(0, offsets[-1], n - own)])
        x = sample[rows] + rng.standard_normal((n, dim)).astype(np.float32) * (rng.uniform(0.3, 0.9) / np.sqrt(dim))
        q[b, :n] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        mask[b, :n] = True
    return q, mask
