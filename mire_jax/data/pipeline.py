"""The training input pipeline on grain: records -> fixed-shape numpy batches, resumable.

  record indices   this process's share of each global batch of a per-epoch permutation (seed + epoch), see
                   `EpochShardIndices`
  -> examples      read the record, check it, decode + CLIP-preprocess its image (or look its vision
                   features up in the cache), in `read_threads` threads
                   (optionally in `worker_count` processes; the output does not depend on their number)
  -> batches       drop skipped records (counted), tokenise queries and passages per batch, stack
  -> prefetch      a thread keeps `batch_prefetch` ready batches

A batch is a dict of numpy arrays: q_ids, q_mask [B, Lq] int32; d_ids, d_mask [B, Ld] int32; d_keep
[B, Ld] bool; and pixels [B, H, W, 3] float32 (CLIP-normalised NHWC) or vision_features [B, 1+S, v]
float32; with a text cache also q_text [B, Lq, dim] and d_text [B, Ld, dim] float32. The iterator's `get_state()` is a JSON-able dict; `set_state()` on a fresh iterator of the same
pipeline (same config, including worker_count) resumes with exactly the batches that would have followed.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from mire_jax.config import ImageProcessing
from mire_jax.data.feature_cache import FeatureCache
from mire_jax.retrieval import images

log = logging.getLogger(__name__)

IMAGE_POLICIES = ("fail", "skip")
_SKIPPED_KEY = "_num_skipped"


class RecordError(ValueError):
    """A record cannot be used (missing field, empty question); the message names the record."""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How to turn records into batches.

    Attributes:
      batch_size: examples per batch on THIS process (the global batch is batch_size * process_count).
      accum_steps: micro-batches per global batch: this process's batch holds its share of each micro-batch,
        micro-batch after micro-batch (the training step's layout).
      image: how images become pixels (the vision tower's preprocessing).
      query_maxlen, doc_maxlen: fixed token lengths of queries and passages.
      attend_to_mask_tokens: query [MASK] padding attends (published training behaviour).
      use_instruction: query text = instruction + " " + question (M2KR's optional prompt).
      seed: shuffling seed (every process must use the same one).
      shuffle: permute the records (False: file order, e.g. for evaluation).
      reshuffle_each_epoch: a new permutation each epoch (False: the first epoch's order every epoch, as the
        published training runs, whose sampler's `set_epoch` call is commented out).
      num_epochs: passes over the data; None repeats forever.
      image_policy: "fail" (raise naming the record id and the image path) or "skip" (drop the record and
        count it, see `BatchIterator.num_skipped`) for a missing or undecodable image.
      image_root: where `image_id` paths are resolved when the records carry no image bytes.
      vision_cache_dir: read cached vision features (by image id) instead of decoding pixels.
      text_cache_dir: also read the frozen text tower's outputs of each record (`mire_jax.data.text_cache`):
        the batch then carries q_text [B, Lq, dim] and d_text [B, Ld, dim].
      read_threads, read_buffer: threads reading and preprocessing records, and their element buffer.
      worker_count, worker_buffer_size: worker processes (0 = none) and the batches each keeps ready.
      batch_prefetch: ready batches a background thread keeps in the main process (0 = none).
      with_record_ids: add "id" (a numpy str array) to each batch, for debugging and tests.
    """
    batch_size: int
    accum_steps: int = 1
    image: ImageProcessing = ImageProcessing()
    query_maxlen: int = 32
    doc_maxlen: int = 220
    attend_to_mask_tokens: bool = True
    use_instruction: bool = False
    seed: int = 0
    shuffle: bool = True
    reshuffle_each_epoch: bool = True
    num_epochs: int | None = None
    image_policy: str = "fail"
    image_root: str | None = None
    vision_cache_dir: str | None = None
    text_cache_dir: str | None = None
    read_threads: int = 8
    read_buffer: int = 64
    worker_count: int = 0
    worker_buffer_size: int = 2
    batch_prefetch: int = 2
    with_record_ids: bool = False

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.accum_steps < 1 or self.batch_size % self.accum_steps:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of accum_steps {self.accum_steps}")
        if self.image_policy not in IMAGE_POLICIES:
            raise ValueError(f"image_policy must be one of {IMAGE_POLICIES}, got {self.image_policy!r}")
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None, got {self.num_epochs}")


