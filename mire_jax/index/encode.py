"""Encode a passage corpus into shards: readers, the resumable shard loop, the model's encode function.

The loop is independent of the model: it takes any `encode_fn(texts) -> (embeddings [B, L, dim],
keep [B, L])` and keeps, per passage, the embeddings of its kept tokens. Work is split between processes
by shard (shard g belongs to process g % process_count), so every host reads the same input stream and
encodes only its own shards; finished shards are skipped when a run is repeated.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from mire_jax.files import iter_json_lines
from mire_jax.index import shards as shard_io

EncodeFn = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]


def iter_jsonl_passages(path: str | os.PathLike, id_field: str = "id",
                        text_field: str = "text") -> Iterator[tuple[str, str]]:
    """(passage id, text) per line of a JSON Lines file; blank lines are skipped.

    Raises:
        ValueError: a line is not a JSON object with both fields (names the file and line).
    """
    for _, where, record in iter_json_lines(path):
        if id_field not in record or text_field not in record:
            raise ValueError(f"{where}: needs the fields {id_field!r} and {text_field!r}")
        yield str(record[id_field]), str(record[text_field])


def iter_parquet_passages(path: str | os.PathLike, id_column: str = "passage_id",
                          text_column: str = "passage_content",
                          batch_rows: int = 8192) -> Iterator[tuple[str, str]]:
    """(passage id, text) per row of a parquet file, read in record batches.

    Raises:
        ValueError: a column is missing, or a row has a null id or text (names the file and row).
    """
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    for column in (id_column, text_column):
        if column not in names:
            raise ValueError(f"{path}: no column {column!r} (columns: {names})")
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=[id_column, text_column]):
        for pid, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            if pid is None or text is None:
                raise ValueError(f"{path}: row {row}: null {id_column if pid is None else text_column}")
            yield str(pid), str(text)
            row += 1


def count_passages(path: str | os.PathLike) -> int:
    """Number of passages in a parquet file (from its metadata) or a JSON Lines file (non-blank lines)."""
    if str(path).endswith(".parquet"):
        import pyarrow.parquet as pq
        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def iter_passages(path: str | os.PathLike, id_field: str | None = None,
                  text_field: str | None = None) -> Iterator[tuple[str, str]]:
    """Passages of a `.parquet` or JSON Lines file, with that format's default field names unless given."""
    if str(path).endswith(".parquet"):
        return iter_parquet_passages(path, id_field or "passage_id", text_field or "passage_content")
    return iter_jsonl_passages(path, id_field or "id", text_field or "text")


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


def _encode_shard(texts: Sequence[str], encode_fn: EncodeFn, batch_size: int,
                  bar) -> tuple[np.ndarray, np.ndarray]:
    pieces, lengths = [], []
    for batch in _batched(texts, batch_size):
        embeddings, keep = encode_fn(batch)
        embeddings, keep = np.asarray(embeddings), np.asarray(keep, bool)
        if embeddings.shape[:2] != keep.shape or embeddings.shape[0] != len(batch):
            raise ValueError(f"encode_fn returned embeddings {embeddings.shape} and keep {keep.shape} for "
                             f"{len(batch)} texts")
        pieces.append(embeddings[keep].astype(np.float16))
        lengths.append(keep.sum(axis=1))
        bar.update(len(batch))
    dim = pieces[0].shape[1] if pieces else 0
    return (np.concatenate(pieces) if pieces else np.zeros((0, dim), np.float16),
            np.concatenate(lengths) if lengths else np.zeros(0, np.int32))


def encode_to_shards(passages: Iterable[tuple[str, str]], out_dir: str | os.PathLike, encode_fn: EncodeFn, *,
                     shard_size: int = 10_000, batch_size: int = 64, process_index: int = 0,
                     process_count: int = 1, settings: Mapping[str, Any] | None = None,
                     total: int | None = None, progress: bool = True) -> EncodeSummary:
    """Encode this process's shards of a passage stream; skip shards already finished.

    Args:
        passages: (passage id, text) pairs in corpus order; every process must see the same stream.
        out_dir: shard directory.
        encode_fn: texts -> (embeddings [B, L, dim], keep [B, L] bool); only kept tokens are stored.
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
                    ids = [pid for pid, _ in chunk]
                    embeddings, lengths = _encode_shard([text for _, text in chunk], encode_fn, batch_size, bar)
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


def model_encode_fn(config, params, tokenizer, *, max_len: int = 384, batch_size: int = 64,
                    devices: Sequence | None = None, passage_keep: str = "punctuation_and_padding",
                    length_bucket: int | None = None) -> EncodeFn:
    """The MIRe passage encoder as an `EncodeFn`, data-parallel over this process's devices.

    Texts are tokenised with `tokenizer.encode_docs` (ColBERT passage conventions) and encoded with
    `mire_jax.encode_doc` by a `mire_jax.sharding.DataParallel` (fixed batches split over the devices, so one
    program is compiled per passage width).

    Args:
        config: the model's MIReConfig.
        params: its parameters.
        tokenizer: a `mire_jax.tokenizer.ColbertTokenizer`.
        max_len: passage length in word pieces (doc_maxlen).
        batch_size: texts per `encode_doc` call, split over the devices (rounded up to a multiple of their count).
        devices: devices to use; default `jax.local_devices()`.
        passage_keep: the tokens stored per passage, a `mire_jax.tokenizer.PASSAGE_KEEP_POLICIES` name:
            "punctuation_and_padding" (ColBERT's skiplist, the default) or "padding_only" (MIRe's
            published indexer keeps punctuation).
        length_bucket: None encodes every batch at `max_len`; a number trims the padding of each batch to its
            longest passage rounded up to a multiple of it (fewer wasted FLOPs, a few more compiled widths).
    """
    import functools

    import mire_jax
    from mire_jax.sharding import DataParallel
    from mire_jax.tokenizer import PASSAGE_KEEP_POLICIES

    if passage_keep not in PASSAGE_KEEP_POLICIES:
        raise ValueError(f"passage_keep must be one of {PASSAGE_KEEP_POLICIES}, got {passage_keep!r}")
    encoder = DataParallel(functools.partial(mire_jax.encode_doc, config), params, batch_size, devices=devices)

    def encode(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, mask, keep = tokenizer.encode_docs(list(texts), max_len=max_len, keep_policy=passage_keep)
        if length_bucket and len(texts):
            width = min(max_len, -(-int(mask.sum(axis=1).max()) // length_bucket) * length_bucket)
            ids, mask, keep = ids[:, :width], mask[:, :width], keep[:, :width]
        return encoder(ids, mask, keep)

    return encode
