"""Pieces both warm-ups share: reading their JSONL files, running the frozen BERT once over many texts, and
sampling batches whose items never share a target (so no in-batch "negative" is secretly a positive)."""
from __future__ import annotations

import functools
import os
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from mire_jax.config import MIReConfig
from mire_jax.files import iter_json_lines
from mire_jax.models.bert import Bert
from mire_jax.models.mire import DTYPES


def read_jsonl(path: str | os.PathLike, fields: Sequence[str]) -> list[dict]:
    """Records of a JSONL file, each checked to hold string values for `fields`.

    Raises:
      FileNotFoundError: no such file.
      ValueError: a line that is not a JSON object with those string fields (message names file and line).
    """
    path = os.fspath(path)
    records = []
    for _, where, record in iter_json_lines(path):
        for name in fields:
            if not isinstance(record.get(name), str) or not record[name]:
                raise ValueError(f"{where}: field {name!r} must be a non-empty string, "
                                 f"got {record.get(name)!r}")
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def as_pairs(items, fields: tuple[str, str], what: str) -> list[tuple[str, str]]:
    """A JSONL path or a sequence of 2-tuples -> list of (str, str); errors name the bad item by index."""
    if isinstance(items, (str, os.PathLike)):
        return [(r[fields[0]], r[fields[1]]) for r in read_jsonl(items, fields)]
    pairs = []
    for i, item in enumerate(items):
        if (not isinstance(item, (tuple, list)) or len(item) != 2
                or not all(isinstance(x, str) and x for x in item)):
            raise ValueError(f"{what} item {i}: expected a ({fields[0]}, {fields[1]}) pair of non-empty strings, "
                             f"got {item!r}")
        pairs.append((item[0], item[1]))
    if not pairs:
        raise ValueError(f"no {what} given")
    return pairs


def trim_padding(*arrays: np.ndarray, mask: np.ndarray, multiple: int = 8) -> tuple[np.ndarray, ...]:
    """Drop trailing columns that are padding in every row (rounded up to `multiple` columns).

    BERT's padded keys are masked out of attention, so the real tokens' hidden states do not change; only the
    cost and the cache size shrink.
    """
    used = int(mask.astype(bool).any(axis=0).nonzero()[0].max()) + 1 if mask.any() else 1
    width = min(mask.shape[1], -(-used // multiple) * multiple)
    return tuple(a[:, :width] for a in arrays)


@functools.partial(jax.jit, static_argnums=0)
def _bert_hidden(config: MIReConfig, bert_params, ids, mask):
    hidden, _ = Bert(config.bert, dtype=DTYPES[config.dtype]).apply({"params": bert_params}, ids, mask)
    return hidden.astype(jnp.float32)


def frozen_bert_hidden(config: MIReConfig, bert_params, ids: np.ndarray, mask: np.ndarray, *,
                       batch_size: int = 128, desc: str = "BERT", progress: bool = True) -> np.ndarray:
    """Last hidden states [N, L, H] float32 of the (frozen) BERT tower, run in equal batches of at most
    `batch_size` rows.

    The rows are split into as few batches as `batch_size` allows, all of one size (the last padded), so one
    compiled program serves every batch and little padding is computed.
    """
    n = ids.shape[0]
    batch_size = -(-n // -(-n // batch_size)) if n else 1
    out = np.zeros((n, ids.shape[1], config.bert.hidden_size), np.float32)
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        stop = min(start + batch_size, n)
        pad = batch_size - (stop - start)
        chunk_ids = np.pad(ids[start:stop], ((0, pad), (0, 0)))
        chunk_mask = np.pad(mask[start:stop], ((0, pad), (0, 0)))
        out[start:stop] = np.asarray(_bert_hidden(config, bert_params, chunk_ids, chunk_mask))[: stop - start]
    return out


def index_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """-> (distinct texts in first-seen order, index of each input text into them)."""
    position: dict[str, int] = {}
    index = np.array([position.setdefault(t, len(position)) for t in texts], np.int32)
    return list(position), index


def distinct_target_batches(targets: np.ndarray, batch_size: int, steps: int,
                            rng: np.random.Generator) -> Iterator[np.ndarray]:
    """`steps` batches of item indices [batch_size] in which no two items share a target.

    Each batch draws `batch_size` distinct targets, then one item of each at random, so in-batch negatives are
    true negatives even when several items (queries of one passage, views of one caption) share a target.
    """
    distinct = np.unique(targets)
    if batch_size > distinct.size:
        raise ValueError(f"batch_size {batch_size} exceeds the number of distinct targets ({distinct.size}); "
                         f"use a smaller batch or more data")
    members = {t: np.flatnonzero(targets == t) for t in distinct}
    for _ in range(steps):
        chosen = rng.choice(distinct, size=batch_size, replace=False)
        yield np.array([rng.choice(members[t]) for t in chosen], np.int32)


def load_images(image_root: str | os.PathLike, relpaths: Sequence[str], size: int, *,
                progress: bool = True) -> np.ndarray:
    """Decode images once into memory: CLIP-normalised NHWC float32 [N, size, size, 3].

    Raises:
      ImageError: a missing or undecodable file (the message names it).
    """
    from mire_jax.config import ImageProcessing
    from mire_jax.retrieval.images import preprocess_bytes, read_image_file

    out = np.zeros((len(relpaths), size, size, 3), np.float32)
    for i, rel in enumerate(tqdm(relpaths, desc="decoding images", unit="img", disable=not progress, leave=False)):
        path = os.path.join(os.fspath(image_root), rel)
        out[i] = preprocess_bytes(read_image_file(path), ImageProcessing(size=size), source=path)
    return out
