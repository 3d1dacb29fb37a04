"""The corpus-scale late-interaction index: ScaNN token candidates, then an exact MaxSim rerank.

The corpus is held as index shards (`mire_jax.index.index_shard`), each with its own ScaNN searcher and
its float16 tokens memory-mapped from disk. Search, per query:
1. In every shard, ScaNN (tree partitioning + asymmetric hashing) returns for every kept query token its
   `neighbors_per_token` nearest tokens with approximate scores, probing `leaves_to_search` partitions.
2. First-stage approximate MaxSim per passage (`IndexShard.first_stage`); the shards' candidates are
   merged by that score.
3. The `rerank_passages` best candidates are scored exactly (MaxSim over their float16 tokens); the top k
   are returned. Under `jax.distributed` each process does this over its own shards and the per-process
   top k are gathered and merged (`mire_jax.index.distributed`).

The search settings are chosen at build time by calibration (`mire_jax.index.calibrate`): the index
measures its recall against exact search and keeps the cheapest settings reaching the targets; what it
measured is saved with it (`index.calibration`). `mode="exact"` (or `search(..., exact=True)`) scores every
passage by brute force (`mire_jax.index.exact`), for small corpora and verification.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from mire_jax.index import distributed as dist
from mire_jax.index import exact as exact_lib
from mire_jax.index import rerank as rerank_lib
from mire_jax.index import storage
from mire_jax.index.config import IndexConfig, as_config, shard_probe
from mire_jax.index.index_shard import IndexFileError, IndexShard
from mire_jax.index.rerank import RowConcat

HITS_PER_CHUNK = 1 << 22  # retrieved (query token, corpus token) pairs per shard held at once

__all__ = ["IndexConfig", "IndexFileError", "LateInteractionIndex"]


def concat_offsets(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Token offsets of consecutive parts (each [n_i + 1], starting at 0) as one [sum n_i + 1] array."""
    out, base = [np.zeros(1, np.int64)], 0
    for offsets in parts:
        out.append(np.asarray(offsets[1:], np.int64) + base)
        base += int(offsets[-1])
    return np.concatenate(out)


def query_chunks(q_mask: np.ndarray, neighbors: int) -> list[slice]:
    """Consecutive query slices retrieving at most `HITS_PER_CHUNK` tokens per shard (bounded memory)."""
    kept = np.asarray(q_mask).reshape(len(q_mask), -1).sum(1)
    chunks, start, hits = [], 0, 0
    for b, tokens in enumerate(kept.tolist()):
        if b > start and hits + tokens * neighbors > HITS_PER_CHUNK:
            chunks.append(slice(start, b))
            start, hits = b, 0
        hits += tokens * neighbors
    chunks.append(slice(start, len(kept)))
    return chunks


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """The knobs of one approximate search (what calibration chooses)."""

    leaves_to_search: int
    neighbors_per_token: int
    fill_fraction: float
    rerank_passages: int

    @classmethod
    def of(cls, config: IndexConfig) -> "SearchSettings":
        return cls(int(config.leaves_to_search), int(config.neighbors_per_token), float(config.fill_fraction),
                   int(config.rerank_passages))


