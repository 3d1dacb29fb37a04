"""Building an index shard by shard: from arrays in memory, or from an encoded corpus on disk (resumable).

A corpus is split into index shards of at most `IndexConfig.shard_tokens` tokens (balanced, whole
passages; from an encoded corpus, whole encoded shards). Each shard's ScaNN searcher is trained on a
sample of that shard's tokens and then hashes all of them, from a float32 copy of that shard alone: the
build never holds more than one shard as float32. Built into a directory, every shard is saved and
checksummed as soon as it exists; a repeated build keeps the finished shards (same source, same settings)
and resumes at the first missing one. Under `jax.distributed` process p builds the shards g with
g % process_count == p, then all processes calibrate together and process 0 writes the index's root files.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from mire_jax.files import read_json
from mire_jax.index import calibrate as calibrate_lib
from mire_jax.index import distributed as dist
from mire_jax.index import encoded_corpus as encoded
from mire_jax.index import exact, storage
from mire_jax.index.config import IndexConfig, shard_leaves
from mire_jax.index.index_shard import SHARD_META, IndexShard, build_searcher
from mire_jax.index.search import INDEX_META, write_index_root
from mire_jax.index.storage import IndexFileError
from mire_jax.index.token_store import TokenStore, codec_of, group_lengths
from mire_jax.index.tokens import RowConcat

LAYOUT_PADDING = 0.05  # share of padding rows assumed when sizing a store before it exists

# Build settings a finished shard must share with the current build to be kept on resume.
BUILD_FIELDS = ("mode", "num_leaves", "dims_per_block", "anisotropic_threshold", "spherical",
                "training_sample_size", "soar_lambda", "shard_tokens", "token_codec")


def plan_shards(token_counts: Sequence[int], shard_tokens: int) -> list[tuple[int, int]]:
    """Split consecutive items (passages, or encoded shards) into (start, stop) groups of balanced token
    counts: as many groups as `shard_tokens` requires, each closed once it reaches an equal share
    (a single item larger than the share makes a group of its own)."""
    counts = np.asarray(token_counts, np.int64)
    total = int(counts.sum())
    if len(counts) == 0:
        return []
    groups = max(1, math.ceil(total / max(shard_tokens, 1)))
    target = total / groups
    bounds, start, acc = [], 0, 0
    for i, c in enumerate(counts.tolist()):
        if i > start and acc + c > target * 1.0001 and len(bounds) < groups - 1:
            bounds.append((start, i))
            start, acc = i, 0
        acc += c
    bounds.append((start, len(counts)))
    return bounds


def build_shard(embeddings, offsets: np.ndarray, config: IndexConfig, largest_tokens: int,
                first_passage: int, name: str, groups: Sequence[int] | None = None) -> IndexShard:
    """One index shard over `embeddings` (its tokens) with shard-local `offsets`: the tokens stored with the
    config's codec (in memory), and a ScaNN searcher in scann mode (built from a float32 copy of these tokens
    only). `groups`: the corpus's padded lengths (`token_store.group_lengths`; None: this shard's own)."""
    tokens = int(offsets[-1])
    searcher, leaves = None, 0
    if config.mode == "scann":
        leaves = shard_leaves(config, tokens, largest_tokens)
        if tokens < 2 * leaves or tokens < 32:
            raise ValueError(f"{name}: {tokens} tokens are too few for {leaves} ScaNN leaves")
        sample = max(min(config.training_sample_size, tokens), 1)
        searcher = build_searcher(embeddings, num_leaves=leaves, training_sample_size=sample,
                                  dims_per_block=config.dims_per_block,
                                  anisotropic_threshold=config.anisotropic_threshold, spherical=config.spherical,
                                  soar_lambda=config.soar_lambda, training_threads=config.training_threads)
    store = TokenStore.encode(embeddings, np.diff(np.asarray(offsets, np.int64)), config.token_codec, groups)
    return IndexShard(store, offsets, searcher, leaves, first_passage, name)


def resolve_codec(config: IndexConfig, embeddings, offsets: np.ndarray, calibration_queries,
                  info: dict) -> IndexConfig:
    """`config` with its token codec decided: "auto" becomes the codec `exact.choose_codec` measures to keep the
    float32 top k on a sample of the corpus (what it measured goes into `info["token_codec_check"]`)."""
    if config.token_codec != "auto":
        return config
    queries, mask = calibration_queries if calibration_queries is not None else (None, None)
    name, report = exact.choose_codec(embeddings, offsets, queries, mask)
    info["token_codec_check"] = report
    return dataclasses.replace(config, token_codec=name)


def accelerators_hold(num_tokens: int, dim: int, config: IndexConfig, processes: int = 1) -> bool:
    """Whether this process's devices are accelerators whose memory holds its share of the corpus's stored tokens
    (what makes "auto" mode exact there)."""
    import jax

    devices = jax.local_devices()
    if devices[0].platform == "cpu" or num_tokens == 0:
        return False
    rows = num_tokens * (1 + LAYOUT_PADDING) / max(processes, 1)
    codec = "int8" if config.token_codec == "auto" else config.token_codec
    return exact.fits_devices(int(rows), codec_of(codec).bytes_per_token(dim), devices)


def _check_corpus(embeddings, lengths, ids):
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
    return lengths, ids


def finish(index, config: IndexConfig, calibration_queries, progress: bool) -> None:
    """Calibrate the index's None search settings (collective), or fill them by rule of thumb."""
    if config.mode == "exact":
        index.config = config.with_default_search(int(index.offsets[-1]))
        index.calibration = calibrate_lib.exact_report(config)
    elif config.calibrate and any(v is None for v in config.search_fields().values()):
        queries, mask = calibration_queries if calibration_queries is not None else (None, None)
        calibrate_lib.calibrate_index(index, queries, mask, progress=progress)
    else:
        index.config = config.with_default_search(int(index.offsets[-1]))
        index.calibration = None


