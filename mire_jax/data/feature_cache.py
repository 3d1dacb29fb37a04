"""An on-disk store of frozen vision-tower features ([1+S, v] per image), keyed by image id.

Layout of a cache folder:
  meta.json                    feature shape, dtype, free-form metadata (e.g. which tower produced it)
  shard-<writer>-<seq>.npy     [n, 1+S, v] features of n images (float16 or float32)
  shard-<writer>-<seq>.ids.json  the n image ids of that shard, row order
  index.json                   {"shards": [...], "ids": {image_id: [shard number, row]}} (a convenience:
                               readers rebuild it from the .ids.json files when it is missing or stale)

Every file is written to a temporary name and renamed into place, and a shard counts as written only once
its `.ids.json` exists (written after its `.npy`): a crash leaves at most an orphan `.npy` that is ignored
and later overwritten. A rerun opens the same folder, sees the ids already stored and skips them. Several
writers (one per host) may fill one folder at once when each uses its own `writer_id`.

`fill_from_sources` runs a vision tower over every distinct image of dataset records into a cache
(the library side of train/cache_vision.py).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import tqdm

from mire_jax import files
from mire_jax.config import ImageProcessing, VisionConfig
from mire_jax.retrieval import images

FORMAT = "mire-vision-features/1"
_SHARD_IDS = re.compile(r"^shard-(?P<writer>[A-Za-z0-9_]+)-(?P<seq>\d+)\.ids\.json$")
DTYPES = ("float16", "float32")


class FeatureCacheError(ValueError):
    """The cache folder is inconsistent with what was asked of it."""


def _write_durably(path: pathlib.Path, write: Callable[[Any], Any]) -> None:
    """`write(binary file)` through `mire_jax.files.atomic_open`, synced to disk before the rename: a shard's
    ids file (its commit point) never names features that are not fully stored."""
    with files.atomic_open(path, "wb", fsync=True) as f:
        write(f)


def _write_json(path: pathlib.Path, obj: Any) -> None:
    _write_durably(path, lambda f: f.write(json.dumps(obj).encode("utf-8")))


def _committed_shards(directory: pathlib.Path) -> list[str]:
    """Base names (without extension) of the shards whose ids file exists, sorted."""
    names = []
    for p in directory.iterdir():
        m = _SHARD_IDS.match(p.name)
        if m:
            names.append(p.name[: -len(".ids.json")])
    return sorted(names)


def _read_meta(directory: pathlib.Path) -> dict | None:
    path = directory / "meta.json"
    if not path.exists():
        return None
    meta = files.read_json(path, error=FeatureCacheError)
    if meta.get("format") != FORMAT:
        raise FeatureCacheError(f"{path}: not a vision-feature cache of format {FORMAT} (got {meta.get('format')})")
    return meta


def _build_index(directory: pathlib.Path, shards: Sequence[str]) -> dict[str, tuple[int, int]]:
    index: dict[str, tuple[int, int]] = {}
    for s, name in enumerate(shards):
        ids = files.read_json(directory / f"{name}.ids.json", error=FeatureCacheError)
        for row, image_id in enumerate(ids):
            index.setdefault(image_id, (s, row))  # a duplicate (two writers raced) resolves to its first copy
    return index


class FeatureCacheWriter:
    """Appends features to a cache folder in shards of `shard_size` images; resumable.

    Args:
      directory: the cache folder (created if needed).
      feature_shape: the shape of one image's features, e.g. (1 + S, v).
      dtype: "float16" (half the disk, the default) or "float32".
      shard_size: images per shard file.
      writer_id: distinguishes concurrent writers (e.g. f"p{jax.process_index():05d}"); letters, digits, "_".
      metadata: stored in meta.json on creation (e.g. the tower config and checkpoint).

    Raises:
      FeatureCacheError: the folder holds a cache of another shape or dtype.
    """

    def __init__(self, directory: str | os.PathLike, *, feature_shape: Sequence[int], dtype: str = "float16",
                 shard_size: int = 1024, writer_id: str = "p00000", metadata: dict | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if not re.fullmatch(r"[A-Za-z0-9_]+", writer_id):
            raise ValueError(f"writer_id must be letters, digits or '_', got {writer_id!r}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.directory = pathlib.Path(os.fspath(directory))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.feature_shape = tuple(int(d) for d in feature_shape)
        self.dtype = np.dtype(dtype)
        self.shard_size = shard_size
        self.writer_id = writer_id
        meta = _read_meta(self.directory)
        if meta is None:
            _write_json(self.directory / "meta.json", {"format": FORMAT, "feature_shape": list(self.feature_shape),
                                                       "dtype": dtype, "metadata": metadata or {}})
        elif tuple(meta["feature_shape"]) != self.feature_shape or meta["dtype"] != dtype:
            raise FeatureCacheError(
                f"{self.directory}: holds features of shape {tuple(meta['feature_shape'])} {meta['dtype']}, "
                f"asked to write {self.feature_shape} {dtype}; use another folder or the same settings")
        shards = _committed_shards(self.directory)
        self._cached: set[str] = set(_build_index(self.directory, shards))
        own = [m for m in (_SHARD_IDS.match(f"{n}.ids.json") for n in shards) if m["writer"] == writer_id]
        self._next_seq = max((int(m["seq"]) for m in own), default=-1) + 1
        self._pending_ids: list[str] = []
        self._pending: list[np.ndarray] = []
        self.num_written = 0

    @property
    def cached_ids(self) -> frozenset[str]:
        """Ids stored in the folder (by any writer, as of opening) or written/buffered since."""
        return frozenset(self._cached)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._cached

    def add(self, ids: Sequence[str], features: np.ndarray) -> None:
        """Buffer the features of `ids` ([n, *feature_shape]); ids already cached are ignored."""
        features = np.asarray(features)
        if features.shape != (len(ids), *self.feature_shape):
            raise ValueError(f"features of shape {features.shape} for {len(ids)} ids; expected "
                             f"{(len(ids), *self.feature_shape)}")
        for image_id, feats in zip(ids, features):
            if image_id in self._cached:
                continue
            self._cached.add(image_id)
            self._pending_ids.append(image_id)
            self._pending.append(feats.astype(self.dtype))
            if len(self._pending_ids) >= self.shard_size:
                self.flush()

    def flush(self) -> None:
        """Write the buffered features as one shard (nothing when the buffer is empty)."""
        if not self._pending_ids:
            return
        name = f"shard-{self.writer_id}-{self._next_seq:06d}"
        array = np.stack(self._pending)
        _write_durably(self.directory / f"{name}.npy", lambda f: np.save(f, array, allow_pickle=False))
        _write_json(self.directory / f"{name}.ids.json", self._pending_ids)  # the commit point of the shard
        self.num_written += len(self._pending_ids)
        self._next_seq += 1
        self._pending_ids, self._pending = [], []

    def close(self, write_index: bool = True) -> None:
        """Flush, then (by default) write index.json over every committed shard in the folder."""
        self.flush()
        if write_index:
            write_index_file(self.directory)

    def __enter__(self) -> "FeatureCacheWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an error, keep what is complete (the finished shards) and leave the index as it was.
        if exc_type is None:
            self.close()
        else:
            self.flush()


def write_index_file(directory: str | os.PathLike) -> None:
    """(Re)write index.json from the committed shards of a cache folder."""
    directory = pathlib.Path(os.fspath(directory))
    shards = _committed_shards(directory)
    index = _build_index(directory, shards)
    _write_json(directory / "index.json", {"shards": shards, "ids": {k: list(v) for k, v in index.items()}})


def check_vision_tower(directory: str | os.PathLike, vision: VisionConfig) -> None:
    """Refuses (FeatureCacheError, one line) a cache whose features another vision tower made than `vision`: its
    feature shape is not [1 + S, v] of `vision`, or the tower config recorded in its metadata differs (a CLIP and
    a SigLIP tower can give features of one shape). A folder without a cache yet passes."""
    directory = pathlib.Path(os.fspath(directory))
    meta = _read_meta(directory) if directory.is_dir() else None
    if meta is None:
        return
    want = (1 + vision.num_patches, vision.hidden_size)
    if tuple(meta["feature_shape"]) != want:
        raise FeatureCacheError(f"{directory}: holds vision features of shape {tuple(meta['feature_shape'])}, the "
                                f"model's {vision.model_type} tower gives {want}; cache its features into another "
                                "folder (train/cache_vision.py)")
    recorded = meta.get("metadata", {}).get("vision")
    if isinstance(recorded, Mapping):
        made_by = VisionConfig.from_dict(recorded)  # caches made before SigLIP record no model_type: CLIP
        differ = [f"{f.name} {getattr(made_by, f.name)!r} != {getattr(vision, f.name)!r}"
                  for f in dataclasses.fields(VisionConfig) if getattr(made_by, f.name) != getattr(vision, f.name)]
        if differ:
            raise FeatureCacheError(f"{directory}: holds the features of another vision tower than the model's "
                                    f"({', '.join(differ)}); cache its features into another folder "
                                    "(train/cache_vision.py)")


class FeatureCache:
    """Read side: `cache[image_id]` -> features [1+S, v] (memory-mapped shards, opened lazily).

    Safe to pickle into data-loader worker processes (open memory maps are not pickled).
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = pathlib.Path(os.fspath(directory))
        meta = _read_meta(self.directory) if self.directory.is_dir() else None
        if meta is None:
            raise FileNotFoundError(f"no vision-feature cache in {self.directory} (meta.json missing); "
                                    "create it with train/cache_vision.py")
        self.feature_shape = tuple(meta["feature_shape"])
        self.dtype = np.dtype(meta["dtype"])
        self.metadata = meta.get("metadata", {})
        self._shards = _committed_shards(self.directory)
        self._index = self._load_index()
        self._arrays: dict[int, np.ndarray] = {}

    def _load_index(self) -> dict[str, tuple[int, int]]:
        path = self.directory / "index.json"
        if path.exists():
            stored = files.read_json(path, error=FeatureCacheError)
            if stored.get("shards") == self._shards:
                return {k: (v[0], v[1]) for k, v in stored["ids"].items()}
        return _build_index(self.directory, self._shards)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._index

    def ids(self) -> Iterable[str]:
        return self._index.keys()

    def _shard(self, s: int) -> np.ndarray:
        array = self._arrays.get(s)
        if array is None:
            array = np.load(self.directory / f"{self._shards[s]}.npy", mmap_mode="r")
            self._arrays[s] = array
        return array

    def __getitem__(self, image_id: str) -> np.ndarray:
        try:
            s, row = self._index[image_id]
        except KeyError:
            raise KeyError(f"image {image_id!r} is not in the vision-feature cache {self.directory}") from None
        return self._shard(s)[row]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state