class EpochShardIndices(grain.MapDataset):
    """Record indices of one process: epoch e uses permutation P_e of all N records (from `seed` and e; P_0 for
    every epoch unless `reshuffle`), cut into global batches of `global_batch` consecutive positions (the at most
    global_batch - 1 left over are not used that epoch). Each global batch is a run of chunks of `chunk` * n
    positions (one chunk per micro-batch), and process p of n takes positions [p * chunk, (p + 1) * chunk) of
    every chunk. So a global batch holds the same records in the same order however many processes read it, and
    every process reads the same count."""

    def __init__(self, num_records: int, *, seed: int, shuffle: bool, process_index: int, process_count: int,
                 num_epochs: int | None, chunk: int = 1, global_batch: int | None = None, reshuffle: bool = True):
        super().__init__()
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        global_batch = global_batch or chunk * process_count
        if chunk < 1 or global_batch % (chunk * process_count):
            raise ValueError(f"a global batch of {global_batch} does not split into chunks of {chunk} x "
                             f"{process_count} processes")
        if num_records < global_batch:
            raise ValueError(f"{num_records} records are fewer than one global batch of {global_batch}")
        self._n, self._seed, self._shuffle, self._reshuffle = num_records, int(seed), shuffle, reshuffle
        self._p, self._count, self._chunk = process_index, process_count, chunk
        self._per_epoch = (num_records // global_batch) * global_batch // process_count
        self._length = sys.maxsize if num_epochs is None else self._per_epoch * num_epochs

    @property
    def per_epoch(self) -> int:
        return self._per_epoch

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return f"EpochShardIndices(n={self._n}, process={self._p}/{self._count}, chunk={self._chunk})"

    def _epoch_seed(self, epoch: int) -> int:
        # SeedSequence mixes (seed, epoch) with a fixed, documented algorithm: stable across numpy versions.
        return int(np.random.SeedSequence([self._seed, epoch if self._reshuffle else 0]).generate_state(1)[0])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} elements")
        epoch, k = divmod(index, self._per_epoch)
        chunk, within = divmod(k, self._chunk)
        position = chunk * self._chunk * self._count + self._p * self._chunk + within
        if not self._shuffle or self._n == 1:
            return position
        return int(grain.experimental.index_shuffle(position, max_index=self._n - 1,
                                                    seed=self._epoch_seed(epoch), rounds=4))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def record_texts(record: Mapping, index: int, use_instruction: bool = False) -> tuple[str, str, str]:
    """-> (record id, query text, passage text) of a record, checked; `RecordError` names the record."""
    record_id = _text(record["id"]) if record.get("id") is not None else "<no id>"
    name = f"record {index} (id {record_id!r})"
    for key in ("id", "question", "document", "image_id"):
        if record.get(key) is None:
            raise RecordError(f"{name}: missing required field {key!r}")
    question, document = _text(record["question"]).strip(), _text(record["document"]).strip()
    if not question:
        raise RecordError(f"{name}: empty question")
    if not document:
        raise RecordError(f"{name}: empty document")
    if use_instruction and record.get("instruction"):
        question = f"{_text(record['instruction']).strip()} {question}"
    return record_id, question, document