def build_in_memory(cls, embeddings: np.ndarray, lengths, ids, config: IndexConfig, progress: bool,
                    calibration_queries, encoding: dict | None = None):
    """An index of class `cls` (`LateInteractionIndex.build`): shards over slices of `embeddings`, their tokens
    stored (encoded with the config's codec) in memory."""
    lengths, ids = _check_corpus(embeddings, lengths, ids)
    t0 = time.perf_counter()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    plan = plan_shards(lengths, config.shard_tokens)
    largest = max((int(offsets[b] - offsets[a]) for a, b in plan), default=0)
    cfg = config.resolve(int(offsets[-1]), int(embeddings.shape[1]), largest,
                         accelerators_hold(int(offsets[-1]), int(embeddings.shape[1]), config))
    info = {}
    cfg = resolve_codec(cfg, embeddings, offsets, calibration_queries, info)
    shards, groups = [], group_lengths(lengths)
    for number, (a, b) in enumerate(tqdm(plan, desc="index shards", disable=not progress or len(plan) < 2)):
        part = embeddings[offsets[a]:offsets[b]]
        shards.append(build_shard(part, offsets[a:b + 1] - offsets[a], cfg, largest, a,
                                  encoded.shard_name(number), groups=groups))
    index = cls(shards, ids, cfg, offsets=offsets, build_info={"shards": len(shards), **info}, encoding=encoding)
    build_s = time.perf_counter() - t0
    finish(index, cfg, calibration_queries, progress)
    _record_times(index, build_s, time.perf_counter() - t0)
    return index


def _record_times(index, build_s: float, total_s: float) -> None:
    index.build_info.update(build_seconds=build_s, seconds=total_s, calibration_seconds=total_s - build_s)


def _group_reader(shard_dir, entries: list[dict], verify: bool) -> Callable[[bool], tuple]:
    """A function (in_memory) -> (embeddings, lengths, ids) of a group of encoded shards."""
    def read(in_memory: bool):
        parts, lengths, ids = [], [], []
        for entry in entries:
            emb, lens, pids = encoded.read_shard(shard_dir, entry, verify=verify, mmap=True)
            parts.append(emb)
            lengths.append(lens)
            ids.extend(pids)
        if in_memory:
            embeddings = np.concatenate([np.asarray(p) for p in parts]) if len(parts) > 1 else np.asarray(parts[0])
        else:
            embeddings = parts[0] if len(parts) == 1 else RowConcat(parts)
        return embeddings, np.concatenate(lengths).astype(np.int64), ids
    return read