# ---------------------------------------------------------------------------------------------------------------
# Filling a cache from dataset records (what train/cache_vision.py runs).

@dataclasses.dataclass
class FillReport:
    """What `fill_from_sources` did on this process."""
    num_images: int = 0          # distinct image ids in the sources
    num_assigned: int = 0        # of those, the ones this process is responsible for
    num_already_cached: int = 0  # assigned ids found in the cache at start (skipped)
    num_written: int = 0         # features written by this run
    skipped: list = dataclasses.field(default_factory=list)  # (image_id, reason) under the "skip" policy


def _read_records(source, indices: Sequence[int]) -> list:
    getitems = getattr(source, "__getitems__", None)
    return list(getitems(list(indices))) if getitems is not None else [source[i] for i in indices]


def unique_images(sources: Mapping[str, Any], *, read_threads: int = 8, chunk: int = 1024,
                  progress: bool = True) -> dict[str, tuple[str, int]]:
    """image_id -> (split, index of its first record) over every record of `sources` (split -> data source)."""
    first: dict[str, tuple[str, int]] = {}
    total = sum(len(s) for s in sources.values())
    with tqdm.tqdm(total=total, desc="scanning records", unit="rec", disable=not progress) as bar, \
            concurrent.futures.ThreadPoolExecutor(max(1, read_threads)) as pool:
        for split, source in sources.items():
            starts = range(0, len(source), chunk)
            for start, records in zip(starts, pool.map(
                    lambda s, src=source: _read_records(src, range(s, min(s + chunk, len(src)))), starts)):
                for offset, record in enumerate(records):
                    image_id = _as_str(record["image_id"])
                    first.setdefault(image_id, (split, start + offset))
                bar.update(len(records))
    return first