class LateInteractionIndex:
    """Top-k passages by MaxSim over a corpus of token embeddings.

    Build with `LateInteractionIndex.build(...)` (arrays) or `from_shards(...)` (an encoded corpus);
    persist with `save(dir)` and `LateInteractionIndex.load(dir)`.

    Attributes:
        shards: the index shards this process serves (all of them in a single process).
        ids: [N] every passage's id, in corpus order.
        offsets: [N + 1] global token offsets of every passage.
        config: the settings, search settings as calibrated.
        calibration: what calibration measured (None if it did not run); see `mire_jax.index.calibrate`.
        layout: this process's place among the processes serving the index.
    """

    def __init__(self, shards: Sequence[IndexShard], ids: Sequence, config: IndexConfig,
                 offsets: np.ndarray | None = None, calibration: dict | None = None,
                 layout: dist.ProcessLayout | None = None, build_info: dict | None = None, dim: int | None = None):
        self.shards = sorted(shards, key=lambda s: s.first_passage)
        self.dim = int(dim if dim is not None else self.shards[0].embeddings.shape[1])
        self.ids = list(ids)
        self.config = config
        self.calibration = calibration
        self.layout = layout or dist.ProcessLayout()
        self.build_info = dict(build_info or {})
        if offsets is None:
            offsets = concat_offsets([s.offsets for s in self.shards])
        self.offsets = np.asarray(offsets, np.int64)
        self._int_ids = all(isinstance(i, (int, np.integer)) for i in self.ids)
        self._id_table = None
        self._local = None

    # Construction ------------------------------------------------------------------------------------

    @classmethod
    def build(cls, embeddings: np.ndarray, lengths: Sequence[int], ids: Sequence,
              config: IndexConfig | dict | None = None, progress: bool = True,
              calibration_queries: tuple[np.ndarray, np.ndarray] | None = None) -> "LateInteractionIndex":
        """Index a corpus held in memory (as index shards of at most `config.shard_tokens` tokens), then
        calibrate the search settings against exact search.

        Args:
            embeddings: [total_tokens, dim] every passage's kept token embeddings (L2-normalised),
                concatenated in passage order; each shard keeps its slice as float16 until `save`.
            lengths: [N] tokens per passage.
            ids: [N] passage ids (ints or strings), returned by `search`.
            config: IndexConfig (or a dict of its fields).
            progress: show progress bars.
            calibration_queries: (query embeddings [Q, Nq, dim], mask [Q, Nq]) to calibrate on, e.g. real
                queries; None draws them from the corpus.
        """
        from mire_jax.index import sharded

        return sharded.build_in_memory(cls, embeddings, lengths, ids, as_config(config), progress,
                                       calibration_queries)

    @classmethod
    def from_shards(cls, shard_dir, config: IndexConfig | dict | None = None, verify: bool = True,
                    progress: bool = True, directory=None,
                    calibration_queries: tuple[np.ndarray, np.ndarray] | None = None) -> "LateInteractionIndex":
        """Index the encoded corpus of a shard directory (`mire_jax.index.shards`, e.g. written by
        eval/encode_corpus.py) one index shard at a time, never holding more than one shard as float32.

        With `directory`, every index shard is saved (and checksummed) there as soon as it is built and a
        repeated call resumes at the first missing shard; under `jax.distributed` each process builds its
        own shards. Without it the index is built in memory (the encoded shards stay memory-mapped).
        """
        from mire_jax.index import sharded

        return sharded.build_from_encoded(cls, shard_dir, as_config(config), verify=verify, progress=progress,
                                          directory=directory, calibration_queries=calibration_queries)

    # Persistence -------------------------------------------------------------------------------------

    def save(self, directory) -> None:
        """Write the index to `directory`: one folder per index shard, index.json, and manifest.json (sha256
        of every shard's shard.json and of index.json) written last. Needs every shard in this process."""
        storage.save_index(self, directory)

    @classmethod
    def load(cls, directory, verify: bool = True, distributed: bool | None = None) -> "LateInteractionIndex":
        """Open a saved index; the float16 embeddings stay on disk (memory-mapped).

        Under `jax.distributed` (unless `distributed=False`) each process opens only the shards it serves;
        `search` is then collective.

        Raises:
            IndexFileError: the manifest or a file it lists is missing or altered (names the file).
        """
        return storage.load_index(cls, directory, verify=verify, layout=dist.current_layout(distributed))

    # Views -------------------------------------------------------------------------------------------

    @property
    def num_passages(self) -> int:
        """Passages indexed."""
        return len(self.ids)

    @property
    def searcher(self):
        """The first shard's ScaNN searcher (None in exact mode)."""
        return self.shards[0].searcher if self.shards else None

    @property
    def embeddings(self):
        """Every local passage's float16 tokens as one array (a memory map, or a `RowConcat` of shards)."""
        return self._local_view()[0]

    def _local_view(self):
        """(embeddings, offsets, first positions, cumulative local passages) of this process's shards."""
        if self._local is None:
            parts = [s.embeddings for s in self.shards] or [np.zeros((0, self.dim), np.float16)]
            embeddings = parts[0] if len(parts) == 1 else RowConcat(parts)
            offsets = concat_offsets([s.offsets for s in self.shards])
            firsts = np.array([s.first_passage for s in self.shards], np.int64)
            local_first = np.concatenate([[0], np.cumsum([s.num_passages for s in self.shards])])
            self._local = (embeddings, offsets.astype(np.int64), firsts, local_first.astype(np.int64))
        return self._local

    def to_local(self, positions: np.ndarray) -> np.ndarray:
        """Global passage positions of this process's shards -> positions in its local view."""
        _, _, firsts, local_first = self._local_view()
        shard = np.searchsorted(firsts, positions, side="right") - 1
        return local_first[shard] + positions - firsts[shard]

    def to_global(self, local: np.ndarray) -> np.ndarray:
        """Positions in this process's local view -> global passage positions (-1 stays -1)."""
        _, _, firsts, local_first = self._local_view()
        shard = np.searchsorted(local_first, np.maximum(local, 0), side="right") - 1
        return np.where(local >= 0, firsts[shard] + local - local_first[shard], -1)

    # Search ------------------------------------------------------------------------------------------

    def search(self, query_embs: np.ndarray, query_mask: np.ndarray, k: int = 100, progress: bool = False,
               exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k passages of every query.

        Args:
            query_embs: [B, Nq, dim] query token embeddings (under `jax.distributed`: process 0's are
                searched; the others may pass None).
            query_mask: [B, Nq] bool, True on tokens that count.
            k: results per query.
            progress: show a progress bar over query batches.
            exact: exact MaxSim over every passage, whatever the index's mode.

        Returns:
            (ids [B, k], scores [B, k] float32), best first. ids hold the build ids (int64 array for integer
            ids, else an object array); rows with fewer than k passages are padded with -1 (integer ids) or
            None, and -inf scores.
        """
        positions, scores = self.search_positions(query_embs, query_mask, k, progress, exact=exact)
        if self._id_table is None:  # position -> id, with the padding value last (position -1)
            if self._int_ids:
                self._id_table = np.asarray(self.ids + [-1], np.int64)
            else:
                self._id_table = np.empty(len(self.ids) + 1, object)
                self._id_table[:-1] = self.ids
        return self._id_table[positions], scores

    def search_positions(self, query_embs: np.ndarray, query_mask: np.ndarray, k: int = 100,
                         progress: bool = False, exact: bool = False,
                         settings: SearchSettings | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Like `search`, returning passage positions (0..N-1, -1 padding) instead of ids.

        `settings` replaces the index's search settings for this call, and gives the approximate search even when
        the index's mode is exact (calibration uses it).
        """
        query_embs, query_mask, k, exact = dist.broadcast_queries(query_embs, query_mask, k, exact, self.layout)
        query_embs = np.asarray(query_embs, np.float32)
        query_mask = np.asarray(query_mask, bool)
        if query_embs.ndim != 3 or query_mask.shape != query_embs.shape[:2]:
            raise ValueError(f"query_embs must be [B, Nq, dim] with a [B, Nq] mask, got {query_embs.shape} "
                             f"and {query_mask.shape}")
        if query_embs.shape[2] != self.dim:
            raise ValueError(f"queries have dim {query_embs.shape[2]}, the index {self.dim}")
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        if exact or (self.config.mode == "exact" and settings is None) or self.searcher is None:
            positions, scores = exact_lib.exact_search_shards(
                self.shards, query_embs, query_mask, k, passages_per_block=self.config.exact_passages_per_block,
                progress=progress)
        else:
            settings = settings or SearchSettings.of(self.config)
            batch = self.config.query_batch
            positions = np.full((len(query_embs), k), -1, np.int64)
            scores = np.full((len(query_embs), k), -np.inf, np.float32)
            for start in tqdm(range(0, len(query_embs), batch), desc="search", unit="batch", disable=not progress):
                stop = start + batch
                positions[start:stop], scores[start:stop] = self._search_batch(
                    query_embs[start:stop], query_mask[start:stop], k, settings)
        return dist.gather_topk(positions, scores, k, self.layout)

    def _search_batch(self, q: np.ndarray, q_mask: np.ndarray, k: int,
                      settings: SearchSettings) -> tuple[np.ndarray, np.ndarray]:
        count = max(k, settings.rerank_passages)
        candidates = [pos for pos, _ in self.scored_candidates(q, q_mask, count, settings)]
        return self.rerank(q, q_mask, candidates, k)

    def token_hits(self, q: np.ndarray, q_mask: np.ndarray, leaves_to_search: int, neighbors: int) -> list:
        """Per local shard: (rows, token rows [R, n], approximate scores [R, n]) of the kept query tokens."""
        rows = np.nonzero(q_mask.reshape(-1))[0]
        tokens = q.reshape(-1, q.shape[-1])[rows]
        out = []
        for shard in self.shards:
            probe = shard_probe(leaves_to_search, shard.num_leaves, self.config.num_leaves)
            nn, sim = shard.token_hits(tokens, probe, min(neighbors, shard.num_tokens)) if len(rows) else (
                np.zeros((0, 0), np.int64), np.zeros((0, 0), np.float32))
            out.append((rows, nn, sim))
        return out

    def merge_first_stage(self, q_mask: np.ndarray, hits: list, settings: Sequence[tuple[int, float]],
                          count: int) -> dict:
        """The first stage over the local shards from their `token_hits`, for each (neighbours, fill) of
        `settings`: {setting: per query, (global positions, approximate scores) of the `count` best}."""
        num_queries, nq = q_mask.shape
        per_shard = [shard.first_stage(rows, num_queries, nq, nn, sim, settings, count)
                     for shard, (rows, nn, sim) in zip(self.shards, hits)]
        if not per_shard:  # a process serving no shard
            empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
            return {key: [empty] * num_queries for key in settings}
        if len(per_shard) == 1:
            return per_shard[0]
        out = {}
        for key in settings:
            merged = []
            for b in range(num_queries):
                pos = np.concatenate([part[key][b][0] for part in per_shard])
                sc = np.concatenate([part[key][b][1] for part in per_shard])
                top = np.argsort(-sc, kind="stable")[:count]
                merged.append((pos[top], sc[top]))
            out[key] = merged
        return out

    def scored_candidates(self, q: np.ndarray, q_mask: np.ndarray, count: int,
                          settings: SearchSettings | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The first stage: per query, up to `count` (global positions, approximate scores), best first."""
        settings = settings or SearchSettings.of(self.config)
        out = []
        for chunk in query_chunks(q_mask, settings.neighbors_per_token):
            hits = self.token_hits(q[chunk], q_mask[chunk], settings.leaves_to_search, settings.neighbors_per_token)
            key = (settings.neighbors_per_token, settings.fill_fraction)
            out += self.merge_first_stage(q_mask[chunk], hits, [key], count)[key]
        return out

    def candidates(self, q: np.ndarray, q_mask: np.ndarray, count: int) -> list[np.ndarray]:
        """The first stage: per query, up to `count` passage positions, best approximate score first."""
        return [pos for pos, _ in self.scored_candidates(np.asarray(q, np.float32), np.asarray(q_mask, bool), count)]

    def rerank(self, q: np.ndarray, q_mask: np.ndarray, candidates: Sequence[np.ndarray],
               k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact MaxSim of each query over its candidate passages (global positions of this process's
        shards); -> (positions [B, k], scores [B, k])."""
        embeddings, offsets, _, _ = self._local_view()
        local = [self.to_local(np.asarray(c, np.int64)) for c in candidates]
        pos, scores = rerank_lib.rerank(q, q_mask, local, k, embeddings, offsets)
        return self.to_global(pos), scores

    # Calibration -------------------------------------------------------------------------------------

    def calibrate(self, queries: np.ndarray | None = None, query_mask: np.ndarray | None = None,
                  progress: bool = False, **overrides) -> dict:
        """Choose the cheapest search settings reaching the config's recall targets against exact search,
        on `queries` (e.g. real ones) or on queries drawn from the corpus; sets `self.config` and
        `self.calibration` and returns the latter. Collective under `jax.distributed`."""
        from mire_jax.index import calibrate as calibrate_lib

        t0 = time.perf_counter()
        config, report = calibrate_lib.calibrate(self, queries, query_mask, progress=progress, **overrides)
        report["seconds"] = time.perf_counter() - t0
        self.config, self.calibration = config, report
        return report

    def measure_recall(self, queries: np.ndarray, query_mask: np.ndarray, ks: Sequence[int] = (10, 100)) -> dict:
        """Recall@k of this index's search against exact search on the given queries (collective)."""
        from mire_jax.index import calibrate as calibrate_lib

        return calibrate_lib.measure_recall(self, queries, query_mask, ks)