class LoadExample:
    """Record index -> checked example with pixels or vision features (and the cached text-tower outputs when
    the run reads them); a skip marker under the "skip" policy."""

    def __init__(self, source, config: PipelineConfig):
        self._source = source
        self._cfg = config
        self._cache = FeatureCache(config.vision_cache_dir) if config.vision_cache_dir else None
        self._text = None
        if config.text_cache_dir:
            self._text = tuple(FeatureCache(os.path.join(config.text_cache_dir, part))
                               for part in ("queries", "passages"))

    def __call__(self, index: int) -> dict:
        record = self._source[index]
        record_id, question, document = record_texts(record, index, self._cfg.use_instruction)
        image_id = _text(record["image_id"])
        example = {"id": record_id, "question": question, "document": document}
        if self._text is not None:
            queries, passages = self._text
            if record_id not in queries or record_id not in passages:
                raise RecordError(f"record {index} (id {record_id!r}) has no text features in the cache "
                                  f"{self._cfg.text_cache_dir}")
            example["q_text"], example["d_text"] = (np.asarray(queries[record_id], np.float32),
                                                    np.asarray(passages[record_id], np.float32))
        try:
            if self._cache is not None:
                example["vision_features"] = self._cached_features(image_id)
            else:
                example["pixels"] = self._pixels(record, image_id)
        except images.ImageError as e:
            if self._cfg.image_policy == "skip":
                log.warning("skipping record %r (index %d): %s", record_id, index, e)
                return {_SKIPPED_KEY: True}
            raise images.ImageError(f"record {record_id!r} (index {index}): {e}") from e
        return example

    def _cached_features(self, image_id: str) -> np.ndarray:
        if image_id not in self._cache:
            raise images.ImageError(f"image {image_id!r} has no features in the vision cache "
                                    f"{self._cache.directory}")
        return np.asarray(self._cache[image_id], dtype=np.float32)

    def _pixels(self, record: Mapping, image_id: str) -> np.ndarray:
        data = record.get("image") or b""
        if data:
            where = f"image {image_id} (embedded)"
        elif self._cfg.image_root:
            path = os.path.join(self._cfg.image_root, image_id)
            data, where = images.read_image_file(path), f"image {path}"
        else:
            raise images.ImageError(f"image {image_id}: no bytes in the record (missing when the dataset was "
                                    "built?) and no image_root to read it from")
        return images.preprocess_bytes(data, self._cfg.image, source=where)


class Collate:
    """Examples -> one batch: tokenise the texts (whole batch at once), stack the image arrays."""

    def __init__(self, tokenizer, config: PipelineConfig):
        self._tok = tokenizer
        self._cfg = config

    def __call__(self, examples: Sequence[dict]) -> dict[str, np.ndarray]:
        q_ids, q_mask = self._tok.encode_queries([e["question"] for e in examples], max_len=self._cfg.query_maxlen,
                                                 attend_to_mask_tokens=self._cfg.attend_to_mask_tokens)
        d_ids, d_mask, d_keep = self._tok.encode_docs([e["document"] for e in examples], max_len=self._cfg.doc_maxlen)
        batch = {"q_ids": q_ids.astype(np.int32), "q_mask": q_mask.astype(np.int32),
                 "d_ids": d_ids.astype(np.int32), "d_mask": d_mask.astype(np.int32), "d_keep": d_keep.astype(bool)}
        image_key = "vision_features" if "vision_features" in examples[0] else "pixels"
        for key in (image_key, "q_text", "d_text"):
            if key in examples[0]:
                batch[key] = np.stack([e[key] for e in examples]).astype(np.float32)
        if self._cfg.with_record_ids:
            batch["id"] = np.array([e["id"] for e in examples])
        batch[_SKIPPED_KEY] = np.asarray(sum(e.get(_SKIPPED_KEY, 0) for e in examples), np.int64)
        return batch


class _DropSkipped(grain.IterDataset):
    """Drops the markers of records skipped by the image policy and stamps how many were dropped onto the
    next kept example, so that the count travels with the batches."""

    def __init__(self, parent: grain.IterDataset):
        super().__init__(parent)

    def __iter__(self) -> grain.DatasetIterator:
        return _DropSkippedIterator(self._parent.__iter__())


class _DropSkippedIterator(grain.DatasetIterator):

    def __init__(self, parent: grain.DatasetIterator):
        super().__init__(parent)
        self._pending = 0

    def __next__(self):
        while True:
            element = next(self._parent)
            if _SKIPPED_KEY not in element:
                element[_SKIPPED_KEY], self._pending = self._pending, 0
                return element
            self._pending += 1

    def get_state(self) -> dict:
        return {"parent": self._parent.get_state(), "pending_skipped": self._pending}

    def set_state(self, state: dict) -> None:
        self._parent.set_state(state["parent"])
        self._pending = int(state["pending_skipped"])