def _as_str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_pixels(source, index: int, image_id: str, image: ImageProcessing, image_root: str | None) -> np.ndarray:
    record = source[index]
    data = record.get("image") or b""
    if data:
        return images.preprocess_bytes(data, image, source=f"image {image_id} (embedded in record "
                                                                 f"{_as_str(record.get('id'))!r})")
    if image_root is None:
        raise images.ImageError(f"image {image_id} (record {_as_str(record.get('id'))!r}): no bytes in the record "
                                "and no image_root to read it from")
    path = os.path.join(image_root, image_id)
    return images.preprocess_bytes(images.read_image_file(path), image,
                                   source=f"image {path} (record {_as_str(record.get('id'))!r})")


def fill_from_sources(directory: str | os.PathLike, sources: Mapping[str, Any],
                      encode_fn: Callable[[np.ndarray], Any], *, feature_shape: Sequence[int], image: ImageProcessing,
                      dtype: str = "float16", shard_size: int = 1024, batch_size: int = 64,
                      image_root: str | None = None, image_policy: str = "fail", process_index: int = 0,
                      process_count: int = 1, read_threads: int = 8, metadata: dict | None = None,
                      progress: bool = True) -> FillReport:
    """Run `encode_fn` (pixels [B, S, S, 3] float32 -> features [B, *feature_shape]) once over every distinct
    image of `sources` that the cache does not hold yet, and store the results.

    Images are shared among processes by position in the sorted id list (process p takes p, p + n, ...),
    so several hosts can fill one cache at once. Batches always have `batch_size` rows (the last one is
    zero-padded, padding rows are dropped) so `encode_fn` compiles once. The next batch is read and
    preprocessed in `read_threads` threads while the current one is encoded.

    Args:
      image_policy: "fail" raises on a missing/undecodable image (naming it and its record); "skip" leaves
        it out of the cache (the training pipeline then applies its own policy to its records).
    """
    if image_policy not in ("fail", "skip"):
        raise ValueError(f"image_policy must be 'fail' or 'skip', got {image_policy!r}")
    report = FillReport()
    first = unique_images(sources, read_threads=read_threads, progress=progress)
    report.num_images = len(first)
    assigned = sorted(first)[process_index::process_count]
    report.num_assigned = len(assigned)
    writer = FeatureCacheWriter(directory, feature_shape=feature_shape, dtype=dtype, shard_size=shard_size,
                                writer_id=f"p{process_index:05d}", metadata=metadata)
    todo = [i for i in assigned if i not in writer]
    report.num_already_cached = len(assigned) - len(todo)
    chunks = [todo[s: s + batch_size] for s in range(0, len(todo), batch_size)]

    def load(image_id: str):
        split, index = first[image_id]
        try:
            return _load_pixels(sources[split], index, image_id, image, image_root)
        except images.ImageError as e:
            if image_policy == "fail":
                raise
            return e

    with concurrent.futures.ThreadPoolExecutor(max(1, read_threads)) as pool, \
            tqdm.tqdm(total=len(todo), desc="caching vision features", unit="img", disable=not progress) as bar:
        pending = [pool.submit(load, i) for i in chunks[0]] if chunks else []
        for k, ids in enumerate(chunks):
            loaded = [f.result() for f in pending]
            pending = [pool.submit(load, i) for i in chunks[k + 1]] if k + 1 < len(chunks) else []
            good = [(i, x) for i, x in zip(ids, loaded) if not isinstance(x, Exception)]
            report.skipped += [(i, str(x)) for i, x in zip(ids, loaded) if isinstance(x, Exception)]
            if good:
                pixels = np.zeros((batch_size, image.size, image.size, 3), np.float32)
                pixels[: len(good)] = np.stack([x for _, x in good])
                features = np.asarray(encode_fn(pixels))[: len(good)]
                writer.add([i for i, _ in good], features)
            bar.update(len(ids))
    writer.close(write_index=process_index == 0)
    report.num_written = writer.num_written
    return report


def vision_encoder(config, params, batch_size: int = 64, *, devices: Sequence | None = None):
    """The frozen vision tower as `fill_from_sources`'s `encode_fn`: pixels [B, S, S, 3] -> features [B, 1+P, v],
    data-parallel over this process's devices (a `mire_jax.retrieval.data_parallel.DataParallel`). Give `fill_from_sources`
    its `batch_size` (the one asked for, rounded up to a multiple of the device count)."""
    import functools

    import mire_jax
    from mire_jax.retrieval.data_parallel import DataParallel
    return DataParallel(functools.partial(mire_jax.encode_vision, config), params, batch_size, devices=devices)
