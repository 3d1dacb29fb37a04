"""The corpus-scale late-interaction index: ScaNN token candidates, then an exact MaxSim rerank.

Search, per query:
1. ScaNN (tree partitioning + asymmetric hashing, no float reordering) returns, for every kept query
   token, its `neighbors_per_token` nearest corpus tokens with approximate scores.
2. First-stage approximate MaxSim: a candidate passage's score for a query token is the best approximate
   score among its retrieved tokens; a query token that retrieved none of the passage's tokens counts
   `fill_fraction` of its last retrieved score (the true value lies below that score). The sum over
   query tokens ranks the candidates.
3. The `rerank_passages` best candidates are scored exactly (MaxSim over their full float16 embeddings,
   read from a memory-mapped file after `save`/`load`); the top k are returned.

What stays in RAM is ScaNN's compressed index (AH codes and partition lists) plus per-passage offsets
and ids; the float16 embeddings are only read for the final candidates. `mode="exact"` scores every
passage (blocked brute force in JAX) and serves small corpora and verification.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import shutil
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mire_jax import files
from mire_jax.index import exact as exact_lib
from mire_jax.index import shards as shard_io
from mire_jax.scoring import MASKED_SCORE

FORMAT = "mire-jax-late-interaction-index"
VERSION = 1
INDEX_META = "index.json"
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
OFFSETS = "offsets.npy"
IDS = "ids.json"
SCANN_DIR = "scann"
TOKEN_BUCKET = 4096  # rerank blocks are padded to a multiple of this many token rows


class IndexFileError(ValueError):
    """A saved index file is missing or altered; the message names the file."""


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """Settings of a LateInteractionIndex; None fields are chosen from the corpus size by `resolve`.

    Attributes:
        mode: "scann", "exact", or "auto" (exact up to `exact_max_tokens` corpus tokens, else scann).
        exact_max_tokens: corpus size (tokens) up to which "auto" means exact search.
        num_leaves: ScaNN partitions (default ~1.6 sqrt(tokens), a power of two).
        leaves_to_search: partitions probed per query token (default 3% of the leaves, at least 8, and
            on small corpora enough to hold 8x neighbors_per_token tokens).
        dims_per_block: dimensions per asymmetric-hashing block (4 bits per block, so dim/dims_per_block/2
            bytes per token).
        anisotropic_threshold: ScaNN's anisotropic quantisation threshold for dot products.
        training_sample_size: tokens sampled to train partitions and codebooks (default 64 per leaf,
            at most 250k).
        soar_lambda: ScaNN SOAR spilling (each token indexed in a second partition), off when None.
        neighbors_per_token: corpus tokens retrieved per query token (default min(512, tokens)).
        fill_fraction: share of a query token's last retrieved score counted for a candidate passage none
            of whose tokens it retrieved.
        rerank_passages: candidates scored exactly per query (at least k).
        query_batch: queries searched together.
        training_threads: ScaNN build threads (0: all cores).
        exact_passages_per_block: passages per step of the exact search.
    """

    mode: str = "auto"
    exact_max_tokens: int = 50_000
    num_leaves: int | None = None
    leaves_to_search: int | None = None
    dims_per_block: int = 4
    anisotropic_threshold: float = 0.2
    training_sample_size: int | None = None
    soar_lambda: float | None = None
    neighbors_per_token: int | None = None
    fill_fraction: float = 0.5
    rerank_passages: int = 400
    query_batch: int = 64
    training_threads: int = 0
    exact_passages_per_block: int = 512

    def resolve(self, num_tokens: int) -> "IndexConfig":
        """A copy with every None replaced by its default for a corpus of `num_tokens` tokens."""
        if self.mode not in ("auto", "scann", "exact"):
            raise ValueError(f"IndexConfig.mode must be auto, scann or exact, not {self.mode!r}")
        mode = self.mode
        if mode == "auto":
            mode = "exact" if num_tokens <= self.exact_max_tokens else "scann"
        leaves = self.num_leaves
        if leaves is None:
            leaves = 2 ** round(math.log2(max(1.6 * math.sqrt(max(num_tokens, 1)), 1)))
            leaves = int(min(max(leaves, 16), 65536, max(num_tokens // 64, 1)))
        neighbors = self.neighbors_per_token or min(512, max(num_tokens, 1))
        probe = self.leaves_to_search
        if probe is None:
            # 3% of the partitions, and on small corpora enough of them to hold 8x the neighbours wanted.
            probe = max(8, math.ceil(0.03 * leaves), math.ceil(8 * neighbors * leaves / max(num_tokens, 1)))
        probe = int(min(probe, leaves))
        sample = self.training_sample_size or min(num_tokens, 64 * leaves, 250_000)
        return dataclasses.replace(self, mode=mode, num_leaves=leaves, leaves_to_search=probe,
                                   training_sample_size=int(sample), neighbors_per_token=int(neighbors))


def _as_config(config: IndexConfig | dict | None) -> IndexConfig:
    if config is None:
        return IndexConfig()
    if isinstance(config, dict):
        return IndexConfig(**config)
    return config


def _build_scann(embeddings: np.ndarray, cfg: IndexConfig, progress: bool):
    import scann

    data = np.empty(embeddings.shape, np.float32)
    step = 1 << 20
    for start in tqdm(range(0, len(embeddings), step), desc="index: float32 copy for ScaNN",
                      disable=not progress or len(embeddings) <= step):
        data[start:start + step] = embeddings[start:start + step]
    builder = scann.scann_ops_pybind.builder(data, 10, "dot_product")
    builder = builder.tree(num_leaves=cfg.num_leaves, num_leaves_to_search=cfg.leaves_to_search,
                           training_sample_size=cfg.training_sample_size, soar_lambda=cfg.soar_lambda)
    builder = builder.score_ah(cfg.dims_per_block, anisotropic_quantization_threshold=cfg.anisotropic_threshold,
                               training_sample_size=cfg.training_sample_size)
    builder.set_n_training_threads(cfg.training_threads)
    searcher = builder.build()
    del data
    return searcher


class LateInteractionIndex:
    """Top-k passages by MaxSim over a corpus of token embeddings.

    Build with `LateInteractionIndex.build(...)` or `from_shards(...)`; persist with `save(dir)` and
    `LateInteractionIndex.load(dir)`.
    """

    def __init__(self, embeddings: np.ndarray, offsets: np.ndarray, ids: Sequence, config: IndexConfig,
                 searcher=None):
        self.embeddings = embeddings
        self.offsets = np.asarray(offsets, np.int64)
        self.ids = list(ids)
        self.config = config
        self.searcher = searcher
        self._int_ids = all(isinstance(i, (int, np.integer)) for i in self.ids)
        self._id_table = None

    # Construction ------------------------------------------------------------------------------------

    @classmethod
    def build(cls, embeddings: np.ndarray, lengths: Sequence[int], ids: Sequence,
              config: IndexConfig | dict | None = None, progress: bool = True) -> "LateInteractionIndex":
        """Index a corpus.

        Args:
            embeddings: [total_tokens, dim] every passage's kept token embeddings (L2-normalised),
                concatenated in passage order; kept in RAM as float16 until `save`.
            lengths: [N] tokens per passage.
            ids: [N] passage ids (ints or strings), returned by `search`.
            config: IndexConfig (or a dict of its fields); None fields follow the corpus size.
            progress: show progress bars.
        """
        lengths = np.asarray(lengths, np.int64)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be [total_tokens, dim], got shape {embeddings.shape}")
        if len(lengths) != len(ids):
            raise ValueError(f"{len(lengths)} lengths but {len(ids)} ids")
        if (lengths < 0).any() or int(lengths.sum()) != embeddings.shape[0]:
            raise ValueError(f"lengths sum to {int(lengths.sum())} but embeddings has {embeddings.shape[0]} rows")
        ids = [i.item() if isinstance(i, np.generic) else i for i in ids]
        if len(set(ids)) != len(ids):
            raise ValueError("passage ids are not unique")
        cfg = _as_config(config).resolve(embeddings.shape[0])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        stored = np.asarray(embeddings, np.float16)
        searcher = None
        if cfg.mode == "scann":
            if embeddings.shape[0] < 2 * cfg.num_leaves:
                raise ValueError(f"{embeddings.shape[0]} tokens are too few for {cfg.num_leaves} ScaNN leaves")
            searcher = _build_scann(embeddings, cfg, progress)
        return cls(stored, offsets, ids, cfg, searcher)

    @classmethod
    def from_shards(cls, shard_dir: str | os.PathLike, config: IndexConfig | dict | None = None,
                    verify: bool = True, progress: bool = True) -> "LateInteractionIndex":
        """Index the encoded corpus of a shard directory (see `mire_jax.index.shards`)."""
        embeddings, lengths, ids = shard_io.read_corpus(shard_dir, verify=verify, progress=progress)
        return cls.build(embeddings, lengths, ids, config, progress=progress)

    # Persistence -------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Write the index to `directory` (its files plus a manifest of sha256 checksums, written last)."""
        out = pathlib.Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)
        np.save(out / EMBEDDINGS, np.asarray(self.embeddings, np.float16))
        np.save(out / OFFSETS, self.offsets)
        with open(out / IDS, "w") as f:
            json.dump(self.ids, f)
        if (out / SCANN_DIR).exists():
            shutil.rmtree(out / SCANN_DIR)
        if self.searcher is not None:
            (out / SCANN_DIR).mkdir()
            self.searcher.serialize(str(out / SCANN_DIR), relative_path=True)
        meta = {"format": FORMAT, "version": VERSION, "config": dataclasses.asdict(self.config),
                "num_passages": len(self.ids), "num_tokens": int(self.offsets[-1]),
                "dim": int(self.embeddings.shape[1])}
        with open(out / INDEX_META, "w") as f:
            json.dump(meta, f, indent=1)
        saved = [INDEX_META, EMBEDDINGS, OFFSETS, IDS]
        if self.searcher is not None:
            saved += [f"{SCANN_DIR}/{p.name}" for p in sorted((out / SCANN_DIR).iterdir())]
        manifest = {"format": FORMAT, "files": {
            name: {"sha256": shard_io.sha256_file(out / name), "bytes": (out / name).stat().st_size}
            for name in saved}}
        files.write_json(out / MANIFEST, manifest, indent=1)

    @classmethod
    def load(cls, directory: str | os.PathLike, verify: bool = True) -> "LateInteractionIndex":
        """Open a saved index; the float16 embeddings stay on disk (memory-mapped).

        Args:
            directory: what `save` wrote.
            verify: check every file's sha256 (sizes are always checked).

        Raises:
            IndexFileError: the manifest or a file it lists is missing or altered (names the file).
        """
        root = pathlib.Path(directory)
        manifest_path = root / MANIFEST
        if not manifest_path.exists():
            raise IndexFileError(f"{manifest_path}: missing (not a saved index, or its save did not finish)")
        with open(manifest_path) as f:
            manifest = json.load(f)
        if manifest.get("format") != FORMAT:
            raise IndexFileError(f"{manifest_path}: not a {FORMAT} manifest")
        for name, entry in manifest["files"].items():
            path = root / name
            if not path.exists():
                raise IndexFileError(f"{path}: missing")
            if path.stat().st_size != entry["bytes"]:
                raise IndexFileError(f"{path}: {path.stat().st_size} bytes, the manifest says {entry['bytes']}")
            if verify and shard_io.sha256_file(path) != entry["sha256"]:
                raise IndexFileError(f"{path}: sha256 differs from the manifest (altered)")
        with open(root / INDEX_META) as f:
            meta = json.load(f)
        config = IndexConfig(**meta["config"])
        embeddings = np.load(root / EMBEDDINGS, mmap_mode="r")
        offsets = np.load(root / OFFSETS)
        with open(root / IDS) as f:
            ids = json.load(f)
        searcher = None
        if config.mode == "scann":
            import scann
            searcher = scann.scann_ops_pybind.load_searcher(str(root / SCANN_DIR))
        return cls(embeddings, offsets, ids, config, searcher)

    # Search ------------------------------------------------------------------------------------------

    @property
    def num_passages(self) -> int:
        """Passages indexed."""
        return len(self.ids)

    def search(self, query_embs: np.ndarray, query_mask: np.ndarray, k: int = 100,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k passages of every query.

        Args:
            query_embs: [B, Nq, dim] query token embeddings.
            query_mask: [B, Nq] bool, True on tokens that count.
            k: results per query.
            progress: show a progress bar over query batches.

        Returns:
            (ids [B, k], scores [B, k] float32), best first. ids hold the build ids (int64 array for integer
            ids, else an object array); rows with fewer than k passages are padded with -1 (integer ids) or
            None, and -inf scores.
        """
        positions, scores = self.search_positions(query_embs, query_mask, k, progress)
        if self._id_table is None:  # position -> id, with the padding value last (position -1)
            if self._int_ids:
                self._id_table = np.asarray(self.ids + [-1], np.int64)
            else:
                self._id_table = np.empty(len(self.ids) + 1, object)
                self._id_table[:-1] = self.ids
        return self._id_table[positions], scores

    def search_positions(self, query_embs: np.ndarray, query_mask: np.ndarray, k: int = 100,
                         progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Like `search`, returning passage positions (0..N-1, -1 padding) instead of ids."""
        query_embs = np.asarray(query_embs, np.float32)
        query_mask = np.asarray(query_mask, bool)
        if query_embs.ndim != 3 or query_mask.shape != query_embs.shape[:2]:
            raise ValueError(f"query_embs must be [B, Nq, dim] with a [B, Nq] mask, got {query_embs.shape} "
                             f"and {query_mask.shape}")
        if query_embs.shape[2] != self.embeddings.shape[1]:
            raise ValueError(f"queries have dim {query_embs.shape[2]}, the index {self.embeddings.shape[1]}")
        if k < 1:
            raise ValueError(f"k must be positive, got {k}")
        if self.config.mode == "exact" or self.searcher is None:
            return exact_lib.exact_search(self.embeddings, self.offsets, query_embs, query_mask, k,
                                          passages_per_block=self.config.exact_passages_per_block,
                                          progress=progress)
        batch = self.config.query_batch
        ids_out = np.full((len(query_embs), k), -1, np.int64)
        scores_out = np.full((len(query_embs), k), -np.inf, np.float32)
        for start in tqdm(range(0, len(query_embs), batch), desc="search", unit="batch", disable=not progress):
            stop = start + batch
            ids_out[start:stop], scores_out[start:stop] = self._search_batch(
                query_embs[start:stop], query_mask[start:stop], k)
        return ids_out, scores_out

    def _search_batch(self, q: np.ndarray, q_mask: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        candidates = self.candidates(q, q_mask, max(k, self.config.rerank_passages))
        return self.rerank(q, q_mask, candidates, k)

    def candidates(self, q: np.ndarray, q_mask: np.ndarray, count: int) -> list[np.ndarray]:
        """The first stage: per query, up to `count` passage positions, best approximate score first."""
        cfg = self.config
        num_queries, nq = q_mask.shape
        n = np.int64(len(self.ids))
        rows = np.nonzero(q_mask.reshape(-1))[0]  # flat query-token rows b * nq + i that count
        if len(rows) == 0:
            return [np.zeros(0, np.int64) for _ in range(num_queries)]
        nn, sim = self.searcher.search_batched_parallel(
            q.reshape(-1, q.shape[-1])[rows], final_num_neighbors=cfg.neighbors_per_token,
            leaves_to_search=cfg.leaves_to_search)
        nn, sim = np.asarray(nn, np.int64), np.asarray(sim, np.float32)
        valid = ~np.isnan(sim)  # ScaNN pads short result lists with NaN
        last = np.where(valid.any(1), np.where(valid, sim, np.inf).min(1), 0.0)
        fill = np.zeros(num_queries * nq, np.float32)
        fill[rows] = np.minimum(last, cfg.fill_fraction * last)
        hit_row = np.broadcast_to(rows[:, None], nn.shape)[valid]
        hit_passage = np.searchsorted(self.offsets, nn[valid], side="right") - 1
        # One sort by (query, passage, query token): the best hit per query token, then the sum per passage.
        key = ((hit_row // nq) * n + hit_passage) * nq + hit_row % nq
        order = np.argsort(key)
        key, score = key[order], sim[valid][order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        key = key[starts]
        flat_row = (key // (n * nq)) * nq + key % nq
        gain = np.maximum(np.maximum.reduceat(score, starts) - fill[flat_row], 0.0)
        query_passage = key // nq
        groups = np.flatnonzero(np.r_[True, query_passage[1:] != query_passage[:-1]])
        query_passage = query_passage[groups]
        query = query_passage // n
        totals = np.add.reduceat(gain, groups) + fill.reshape(num_queries, nq).sum(1)[query]
        bounds = np.searchsorted(query, np.arange(num_queries + 1))
        out = []
        for b in range(num_queries):
            part = totals[bounds[b]:bounds[b + 1]]
            top = np.argpartition(-part, count - 1)[:count] if len(part) > count else np.arange(len(part))
            top = top[np.argsort(-part[top], kind="stable")]
            out.append(query_passage[bounds[b] + top] % n)
        return out

    def rerank(self, q: np.ndarray, q_mask: np.ndarray, candidates: Sequence[np.ndarray],
               k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact MaxSim of each query over its candidate passages; -> (positions [B, k], scores [B, k])."""
        ids_out = np.full((len(q), k), -1, np.int64)
        scores_out = np.full((len(q), k), -np.inf, np.float32)
        for b, cand in enumerate(candidates):
            if len(cand) == 0:
                continue
            cand = np.sort(cand)  # ascending offsets: sequential reads
            scores = exact_maxsim_flat(q[b] * q_mask[b][:, None], self.embeddings, self.offsets, cand)
            top = np.argsort(-scores, kind="stable")[:k]
            ids_out[b, :len(top)] = cand[top]
            scores_out[b, :len(top)] = scores[top]
        return ids_out, scores_out


@jax.jit
def _token_scores(q: jax.Array, tokens: jax.Array) -> jax.Array:
    """q [n, dim] float32 against stored tokens [T, dim] (float16): [n, T] float32 dot products."""
    return jnp.dot(q, tokens.astype(jnp.float32).T)


def exact_maxsim_flat(q: np.ndarray, embeddings: np.ndarray, offsets: np.ndarray,
                      passages: np.ndarray) -> np.ndarray:
    """Exact MaxSim of one query q [n, dim] (masked tokens zeroed) against the given passages -> [P] float32.

    The passages' tokens are gathered into one flat block (padded to a multiple of TOKEN_BUCKET rows, so
    few shapes are compiled) and scored in float32; passages without tokens score `MASKED_SCORE`
    per query token, as in the exact search.
    """
    starts, stops = offsets[passages], offsets[passages + 1]
    lengths = stops - starts
    nonempty = lengths > 0
    scores = np.full(len(passages), MASKED_SCORE * len(q), np.float32)
    if not nonempty.any():
        return scores
    starts, lengths = starts[nonempty], lengths[nonempty]
    seg = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    total = int(lengths.sum())
    rows = np.zeros(-(-total // TOKEN_BUCKET) * TOKEN_BUCKET, np.int64)  # padding rows read row 0
    rows[:total] = np.arange(total) - np.repeat(seg - starts, lengths)
    sim = np.asarray(_token_scores(np.asarray(q, np.float32), np.asarray(embeddings[rows])))[:, :total]
    scores[nonempty] = np.maximum.reduceat(sim, seg, axis=1).sum(axis=0)
    return scores