def build_from_encoded(cls, shard_dir, config: IndexConfig, *, verify: bool, progress: bool, directory,
                       calibration_queries, encoding: dict | None = None):
    """An index of class `cls` over an encoded corpus (`LateInteractionIndex.from_shards`)."""
    t0 = time.perf_counter()
    manifest = encoded.read_manifest(shard_dir)
    entries = manifest["shards"]
    plan = plan_shards([e["num_tokens"] for e in entries], config.shard_tokens)
    group_tokens = [sum(e["num_tokens"] for e in entries[a:b]) for a, b in plan]
    largest = max(group_tokens, default=0)
    dim = int(manifest["dim"] or 0)
    holds = accelerators_hold(int(manifest["num_tokens"]), dim, config, dist.current_layout().count)
    cfg = config.resolve(int(manifest["num_tokens"]), dim, largest, holds)
    first_passages = np.concatenate([[0], np.cumsum([sum(e["num_passages"] for e in entries[a:b])
                                                      for a, b in plan])]).astype(np.int64)
    all_lengths = [np.load(pathlib.Path(shard_dir) / e["name"] / encoded.LENGTHS) for e in entries]
    groups = group_lengths(np.concatenate(all_lengths or [np.zeros(0, np.int64)]))
    info = {}
    if cfg.token_codec == "auto":  # measured on a sample of the whole corpus (memory-mapped), the same everywhere
        tokens = RowConcat([np.load(pathlib.Path(shard_dir) / e["name"] / encoded.EMBEDDINGS, mmap_mode="r")
                            for e in entries])
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(all_lengths))]).astype(np.int64)
        cfg = resolve_codec(cfg, tokens, offsets, calibration_queries, info)
    if directory is None:
        shards, ids = [], []
        for number, (a, b) in enumerate(tqdm(plan, desc="index shards", disable=not progress)):
            embeddings, lengths, shard_ids = _group_reader(shard_dir, entries[a:b], verify)(False)
            local = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            shards.append(build_shard(embeddings, local, cfg, largest, int(first_passages[number]),
                                      encoded.shard_name(number), groups=groups))
            ids.extend(shard_ids)
        index = cls(shards, ids, cfg, build_info={"shards": len(shards), **info}, encoding=encoding)
        build_s = time.perf_counter() - t0
        finish(index, cfg, calibration_queries, progress)
        _record_times(index, build_s, time.perf_counter() - t0)
        return index

    layout = dist.current_layout()
    root = pathlib.Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    settings = {**{k: v for k, v in dataclasses.asdict(cfg).items() if k in BUILD_FIELDS}, "token_groups": groups}
    built, kept, seconds = [], [], {}
    mine = [g for g in range(len(plan)) if layout.owns(g)]
    storage.remove_stale_temporaries(root, [encoded.shard_name(g) for g in mine])
    for number in tqdm(mine, desc=f"index shards (process {layout.index})", disable=not progress):
        a, b = plan[number]
        name = encoded.shard_name(number)
        source = {"encoded_shards": [e["name"] for e in entries[a:b]],
                  "sha256": [e["files"][encoded.EMBEDDINGS]["sha256"] for e in entries[a:b]]}
        if _finished(root / name, source, settings, verify):
            kept.append(number)
            continue
        ts = time.perf_counter()
        embeddings, lengths, shard_ids = _group_reader(shard_dir, entries[a:b], verify)(True)
        local = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        shard = build_shard(embeddings, local, cfg, largest, int(first_passages[number]), name, groups=groups)
        extra = {"source": source, "build_settings": settings}
        storage.write_folder(root, name, lambda out, s=shard, i=shard_ids: s.save(out, i, extra), replace=True)
        del shard, embeddings
        built.append(number)
        seconds[name] = time.perf_counter() - ts
    dist.barrier("index shards built", layout)
    build_s = time.perf_counter() - t0
    rebuilt = int(dist.allgather(np.array([len(built)], np.int32), layout).sum())
    if not rebuilt and _complete(root, plan, cfg, encoding):  # nothing changed since a finished build
        return cls.load(root, verify=False)
    names = [encoded.shard_name(g) for g in range(len(plan))]
    index = cls.open_shards(root, names, cfg, layout, verify=False, dim=int(manifest["dim"]), encoding=encoding)
    finish(index, cfg, calibration_queries, progress)
    info = {"shards": len(plan), "shards_built_here": built, "shards_kept_here": kept, "shard_seconds": seconds,
            "process_count": layout.count, **info}
    index.build_info = info
    _record_times(index, build_s, time.perf_counter() - t0)
    if layout.index == 0:
        metas = [IndexShard.read_meta(root / encoded.shard_name(g)) for g in range(len(plan))]
        write_index_root(root, index.config, index.calibration, metas, index.build_info, index.encoding)
    dist.barrier("index root written", layout)
    return index


def _finished(folder: pathlib.Path, source: dict, settings: dict, verify: bool) -> bool:
    """Whether `folder` holds a whole shard built from `source` with `settings`, its files intact."""
    if not (folder / SHARD_META).exists():
        return False
    try:
        meta = IndexShard.read_meta(folder)
        if meta.get("source") != source or meta.get("build_settings") != settings:
            return False
        for name, entry in meta["files"].items():
            storage.check_file(folder / name, entry, verify)
    except IndexFileError:
        return False
    return True


def _complete(root: pathlib.Path, plan, cfg: IndexConfig, encoding: dict | None) -> bool:
    """Whether root holds a finished index of these shards, built and calibrated with `cfg`'s settings from a
    corpus encoded as `encoding` says."""
    if not (root / storage.MANIFEST).exists():
        return False
    try:
        meta = read_json(root / INDEX_META, error=IndexFileError)
    except (IndexFileError, FileNotFoundError):
        return False
    saved = meta.get("config", {})
    same = all(saved.get(k) == v for k, v in dataclasses.asdict(cfg).items() if v is not None)
    return same and len(meta.get("shards", [])) == len(plan) and meta.get("encoding", {}) == dict(encoding or {})
