"""One shard of a LateInteractionIndex: its passages' stored tokens, their offsets, its own ScaNN searcher.

A shard is built from a float32 copy of its own tokens only (the quantiser trained on a sample of them,
then every token of the shard hashed), so building a corpus of any size holds one shard at a time. Its tokens are
kept as a `mire_jax.index.token_store.TokenStore` (int8 codes with a per-token scale by default, laid out in groups
of equal padded length for exact search). Saved as a folder:

    shard_000000/tokens.npy       stored token codes [rows, width] (uint8; float16 for the float16 codec),
                                  memory-mapped after loading
    shard_000000/scales.npy       float16 [rows], a scale per stored token (quantised codecs)
    shard_000000/offsets.npy      int64 [passages + 1], shard-local token offsets
    shard_000000/ids.json         [passages] passage ids
    shard_000000/scann/           the ScaNN searcher (scann mode); its 4-bit codes two per byte
                                  (`hashed_dataset.packed.npy`: ScaNN writes one per byte, unpacked when loading)
    shard_000000/shard.json       counts, the stored tokens' codec and layout ("tokens"), build settings, the
                                  source, sha256 of every file above

The first stage of search happens here: ScaNN returns, per query token, its nearest tokens of the shard
with approximate scores, and each passage gets an approximate MaxSim from them (see `first_stage`).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np

from mire_jax.files import read_json
from mire_jax.index import storage
from mire_jax.index.storage import IndexFileError, IndexFormatError
from mire_jax.index.token_store import TokenStore

SHARD_META = "shard.json"
OFFSETS = "offsets.npy"
IDS = "ids.json"
SCANN_DIR = "scann"
SCANN_CODES = "hashed_dataset.npy"  # ScaNN's asymmetric-hashing codes, one 4-bit code per byte
PACKED_CODES = "hashed_dataset.packed.npy"  # the same, two per byte (low nibble first), as the index keeps them
FORMAT = "mire-jax-index-shard"


def pack_scann_codes(folder: pathlib.Path) -> dict | None:
    """Replace ScaNN's serialized codes in `folder` by the same codes two per byte; -> what shard.json records
    (None, file left as it is, when they are not 4-bit codes)."""
    path = folder / SCANN_CODES
    if not path.exists():
        return None
    codes = np.load(path)
    if codes.dtype != np.uint8 or codes.ndim != 2 or (codes.size and codes.max() > 15):
        return None
    width = codes.shape[1]
    even = np.pad(codes, ((0, 0), (0, width % 2)))
    np.save(folder / PACKED_CODES, even[:, 0::2] | (even[:, 1::2] << 4))
    path.unlink()
    return {"file": PACKED_CODES, "replaces": SCANN_CODES, "rows": int(codes.shape[0]), "width": int(width),
            "format": "ScaNN's 4-bit codes, two per byte, low nibble first"}


def load_scann(folder: pathlib.Path, packed: dict | None):
    """ScaNN's searcher from a shard's `scann/` folder, its packed codes unpacked into a temporary copy."""
    import scann

    if not packed:
        return scann.scann_ops_pybind.load_searcher(str(folder))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="scann-"))
    try:
        for child in folder.iterdir():
            if child.name != packed["file"]:
                os.symlink(child.resolve(), tmp / child.name)
        pairs = np.load(folder / packed["file"])
        codes = np.stack([pairs & 15, pairs >> 4], axis=-1).reshape(len(pairs), -1)[:, :packed["width"]]
        np.save(tmp / packed["replaces"], np.ascontiguousarray(codes))
        del pairs, codes
        return scann.scann_ops_pybind.load_searcher(str(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_searcher(tokens: np.ndarray, *, num_leaves: int, training_sample_size: int, dims_per_block: int,
                   anisotropic_threshold: float, spherical: bool, soar_lambda: float | None,
                   training_threads: int):
    """A ScaNN tree-AH searcher over `tokens` ([T, dim], any float dtype; copied to float32 in chunks)."""
    import scann

    data = np.empty(tokens.shape, np.float32)
    step = 1 << 20
    for start in range(0, len(tokens), step):
        data[start:start + step] = tokens[start:start + step]
    builder = scann.scann_ops_pybind.builder(data, 10, "dot_product")
    builder = builder.tree(num_leaves=num_leaves, num_leaves_to_search=max(1, num_leaves // 32),
                           training_sample_size=min(training_sample_size, len(data)), spherical=spherical,
                           soar_lambda=soar_lambda)
    builder = builder.score_ah(dims_per_block, anisotropic_quantization_threshold=anisotropic_threshold,
                               training_sample_size=min(training_sample_size, len(data)))
    builder.set_n_training_threads(training_threads)
    searcher = builder.build()
    del data
    return searcher


class IndexShard:
    """A shard's stored tokens and searcher.

    Attributes:
        store: the shard's tokens as stored (`TokenStore`: memory-mapped once loaded).
        offsets: [passages + 1] int64 shard-local token offsets.
        searcher: ScaNN searcher, or None in exact mode.
        num_leaves: ScaNN partitions (0 without a searcher).
        first_passage: global position of the shard's first passage.
        name: folder name.
    """

    def __init__(self, store: TokenStore | None, offsets: np.ndarray, searcher=None, num_leaves: int = 0,
                 first_passage: int = 0, name: str = "shard_000000"):
        self.store = store
        self.offsets = np.asarray(offsets, np.int64)
        self.searcher = searcher
        self.num_leaves = int(num_leaves)
        self.first_passage = int(first_passage)
        self.name = name
        self._token_passage = None

    @property
    def embeddings(self) -> TokenStore | None:
        """The shard's tokens as a [tokens, dim] float32 array view (decoded from the store as read)."""
        return self.store

    @property
    def dim(self) -> int:
        return self.store.dim

    @property
    def num_passages(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    # Persistence -------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike, ids: Sequence, extra: Mapping[str, Any] | None = None) -> dict:
        """Write the shard's files into `folder` (which must be empty or new), shard.json last.

        Returns the shard's metadata (the content of shard.json).
        """
        out = pathlib.Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        names = self.store.save(out)
        np.save(out / OFFSETS, self.offsets)
        with open(out / IDS, "w") as f:
            json.dump(list(ids), f)
        names += [OFFSETS, IDS]
        packed = None
        if self.searcher is not None:
            (out / SCANN_DIR).mkdir(exist_ok=True)
            self.searcher.serialize(str(out / SCANN_DIR), relative_path=True)
            packed = pack_scann_codes(out / SCANN_DIR)
            names += [f"{SCANN_DIR}/{p.name}" for p in sorted((out / SCANN_DIR).iterdir())]
        meta = {"format": FORMAT, "name": self.name, "num_passages": self.num_passages,
                "num_tokens": self.num_tokens, "dim": int(self.store.dim),
                "first_passage": self.first_passage, "num_leaves": self.num_leaves, "tokens": self.store.describe(),
                **({"scann_codes": packed} if packed else {}), **dict(extra or {}),
                "files": storage.file_entries(out, names)}
        storage.write_meta(out / SHARD_META, meta)
        return meta

    @staticmethod
    def read_meta(folder: str | os.PathLike) -> dict:
        return storage.read_meta(pathlib.Path(folder) / SHARD_META, IndexFileError, FORMAT)

    @classmethod
    def load(cls, folder: str | os.PathLike, verify: bool = True, load_ids: bool = True,
             open_data: bool = True) -> tuple["IndexShard", list | None, dict]:
        """Open a saved shard: (shard, ids or None, metadata).

        Every file's size is checked against shard.json (and its sha256 with `verify`); the stored tokens stay on
        disk, memory-mapped. Without `open_data` only the offsets and ids are read (a shard served by another
        process): the returned shard has no tokens and no searcher.

        Raises:
            IndexFileError: shard.json or a file it lists is missing or altered (names the file).
        """
        root = pathlib.Path(folder)
        meta = cls.read_meta(root)
        wanted = meta["files"] if open_data else {n: e for n, e in meta["files"].items() if n in (IDS, OFFSETS)}
        for name, entry in wanted.items():
            storage.check_file(root / name, entry, verify)
        ids = None
        if load_ids:
            ids = read_json(root / IDS, error=IndexFileError)
            if len(ids) != meta["num_passages"]:
                raise IndexFileError(f"{root / IDS}: {len(ids)} ids, shard.json says {meta['num_passages']}")
        offsets = np.load(root / OFFSETS)
        if not open_data:
            return cls(None, offsets, None, meta.get("num_leaves", 0), meta["first_passage"], meta["name"]), ids, meta
        if int(offsets[-1]) != meta["num_tokens"] or len(offsets) != meta["num_passages"] + 1:
            raise IndexFileError(f"{root}: counts disagree with {SHARD_META}")
        if "tokens" not in meta:
            raise IndexFormatError(f"{root / SHARD_META}: no stored tokens recorded (an index of an older format): "
                                 "build the index again")
        try:
            store = TokenStore.open(root, np.diff(offsets), meta["tokens"])
        except (ValueError, KeyError) as e:
            raise IndexFileError(f"{root}: stored tokens disagree with {SHARD_META} ({e})") from e
        searcher = None
        if (root / SCANN_DIR).exists() and any(n.startswith(SCANN_DIR + "/") for n in meta["files"]):
            searcher = load_scann(root / SCANN_DIR, meta.get("scann_codes"))
        shard = cls(store, offsets, searcher, meta.get("num_leaves", 0), meta["first_passage"], meta["name"])
        return shard, ids, meta

    # First stage -------------------------------------------------------------------------------------

    def token_hits(self, query_tokens: np.ndarray, probe: int, neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        """ScaNN's `neighbors` nearest shard tokens of every query token: (token rows [R, n] int32,
        approximate scores [R, n] float32, NaN where fewer were found), best first."""
        nn, sim = self.searcher.search_batched_parallel(query_tokens, final_num_neighbors=int(neighbors),
                                                        leaves_to_search=int(probe))
        return np.asarray(nn), np.asarray(sim, np.float32)

    @property
    def token_passage(self) -> np.ndarray:
        """[tokens] int32: the shard-local passage of every token (built on first use)."""
        if self._token_passage is None:
            self._token_passage = np.repeat(np.arange(self.num_passages, dtype=np.int32), np.diff(self.offsets))
        return self._token_passage

    def first_stage(self, rows: np.ndarray, num_queries: int, nq: int, nn: np.ndarray, sim: np.ndarray,
                    settings: Sequence[tuple[int, float]], count: int) -> dict:
        """Approximate MaxSim of the passages hit by the query tokens; the best `count` per query.

        A passage's approximate score for a query token is the best approximate score among its retrieved
        tokens; a query token that retrieved none of them counts `fill_fraction` of its last retrieved
        score (the true value lies below that score). The sum over query tokens ranks the passages.

        Args:
            rows: [R] flat query-token rows (b * nq + i) that were searched, ascending.
            num_queries, nq: the batch's shape.
            nn, sim: `token_hits` of those rows, best first.
            settings: (neighbours, fill_fraction) pairs to evaluate: each uses the first `neighbours` hits of
                every row. Evaluating several at once shares the work (calibration).
            count: candidates kept per query.

        Returns:
            {(neighbours, fill_fraction): per query, (global passage positions, approximate scores), best
            first}.
        """
        n = self.num_passages
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
        out = {key: [empty] * num_queries for key in settings}
        if len(rows) == 0 or n == 0 or nn.size == 0:
            return out
        valid = ~np.isnan(sim)
        num_valid = valid.sum(1)
        passage = self.token_passage[np.where(valid, nn, 0)]
        passage[~valid] = n  # a spare column for missing results
        score = np.where(valid, sim, -np.inf).astype(np.float32)
        query = rows // nq
        bounds = np.searchsorted(query, np.arange(num_queries + 1))
        local_row = (rows % nq).astype(np.int64)
        # Scratch [query token, passage] cells, reused by every query: `first` is back to `unset` after
        # each. A row's hits come best first, so a cell's first hit is its best one and counts alone.
        unset = np.iinfo(np.int32).max
        first = np.full(nq * (n + 1), unset, np.int32)
        for key in settings:
            width = min(int(key[0]), nn.shape[1])
            taken = np.minimum(num_valid, width)
            last = np.where(taken > 0, sim[np.arange(len(rows)), np.maximum(taken - 1, 0)], 0.0).astype(np.float32)
            fill = np.minimum(last, key[1] * last)
            for b in range(num_queries):
                r0, r1 = bounds[b], bounds[b + 1]
                if r1 == r0:
                    continue
                hit_passage = passage[r0:r1, :width]
                cells = (local_row[r0:r1, None] * (n + 1) + hit_passage).reshape(-1)
                order = np.arange(len(cells), dtype=np.int32)
                np.minimum.at(first, cells, order)
                gain = (score[r0:r1, :width] - fill[r0:r1, None]).reshape(-1)
                once = (first[cells] == order) & (gain > 0)
                first[cells] = unset
                totals = np.bincount(hit_passage.reshape(-1)[once], weights=gain[once], minlength=n + 1)[:n]
                cand = np.flatnonzero(totals > 0)
                part = (totals[cand] + fill[r0:r1].sum()).astype(np.float32)
                top = np.argpartition(-part, count - 1)[:count] if len(part) > count else np.arange(len(part))
                top = top[np.argsort(-part[top], kind="stable")]
                out[key][b] = (cand[top].astype(np.int64) + self.first_passage, part[top])
        return out
