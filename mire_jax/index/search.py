"""An opened late-interaction index and its search: ScaNN token candidates, then an exact MaxSim rerank.

The corpus is held as index shards (`mire_jax.index.index_shard`), each with its own ScaNN searcher and
its stored tokens (`mire_jax.index.token_store`: int8 codes with a per-token scale by default) memory-mapped from
disk. Search, per query:
1. In every shard, ScaNN (tree partitioning + asymmetric hashing) returns for every kept query token its
   `neighbors_per_token` nearest tokens with approximate scores, probing `leaves_to_search` partitions.
2. First-stage approximate MaxSim per passage (`IndexShard.first_stage`); the shards' candidates are
   merged by that score.
3. The `rerank_passages` best candidates are scored exactly (MaxSim over their stored tokens); the top k
   are returned. Under `jax.distributed` each process does this over its own shards and the per-process
   top k are gathered and merged (`mire_jax.index.distributed`).

`mode="exact"` (or `search(..., exact=True)`) scores every passage by brute force over the stored tokens, spread
over this process's devices (`mire_jax.index.exact.ExactSearcher`). "Exact" means MaxSim over the stored tokens:
the rerank and the exact search score the same values.
Building and calibration sit above this module (`build`, `calibrate`); `LateInteractionIndex`
(`late_interaction`) is this class with them.

A saved index is a folder:

    index/shard_000000/...   one index shard (`mire_jax.index.index_shard`: data, searcher, shard.json)
    index/index.json         format, version, settings (search settings as calibrated), calibration report,
                             counts, the shards (name, passages, tokens, first passage), build timings
    index/manifest.json      sha256 and size of index.json and of every shard's shard.json, written last:
                             an index without it is unfinished
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import warnings
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from mire_jax.index import distributed as dist
from mire_jax.index import exact as exact_lib
from mire_jax.index import rerank as rerank_lib
from mire_jax.index import storage
from mire_jax.index.config import IndexConfig, shard_probe
from mire_jax.index.index_shard import SHARD_META, IndexShard
from mire_jax.index.storage import IndexFileError, IndexFormatError
from mire_jax.index.tokens import LocalView, concat_offsets

HITS_PER_CHUNK = 1 << 22  # retrieved (query token, corpus token) pairs per shard held at once

FORMAT = "mire-jax-late-interaction-index"
VERSION = 3  # 3: stored tokens (token_store) replace the float16 embeddings.npy
INDEX_META = "index.json"
MANIFEST = storage.MANIFEST
# Settings fixed when an index is built (a recalibration may change only the search settings and the mode).
BUILD_SETTINGS = ("num_leaves", "dims_per_block", "anisotropic_threshold", "spherical", "training_sample_size",
                  "soar_lambda", "shard_tokens")


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


class SearchableIndex:
    """Top-k passages by MaxSim over a corpus of token embeddings, as built (`mire_jax.index.build`) or opened
    from disk (`load`); `LateInteractionIndex` adds building and calibration.

    Attributes:
        shards: the index shards this process serves (all of them in a single process).
        ids: [N] every passage's id, in corpus order.
        offsets: [N + 1] global token offsets of every passage.
        config: the settings, search settings as calibrated.
        calibration: what calibration measured (None if it did not run); see `mire_jax.index.calibrate`.
        layout: this process's place among the processes serving the index.
        build_info: counts and timings of the build.
        encoding: how the corpus was encoded (model fingerprint, passage settings), saved with the index.
    """

    def __init__(self, shards: Sequence[IndexShard], ids: Sequence, config: IndexConfig,
                 offsets: np.ndarray | None = None, calibration: dict | None = None,
                 layout: dist.ProcessLayout | None = None, build_info: dict | None = None, dim: int | None = None,
                 encoding: dict | None = None):
        self.shards = sorted(shards, key=lambda s: s.first_passage)
        self.dim = int(dim if dim is not None else self.shards[0].store.dim)
        self.ids = list(ids)
        self.config = config
        self.calibration = calibration
        self.layout = layout or dist.ProcessLayout()
        self.build_info = dict(build_info or {})
        self.encoding = dict(encoding or {})
        if offsets is None:
            offsets = concat_offsets([s.offsets for s in self.shards])
        self.offsets = np.asarray(offsets, np.int64)
        self._int_ids = all(isinstance(i, (int, np.integer)) for i in self.ids)
        self._id_table = None
        self._local = None
        self._exact = None
        self._short_warned = False

    # Persistence -------------------------------------------------------------------------------------

    def save(self, directory) -> None:
        """Write the index to `directory`: one folder per index shard, index.json, and manifest.json (sha256
        of every shard's shard.json and of index.json) written last. Needs every shard in this process."""
        root = pathlib.Path(directory)
        if len(self.shards) == 0 or sum(s.num_passages for s in self.shards) != self.num_passages:
            raise ValueError("save needs every shard of the index in this process (save a distributed index "
                             "from the directory its build wrote)")
        root.mkdir(parents=True, exist_ok=True)
        (root / MANIFEST).unlink(missing_ok=True)
        metas = []
        for shard in self.shards:
            ids = self.ids[shard.first_passage:shard.first_passage + shard.num_passages]
            folder = getattr(shard, "folder", None)
            if folder is not None and pathlib.Path(folder).resolve() == (root / shard.name).resolve():
                metas.append(IndexShard.read_meta(root / shard.name))
            else:
                metas.append(storage.write_folder(root, shard.name,
                                                  lambda out, s=shard, i=ids: s.save(out, i, getattr(s, "extra", None)),
                                                  replace=True))
        keep = {m["name"] for m in metas}
        for child in root.iterdir():  # shards of an earlier, larger index saved here
            if child.is_dir() and child.name.startswith("shard_") and child.name not in keep:
                shutil.rmtree(child)
        write_index_root(root, self.config, self.calibration, metas, self.build_info, self.encoding)

    @classmethod
    def load(cls, directory, verify: bool = True, distributed: bool | None = None):
        """Open a saved index; the stored tokens stay on disk (memory-mapped).

        Under `jax.distributed` (unless `distributed=False`) each process opens only the shards it serves;
        `search` is then collective.

        Raises:
            IndexFileError: the manifest or a file it lists is missing or altered (names the file).
        """
        root = pathlib.Path(directory)
        layout = dist.current_layout(distributed)
        manifest = storage.read_meta(root / MANIFEST, IndexFileError)
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise IndexFormatError(f"{root / MANIFEST}: not a {FORMAT} manifest of version {VERSION} (found "
                                 f"{manifest.get('format')!r} version {manifest.get('version')!r}): build the "
                                 "index again")
        manifest = storage.read_manifest(root, INDEX_META, verify)  # the one index.json agrees with (recalibration)
        entries = manifest["files"]
        meta = storage.read_meta(root / INDEX_META, IndexFileError)
        names = [info["name"] for info in meta["shards"]]
        for name in names:
            if f"{name}/{SHARD_META}" not in entries:
                raise IndexFileError(f"{root / MANIFEST}: does not list {name}/{SHARD_META}")
            storage.check_file(root / name / SHARD_META, entries[f"{name}/{SHARD_META}"], verify)
        return cls.open_shards(root, names, IndexConfig(**meta["config"]), layout, verify=verify, dim=meta["dim"],
                               calibration=meta.get("calibration"), build_info=meta.get("build"),
                               encoding=meta.get("encoding"))

    @classmethod
    def open_shards(cls, root: pathlib.Path, names: Sequence[str], config: IndexConfig,
                    layout: dist.ProcessLayout, *, verify: bool, dim: int, **fields):
        """The index over the saved shard folders `names` of `root`: this process's opened, the others' counted."""
        shards, ids, offsets = [], [], []
        for number, name in enumerate(names):
            own = layout.owns(number)
            shard, shard_ids, _ = IndexShard.load(root / name, verify=verify, open_data=own)
            shard.folder = str(root / name)
            if own:
                shards.append(shard)
            ids.extend(shard_ids)
            offsets.append(shard.offsets)
        return cls(shards, ids, config, offsets=concat_offsets(offsets), layout=layout, dim=dim, **fields)

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
        """Every local passage's tokens as one [tokens, dim] float32 array view, decoded from the stored tokens as
        read (a shard's `TokenStore`, or a `RowConcat` of them)."""
        return self.local_view().embeddings

    def exact_searcher(self) -> exact_lib.ExactSearcher:
        """The exact search over this process's shards and devices (made on first use; its pieces stay on the
        devices up to `IndexConfig.exact_resident_bytes`)."""
        if self._exact is None:
            self._exact = exact_lib.ExactSearcher([s.store for s in self.shards], [s.first_passage for s in self.shards],
                                                  resident_bytes=self.config.exact_resident_bytes)
        return self._exact

    def compile_exact(self, num_queries: int, query_len: int, k: int) -> None:
        """Compile the programs an exact search of `num_queries` queries of `query_len` tokens runs (timed
        searches then measure search, not compilation)."""
        self.exact_searcher().compile(num_queries, query_len, k, query_batch=self.config.query_batch)

    def local_view(self) -> LocalView:
        """The passages of this process's shards as one corpus of local positions (`mire_jax.index.tokens`)."""
        if self._local is None:
            self._local = LocalView.of(self.shards, self.dim)
        return self._local

    def to_local(self, positions: np.ndarray) -> np.ndarray:
        """Global passage positions of this process's shards -> positions in its local view."""
        return self.local_view().to_local(positions)

    def to_global(self, local: np.ndarray) -> np.ndarray:
        """Positions in this process's local view -> global passage positions (-1 stays -1)."""
        return self.local_view().to_global(local)

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
            positions, scores = self.exact_searcher().search(query_embs, query_mask, k,
                                                             query_batch=self.config.query_batch, progress=progress)
        else:
            if settings is None:
                self._warn_if_short(query_mask)
            settings = settings or SearchSettings.of(self.config)
            batch = self.config.query_batch
            positions = np.full((len(query_embs), k), -1, np.int64)
            scores = np.full((len(query_embs), k), -np.inf, np.float32)
            for start in tqdm(range(0, len(query_embs), batch), desc="search", unit="batch", disable=not progress):
                stop = start + batch
                positions[start:stop], scores[start:stop] = self._search_batch(
                    query_embs[start:stop], query_mask[start:stop], k, settings)
        return dist.gather_topk(positions, scores, k, self.layout)

    def _warn_if_short(self, query_mask: np.ndarray) -> None:
        """Warn (once) when queries shorter than calibration's are searched and calibration found such short queries
        below the recall targets (`mire_jax.index.calibrate`: its "short_queries" record)."""
        short = (self.calibration or {}).get("short_queries")
        if self._short_warned or not short or short.get("reaches_targets", True) or self.layout.index != 0:
            return
        kept = query_mask.reshape(len(query_mask), -1).sum(1)
        count = int((kept < short["below_tokens"]).sum())
        if count:
            self._short_warned = True
            warnings.warn(
                f"{count} of {len(kept)} queries have fewer than {short['below_tokens']} tokens: on short queries "
                f"({short['tokens'][0]}-{short['tokens'][1]} tokens) calibration measured recall@10 "
                f"{short['recall@10']:.3f} and recall@100 {short['recall@100']:.3f} at these settings, below the "
                f"index's targets ({self.config.target_recall_at_10}, {self.config.target_recall_at_100}). Calibrate "
                "it on real queries (python -m mire_jax.index calibrate INDEX --queries FILE) or search exactly",
                stacklevel=3)

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
        view = self.local_view()
        local = [view.to_local(np.asarray(c, np.int64)) for c in candidates]
        pos, scores = rerank_lib.rerank(q, q_mask, local, k, view)
        return self.to_global(pos), scores

    def save_calibration(self, directory) -> None:
        """Replace the search settings and calibration record of the index saved in `directory` with this index's
        (after `calibrate`), keeping its shards (`write_calibration`). Collective under `jax.distributed`: process 0
        writes."""
        if self.layout.index == 0:
            write_calibration(directory, self.config, self.calibration)
        dist.barrier("index calibration written", self.layout)

    def measure_recall(self, queries: np.ndarray, query_mask: np.ndarray, ks: Sequence[int] = (10, 100)) -> dict:
        """Recall@k of this index's search against exact search on the given queries (collective)."""
        k = max(ks)
        found, _ = self.search_positions(queries, query_mask, k)
        truth = found if self.config.mode == "exact" else self.search_positions(queries, query_mask, k, exact=True)[0]
        out = {"num_queries": int(len(found)), "mode": self.config.mode}
        for kk in ks:
            hits = [len(set(f[:kk][f[:kk] >= 0]) & set(t[:kk][t[:kk] >= 0])) for f, t in zip(found, truth)]
            valid = [int((t[:kk] >= 0).sum()) for t in truth]
            out[f"recall@{kk}"] = float(sum(hits) / max(sum(valid), 1))
        return out


def write_index_root(root: pathlib.Path, config: IndexConfig, calibration, shard_metas: list[dict],
                     build_info: dict | None = None, encoding: dict | None = None) -> None:
    """index.json, then manifest.json (last): the shards' shard.json must already be in place."""
    for name in (MANIFEST, MANIFEST + storage.PENDING, INDEX_META + storage.PENDING):
        (root / name).unlink(missing_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "config": dataclasses.asdict(config), "calibration": calibration,
            "encoding": dict(encoding or {}),
            "num_passages": sum(m["num_passages"] for m in shard_metas),
            "num_tokens": sum(m["num_tokens"] for m in shard_metas),
            "dim": shard_metas[0]["dim"] if shard_metas else None,
            "shards": [{k: m[k] for k in ("name", "num_passages", "num_tokens", "first_passage")}
                       for m in shard_metas],
            "build": dict(build_info or {})}
    storage.write_meta(root / INDEX_META, meta)
    names = [INDEX_META] + [f"{m['name']}/{SHARD_META}" for m in shard_metas]
    storage.write_meta(root / MANIFEST, {"format": FORMAT, "version": VERSION,
                                         "files": storage.file_entries(root, names)})


def write_calibration(directory, config: IndexConfig, calibration: dict | None) -> None:
    """Replace the search settings and the calibration record in the index.json of the index saved in `directory`,
    keeping its shards: index.json and manifest.json are replaced as one change (`storage.replace_metas`), so the
    folder always holds a whole index, the old one or the new one.

    Raises:
        IndexFileError: the folder holds no finished index, or one built with other build settings than `config`'s.
    """
    root = pathlib.Path(directory)
    manifest = storage.read_manifest(root, INDEX_META, verify=True)
    meta = storage.read_meta(root / INDEX_META, IndexFileError)
    new = dataclasses.asdict(config)
    built = meta.get("config", {})
    changed = [k for k in BUILD_SETTINGS if built.get(k) != new[k]]
    if changed:
        raise IndexFileError(f"{root / INDEX_META}: built with other settings than the calibrated index's "
                             f"({', '.join(changed)}): not the same index")
    meta.update(config=new, calibration=calibration)
    storage.replace_metas(root, {INDEX_META: meta}, list(manifest["files"]), {"format": FORMAT, "version": VERSION})