class BatchIterator:
    """Iterator over batches with a saveable position and the count of records skipped so far.

    `num_skipped` counts the records dropped by the "skip" image policy before the records of the batches
    yielded so far (each skip is also logged with its reason). Skips after the last complete batch of a
    finite run are not counted: those records would have fallen into the dropped remainder anyway.
    """

    def __init__(self, iterator: grain.DatasetIterator):
        self._it = iterator
        self.num_skipped = 0

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._it)
        self.num_skipped += int(batch.pop(_SKIPPED_KEY))
        return batch

    def get_state(self) -> dict:
        """A JSON-able position: restoring it replays exactly the batches that follow."""
        return {"grain": self._it.get_state(), "num_skipped": self.num_skipped}

    def set_state(self, state: dict) -> None:
        self._it.set_state(state["grain"])
        self.num_skipped = int(state["num_skipped"])

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


def _ensure_absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside an absl app (tests, notebooks) nothing parsed them."""
    from absl import flags
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class _Subset:
    """The records of `source` at `indices` (e.g. a training split without its held-out records)."""

    def __init__(self, source, indices: Sequence[int]):
        self._source, self._indices = source, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int):
        return self._source[int(self._indices[index])]


def holdout_split(num_records: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (training record indices, held-out record indices), both sorted: `holdout` records drawn at random
    (from `seed`, the same on every host) are kept out of training for validation."""
    if not 0 <= holdout < num_records:
        raise ValueError(f"cannot hold out {holdout} of {num_records} records")
    held = np.sort(np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).permutation(num_records)[:holdout])
    return np.setdiff1d(np.arange(num_records), held), held


class InputPipeline:
    """Batches of (image + question, passage) pairs for one process; `iter(pipeline)` starts from the
    beginning (use `BatchIterator.set_state` to resume)."""

    def __init__(self, source, tokenizer, config: PipelineConfig, *, process_index: int | None = None,
                 process_count: int | None = None, record_indices: Sequence[int] | None = None):
        if process_index is None or process_count is None:
            import jax  # only the defaults need it
            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        self.config = config
        if record_indices is not None:
            source = _Subset(source, record_indices)
        self.indices = EpochShardIndices(len(source), seed=config.seed, shuffle=config.shuffle,
                                         process_index=process_index, process_count=process_count,
                                         num_epochs=config.num_epochs, chunk=config.batch_size // config.accum_steps,
                                         global_batch=config.batch_size * process_count,
                                         reshuffle=config.reshuffle_each_epoch)
        self._load = LoadExample(source, config)
        self._collate = Collate(tokenizer, config)

    @property
    def records_per_epoch(self) -> int:
        """Records this process reads per epoch (before any skipping)."""
        return self.indices.per_epoch

    def dataset(self) -> grain.IterDataset:
        cfg = self.config
        ds = self.indices.map(self._load)
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.read_buffer))
        if cfg.worker_count > 0:
            # Workers read and preprocess interleaved slices of the examples and grain merges them back in
            # order; skipping and batching come after, so the batches do not depend on the worker count.
            _ensure_absl_flags_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count,
                                                             per_worker_buffer_size=cfg.worker_buffer_size))
        ds = _DropSkipped(ds)
        ds = ds.batch(cfg.batch_size, drop_remainder=True, batch_fn=self._collate)
        if cfg.batch_prefetch > 0:
            ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=cfg.batch_prefetch)
        return ds

    def __iter__(self) -> BatchIterator:
        return BatchIterator(iter(self.dataset()))


def make_pipeline(source, tokenizer, config: PipelineConfig, **kwargs) -> InputPipeline:
    """The input pipeline over a random-access `source` (e.g. `builder.as_data_source()[split]`, or any
    sequence of record dicts with id, question, document, image_id and image bytes) and a
    `ColbertTokenizer`. `process_index` / `process_count` default to jax's; `record_indices` restricts the
    source to those records."""
    return InputPipeline(source, tokenizer, config, **kwargs)


__all__ = ["BatchIterator", "Collate", "EpochShardIndices", "IMAGE_POLICIES", "InputPipeline", "LoadExample",
           "PipelineConfig", "RecordError", "holdout_split", "make_pipeline", "record_texts"]
