"""A LateInteractionIndex on disk: one folder per index shard, index.json, and a manifest written last.

    index/shard_000000/...   one index shard (`mire_jax.index.index_shard`: data, searcher, shard.json)
    index/index.json         format, version, settings (search settings as calibrated), calibration report,
                             counts, the shards (name, passages, tokens, first passage), build timings
    index/manifest.json      sha256 and size of index.json and of every shard's shard.json, written last:
                             an index without it is unfinished

Each shard.json holds the sha256 of its shard's files, so a missing or altered file anywhere is refused
by name. Version 1 indexes (one folder of embeddings.npy, offsets.npy, ids.json, scann/) still load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import uuid

from mire_jax import files
from mire_jax.index import distributed as dist
from mire_jax.index.config import IndexConfig
from mire_jax.index.index_shard import SHARD_META, IndexFileError, IndexShard, check_file
from mire_jax.index.shards import sha256_file

FORMAT = "mire-jax-late-interaction-index"
VERSION = 2
INDEX_META = "index.json"
MANIFEST = "manifest.json"


def shard_folder_name(number: int) -> str:
    return f"shard_{number:06d}"


def _read_json(path: pathlib.Path):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise IndexFileError(f"{path}: not valid JSON ({e})") from e


def save_shard_atomically(shard: IndexShard, ids, root: pathlib.Path, extra: dict | None = None) -> dict:
    """Save `shard` as root/<shard.name> through a temporary folder renamed into place when complete."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / shard.name
    tmp = root / f".{shard.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{files.TEMPORARY_SUFFIX}"
    try:
        meta = shard.save(tmp, ids, extra)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def remove_stale_temporaries(root: pathlib.Path, names) -> None:
    """Delete temporary folders left by interrupted saves of the shards `names`."""
    for child in root.iterdir() if root.exists() else []:
        if files.is_temporary(child.name) and child.is_dir() and child.name[1:].split(".", 1)[0] in names:
            shutil.rmtree(child, ignore_errors=True)


def write_root(root: pathlib.Path, config: IndexConfig, calibration, shard_metas: list[dict],
               build_info: dict | None = None) -> None:
    """index.json, then manifest.json (last): the shards' shard.json must already be in place."""
    manifest_path = root / MANIFEST
    manifest_path.unlink(missing_ok=True)
    meta = {"format": FORMAT, "version": VERSION, "config": dataclasses.asdict(config), "calibration": calibration,
            "num_passages": sum(m["num_passages"] for m in shard_metas),
            "num_tokens": sum(m["num_tokens"] for m in shard_metas),
            "dim": shard_metas[0]["dim"] if shard_metas else None,
            "shards": [{k: m[k] for k in ("name", "num_passages", "num_tokens", "first_passage")}
                       for m in shard_metas],
            "build": dict(build_info or {})}
    files.write_json(root / INDEX_META, meta, indent=1)
    names = [INDEX_META] + [f"{m['name']}/{SHARD_META}" for m in shard_metas]
    manifest = {"format": FORMAT, "version": VERSION,
                "files": {n: {"sha256": sha256_file(root / n), "bytes": (root / n).stat().st_size} for n in names}}
    with files.atomic_open(manifest_path, fsync=True) as f:
        json.dump(manifest, f, indent=1)


def save_index(index, directory) -> None:
    """Write every shard of `index` (all must be in this process) and the root files."""
    root = pathlib.Path(directory)
    if len(index.shards) == 0 or sum(s.num_passages for s in index.shards) != index.num_passages:
        raise ValueError("save needs every shard of the index in this process (save a distributed index "
                         "from the directory its build wrote)")
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    metas = []
    for shard in index.shards:
        ids = index.ids[shard.first_passage:shard.first_passage + shard.num_passages]
        same = getattr(shard, "folder", None) is not None and pathlib.Path(shard.folder).resolve() == (
            root / shard.name).resolve()
        if same:
            metas.append(IndexShard.read_meta(root / shard.name))
        else:
            metas.append(save_shard_atomically(shard, ids, root, getattr(shard, "extra", None)))
    keep = {m["name"] for m in metas}
    for child in root.iterdir():  # shards of an earlier, larger index saved here
        if child.is_dir() and child.name.startswith("shard_") and child.name not in keep:
            shutil.rmtree(child)
    for stale in ("embeddings.npy", "offsets.npy", "ids.json", "scann"):  # a version 1 index saved here
        path = root / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    write_root(root, index.config, index.calibration, metas, index.build_info)


def _check_manifest(root: pathlib.Path) -> dict:
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise IndexFileError(f"{manifest_path}: missing (not a saved index, or its save did not finish)")
    manifest = _read_json(manifest_path)
    if manifest.get("format") != FORMAT:
        raise IndexFileError(f"{manifest_path}: not a {FORMAT} manifest")
    return manifest


def load_index(cls, directory, verify: bool = True, layout: dist.ProcessLayout | None = None):
    """Open a saved index (see `LateInteractionIndex.load`)."""
    root = pathlib.Path(directory)
    layout = layout or dist.ProcessLayout()
    manifest = _check_manifest(root)
    if manifest.get("version", 1) == 1:
        return _load_version_1(cls, root, manifest, verify)
    entries = manifest["files"]
    check_file(root / INDEX_META, entries[INDEX_META], verify)
    meta = _read_json(root / INDEX_META)
    config = IndexConfig(**meta["config"])
    shards, ids, all_offsets = [], [], []
    for number, info in enumerate(meta["shards"]):
        folder = root / info["name"]
        key = f"{info['name']}/{SHARD_META}"
        if key not in entries:
            raise IndexFileError(f"{root / MANIFEST}: does not list {key}")
        check_file(folder / SHARD_META, entries[key], verify)
        own = layout.owns(number)
        shard, shard_ids, _ = IndexShard.load(folder, verify=verify, open_data=own)
        shard.folder = str(folder)
        if own:
            shards.append(shard)
        ids.extend(shard_ids)
        all_offsets.append(shard.offsets)
    from mire_jax.index.late_interaction import concat_offsets

    return cls(shards, ids, config, offsets=concat_offsets(all_offsets), calibration=meta.get("calibration"),
               layout=layout, build_info=meta.get("build"), dim=meta["dim"])


def _load_version_1(cls, root: pathlib.Path, manifest: dict, verify: bool):
    """A version 1 index: one folder holding every file, one ScaNN searcher (served by one process)."""
    import numpy as np

    for name, entry in manifest["files"].items():
        check_file(root / name, entry, verify)
    meta = _read_json(root / INDEX_META)
    known = {f.name for f in dataclasses.fields(IndexConfig)}
    config = IndexConfig(**{k: v for k, v in meta["config"].items() if k in known}, spherical=False,
                         calibrate=False)
    embeddings = np.load(root / "embeddings.npy", mmap_mode="r")
    offsets = np.load(root / "offsets.npy")
    with open(root / "ids.json") as f:
        ids = json.load(f)
    searcher = None
    if config.mode == "scann":
        import scann
        searcher = scann.scann_ops_pybind.load_searcher(str(root / "scann"))
    shard = IndexShard(embeddings, offsets, searcher, config.num_leaves if searcher is not None else 0, 0)
    return cls([shard], ids, config, offsets=offsets, calibration=None)
