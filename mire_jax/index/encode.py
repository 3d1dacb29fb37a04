"""Encode a passage corpus into shards: the resumable shard loop.

The loop is independent of the model: it takes any `encode_fn(texts) -> (embeddings [B, L, dim],
keep [B, L])` (the model's is `mire_jax.retrieval.Searcher.passage_encoder`) and keeps, per passage, the
embeddings of its kept tokens. Passages that carry an image (stream items `(id, text, image)`) are encoded in
batches of their own, image-only and image+text apart, by `encode_fn(texts, images)`; each shard keeps the stream's
order. Work is split between processes
by shard (shard g belongs to process g % process_count), so every host reads the same input stream and
encodes only its own shards; finished shards are skipped when a run is repeated.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from mire_jax.index import encoded_corpus as shard_io

EncodeFn = Callable[..., tuple[np.ndarray, np.ndarray]]
"""`encode_fn(texts)` for text passages, `encode_fn(texts, images)` for passages with an image."""

TEXT, IMAGE, IMAGE_TEXT = "text", "image", "image_text"  # the kinds of passage, each encoded in its own batches


@dataclasses.dataclass
class EncodeSummary:
    """What one `encode_to_shards` call did (this process only)."""

    shards_written: list[int] = dataclasses.field(default_factory=list)
    shards_skipped: list[int] = dataclasses.field(default_factory=list)
    passages_encoded: int = 0
    tokens_written: int = 0
    num_shards: int = 0
    num_passages: int = 0


def _batched(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def passage_kind(item: Sequence) -> str:
    """TEXT for `(id, text)` (or an image of None), IMAGE for an image with no text, IMAGE_TEXT for both."""
    if len(item) < 3 or item[2] is None:
        return TEXT
    return IMAGE_TEXT if (item[1] or "").strip() else IMAGE


def _encode_shard(items: Sequence[Sequence], encode_fn: EncodeFn, batch_size: int,
                  bar) -> tuple[np.ndarray, np.ndarray]:
    """The kept-token embeddings of a shard's passages in stream order, each kind encoded in full batches."""
    groups: dict[str, list[int]] = {}
    for position, item in enumerate(items):
        groups.setdefault(passage_kind(item), []).append(position)
    pieces: list[np.ndarray | None] = [None] * len(items)
    for kind, positions in groups.items():
        for batch in _batched(positions, batch_size):
            texts = ["" if items[i][1] is None else items[i][1] for i in batch]
            if kind == TEXT:
                embeddings, keep = encode_fn(texts)
            else:
                embeddings, keep = encode_fn(texts, [items[i][2] for i in batch])
            embeddings, keep = np.asarray(embeddings), np.asarray(keep, bool)
            if embeddings.shape[:2] != keep.shape or embeddings.shape[0] != len(batch):
                raise ValueError(f"encode_fn returned embeddings {embeddings.shape} and keep {keep.shape} for "
                                 f"{len(batch)} passages")
            for row, i in enumerate(batch):
                pieces[i] = embeddings[row][keep[row]].astype(np.float16)
            bar.update(len(batch))
    dim = pieces[0].shape[1] if pieces else 0
    return (np.concatenate(pieces) if pieces else np.zeros((0, dim), np.float16),
            np.array([len(p) for p in pieces], np.int32))


def encode_to_shards(passages: Iterable[tuple[str, str]], out_dir: str | os.PathLike, encode_fn: EncodeFn, *,
                     shard_size: int = 10_000, batch_size: int = 64, process_index: int = 0,
                     process_count: int = 1, settings: Mapping[str, Any] | None = None,
                     total: int | None = None, progress: bool = True) -> EncodeSummary:
    """Encode this process's shards of a passage stream; skip shards already finished.

    Args:
        passages: (passage id, text) or (passage id, text, image) items in corpus order; every process must see
            the same stream. An image may be anything `encode_fn` takes (the searcher: a path, a PIL image, ...).
        out_dir: shard directory.
        encode_fn: texts (and images) -> (embeddings [B, L, dim], keep [B, L] bool); only kept tokens are stored.
        shard_size: passages per shard (the last shard may be shorter). Must not change on resume.
        batch_size: texts per `encode_fn` call.
        process_index: this process (e.g. `jax.process_index()`).
        process_count: all processes (e.g. `jax.process_count()`); shard g is encoded by g % process_count.
        settings: JSON-able encoding settings stored in every shard; a resumed run must pass the same.
        total: number of passages, for the progress bar.
        progress: show a progress bar.

    Returns:
        An EncodeSummary; `num_shards` and `num_passages` count the whole stream.
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size ({shard_size}) and batch_size ({batch_size}) must be positive")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    settings = {**dict(settings or {}), "shard_size": shard_size}
    os.makedirs(out_dir, exist_ok=True)
    summary = EncodeSummary()
    stream = iter(passages)
    bar = tqdm(total=total, desc=f"encoding (process {process_index})", unit="passage", disable=not progress)
    shard = 0
    try:
        while True:
            chunk = [p for _, p in zip(range(shard_size), stream)]
            if not chunk:
                break
            summary.num_passages += len(chunk)
            if shard % process_count == process_index:
                if shard_io.finished_shard(out_dir, shard, settings) is not None:
                    summary.shards_skipped.append(shard)
                    bar.update(len(chunk))
                else:
                    shard_io.remove_stale_temporaries(out_dir, [shard])
                    ids = [item[0] for item in chunk]
                    embeddings, lengths = _encode_shard(chunk, encode_fn, batch_size, bar)
                    shard_io.write_shard(out_dir, shard, embeddings, lengths, ids, settings)
                    summary.shards_written.append(shard)
                    summary.passages_encoded += len(chunk)
                    summary.tokens_written += int(embeddings.shape[0])
            else:
                bar.update(len(chunk))
            bar.set_postfix(written=len(summary.shards_written), skipped=len(summary.shards_skipped))
            shard += 1
    finally:
        bar.close()
    summary.num_shards = shard
    return summary
