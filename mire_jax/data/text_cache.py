"""The frozen text tower's outputs for every record of a training set, for pre-training with dropout off.

In pre-training the text tower (BERT and the projection) is frozen, so with dropout off its outputs for a record
never change: the query's text tokens T (projected, masked, not normalised: what the pooling attends with) and
the passage's embeddings D. Computing them once and reading them back makes each step run the pooling head only.
(The published runs keep BERT in train mode, dropout on, so their recipe does not take this path.)

Layout: two feature caches (`mire_jax.data.feature_cache`) keyed by record id, `queries/` [query_maxlen, dim]
and `passages/` [doc_maxlen, dim], whose metadata names the model, the tokenizer and the lengths they were made
with; a cache made with other settings is refused. Filling resumes, and is shared by processes like the vision
cache.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Sequence

import numpy as np
import tqdm

from mire_jax.data.feature_cache import FeatureCache, FeatureCacheError, FeatureCacheWriter

QUERIES, PASSAGES = "queries", "passages"


def settings_of(config, params, tokenizer, query_maxlen: int, doc_maxlen: int, attend_to_mask_tokens: bool) -> dict:
    """What the cached features depend on (stored in, and checked against, each cache's metadata): the text
    tower (BERT and the projection, not the pooling head, so models that differ only there share a cache), the
    tokenizer and the lengths."""
    import json

    import jax
    tower = hashlib.sha256(json.dumps([dataclasses.asdict(config.text), config.head.dim, config.dtype]).encode())
    for leaf in jax.tree_util.tree_leaves({"bert": params["bert"], "linear": params["linear"]}):
        tower.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return {"text_tower": tower.hexdigest()[:16], "vocabulary": tokenizer.fingerprint(),
            "query_maxlen": int(query_maxlen),
            "doc_maxlen": int(doc_maxlen), "attend_to_mask_tokens": bool(attend_to_mask_tokens)}


def _check_settings(cache: FeatureCache, settings: dict) -> None:
    if cache.metadata.get("settings") != settings:
        raise FeatureCacheError(f"{cache.directory}: text features made with {cache.metadata.get('settings')}, "
                                f"not with this run's {settings}; remove the folder or use another one")


class TextCache:
    """Reads the cached T of a record's query and D of its passage, checked against the run's settings."""

    def __init__(self, directory: str | os.PathLike, settings: dict):
        self.queries = FeatureCache(os.path.join(os.fspath(directory), QUERIES))
        self.passages = FeatureCache(os.path.join(os.fspath(directory), PASSAGES))
        for cache in (self.queries, self.passages):
            _check_settings(cache, settings)

    def __getitem__(self, record_id: str) -> tuple[np.ndarray, np.ndarray]:
        return self.queries[record_id], self.passages[record_id]


def text_encoders(config, params, batch_size: int, *, devices: Sequence | None = None):
    """-> (queries: (ids, mask) -> T [B, Lq, dim], passages: (ids, mask, keep) -> D [B, Ld, dim]), data-parallel
    over this process's devices, dropout off."""
    import jax

    from mire_jax.api import model
    from mire_jax.models.mire import MIRe
    from mire_jax.retrieval.data_parallel import DataParallel

    net = model(config)

    @jax.jit
    def queries(p, ids, mask):
        return net.apply({"params": p}, ids, mask, method=MIRe.masked_text_tokens)

    @jax.jit
    def passages(p, ids, mask, keep):
        return net.apply({"params": p}, ids, mask, keep.astype(bool), method=MIRe.encode_doc)

    return (DataParallel(queries, params, batch_size, devices=devices),
            DataParallel(passages, params, batch_size, devices=devices))


def fill_text_cache(directory: str | os.PathLike, source, tokenizer, config, params, settings: dict, *,
                    use_instruction: bool = False, dtype: str = "float32", batch_size: int = 64,
                    shard_size: int = 1024, process_index: int = 0, process_count: int = 1,
                    progress: bool = True, length_bucket: int = 0) -> int:
    """Encodes the query and passage texts of every record of `source` this process is responsible for (records
    p, p + n, ... of the sorted ids) that the cache lacks, each part on its own; returns how many records it
    wrote a part of.

    `length_bucket` > 0 encodes each batch of passages trimmed to its longest passage rounded up to a multiple of it
    (and pads the features back with the zero rows padding gets): far fewer FLOPs for short passages, the same
    features up to float rounding (padding is attended by nothing). 0 encodes every batch at `doc_maxlen`."""
    from mire_jax.data.pipeline import record_texts

    dim = config.head.dim
    writers = {name: FeatureCacheWriter(os.path.join(os.fspath(directory), name), feature_shape=(length, dim),
                                        dtype=dtype, shard_size=shard_size, writer_id=f"p{process_index:05d}",
                                        metadata={"settings": settings})
               for name, length in ((QUERIES, settings["query_maxlen"]), (PASSAGES, settings["doc_maxlen"]))}
    for name, writer in writers.items():
        existing = FeatureCache(writer.directory)
        _check_settings(existing, settings)
    texts = {}
    for index in range(len(source)):
        record_id, question, document = record_texts(source[index], index, use_instruction)
        texts.setdefault(record_id, (question, document))
    assigned = sorted(texts)[process_index::process_count]
    # Each part is filled on its own: a cache whose queries (or passages) another run already holds encodes only the
    # other part.
    todo = {name: [i for i in assigned if i not in writers[name]] for name in writers}
    encode_queries, encode_passages = text_encoders(config, params, batch_size)
    step = encode_queries.batch_size
    total = len(todo[QUERIES]) + len(todo[PASSAGES])
    with tqdm.tqdm(total=total, desc="caching text features", unit="text", disable=not progress) as bar:
        for start in range(0, len(todo[QUERIES]), step):
            ids = todo[QUERIES][start:start + step]
            q_ids, q_mask = tokenizer.encode_queries([texts[i][0] for i in ids], max_len=settings["query_maxlen"],
                                                     attend_to_mask_tokens=settings["attend_to_mask_tokens"])
            writers[QUERIES].add(ids, encode_queries(q_ids, q_mask))
            bar.update(len(ids))
        for start in range(0, len(todo[PASSAGES]), step):
            ids = todo[PASSAGES][start:start + step]
            d_ids, d_mask, d_keep = tokenizer.encode_docs([texts[i][1] for i in ids], max_len=settings["doc_maxlen"])
            writers[PASSAGES].add(ids, _trimmed(encode_passages, d_ids, d_mask, d_keep, length_bucket))
            bar.update(len(ids))
    for writer in writers.values():
        writer.close(write_index=process_index == 0)
    return len(set(todo[QUERIES]) | set(todo[PASSAGES]))


__all__ = ["TextCache", "fill_text_cache", "settings_of", "text_encoders"]


def _trimmed(encode, ids, mask, keep, length_bucket: int) -> np.ndarray:
    """`encode(ids, mask, keep)` of a batch cut to its longest row rounded up to `length_bucket` (0: not cut), padded
    back to the full length with zero rows."""
    full = np.asarray(ids).shape[1]
    if length_bucket <= 0:
        return np.asarray(encode(ids, mask, keep))
    width = min(full, max(1, -(-int(np.asarray(mask).sum(axis=1).max()) // length_bucket)) * length_bucket)
    out = np.asarray(encode(np.asarray(ids)[:, :width], np.asarray(mask)[:, :width], np.asarray(keep)[:, :width]))
    return np.pad(out, ((0, 0), (0, full - width), (0, 0)))
