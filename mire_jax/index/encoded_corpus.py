"""An encoded corpus on disk, in shards: writer (atomic, resumable) and verified reader.

Layout of a shard directory `out/`:

    out/shard_000000/embeddings.npy   float16 [tokens, dim]: every passage's kept tokens, in passage order
    out/shard_000000/lengths.npy      int32 [passages]: kept tokens per passage
    out/shard_000000/ids.json         [passages] passage ids (strings)
    out/shard_000000/shard.json       counts, sha256 of the three files above, the encoding settings
    out/manifest.json                 every shard's counts and checksums, totals; written once all exist

Shard g holds passages g*shard_size ... (g+1)*shard_size - 1 of the input, so the concatenation of all
shards in index order is the input order, whichever process wrote each shard. A shard is written in a
hidden temporary directory (named as `mire_jax.files` names its temporaries) and renamed into place when
complete (`mire_jax.index.storage`): a directory named `shard_*` is always finished, and an interrupted run leaves
only a temporary directory that the next run removes.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from mire_jax.files import read_json
from mire_jax.index import storage
from mire_jax.index.storage import ShardError

FORMAT = "mire-jax-shards"
VERSION = 1
MANIFEST = storage.MANIFEST
SHARD_META = "shard.json"
EMBEDDINGS = "embeddings.npy"
LENGTHS = "lengths.npy"
IDS = "ids.json"
DATA_FILES = (EMBEDDINGS, LENGTHS, IDS)
_SHARD_RE = re.compile(r"^shard_(\d{6})$")


def shard_name(index: int) -> str:
    """Directory name of global shard `index`."""
    return f"shard_{index:06d}"


def write_shard(out_dir: str | os.PathLike, index: int, embeddings: np.ndarray, lengths: Sequence[int],
                ids: Sequence[str], settings: Mapping[str, Any] | None = None) -> dict:
    """Write one finished shard atomically (temporary directory, then rename).

    Args:
        out_dir: the shard directory (created if needed).
        index: global shard index.
        embeddings: [tokens, dim] kept-token embeddings of the shard's passages, concatenated in order.
        lengths: [passages] kept tokens per passage; must sum to `tokens`.
        ids: [passages] passage ids.
        settings: JSON-able description of how the embeddings were made (model, lengths, input); kept in
            shard.json so that a resumed run with other settings is refused.

    Returns:
        The shard's metadata (the content of shard.json).
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float16)
    lengths = np.asarray(lengths, dtype=np.int32)
    ids = [str(i) for i in ids]
    if embeddings.ndim != 2:
        raise ValueError(f"shard {index}: embeddings must be [tokens, dim], got shape {embeddings.shape}")
    if len(lengths) != len(ids):
        raise ValueError(f"shard {index}: {len(lengths)} lengths but {len(ids)} ids")
    if int(lengths.sum()) != embeddings.shape[0]:
        raise ValueError(f"shard {index}: lengths sum to {int(lengths.sum())} but there are "
                         f"{embeddings.shape[0]} token rows")

    def write(folder: pathlib.Path) -> dict:
        np.save(folder / EMBEDDINGS, embeddings)
        np.save(folder / LENGTHS, lengths)
        with open(folder / IDS, "w") as f:
            json.dump(ids, f)
        meta = {"name": shard_name(index), "index": index, "num_passages": len(ids),
                "num_tokens": int(embeddings.shape[0]), "dim": int(embeddings.shape[1]), "dtype": "float16",
                "files": storage.file_entries(folder, DATA_FILES), "settings": dict(settings or {})}
        storage.write_meta(folder / SHARD_META, meta)
        return meta

    # Another writer finishing the same shard first is no error: theirs stands.
    return storage.write_folder(out, shard_name(index), write, replace=False)


def finished_shard(out_dir: str | os.PathLike, index: int,
                   settings: Mapping[str, Any] | None = None) -> dict | None:
    """The metadata of shard `index` if it is finished, else None.

    Raises:
        ShardError: the shard exists but was made with other settings than `settings`.
    """
    path = pathlib.Path(out_dir) / shard_name(index) / SHARD_META
    if not path.exists():
        return None
    meta = storage.read_meta(path, ShardError)
    if settings is not None and meta.get("settings") != json.loads(json.dumps(dict(settings))):
        raise ShardError(f"{path}: made with settings {meta.get('settings')}, not {dict(settings)}; "
                         "use another output directory or remove the old shards")
    return meta


def remove_stale_temporaries(out_dir: str | os.PathLike, indices: Sequence[int] | None = None) -> list[str]:
    """Delete temporary directories left by interrupted writes of shards `indices` (None: all shards); only pass
    the shards this process owns when other processes may be writing into the same directory."""
    names = None if indices is None else [shard_name(i) for i in indices]
    return storage.remove_stale_temporaries(pathlib.Path(out_dir), names)


def list_shards(out_dir: str | os.PathLike) -> list[int]:
    """Indices of the finished shards present, sorted."""
    out = pathlib.Path(out_dir)
    found = []
    for child in out.iterdir() if out.exists() else []:
        match = _SHARD_RE.match(child.name)
        if match and (child / SHARD_META).exists():
            found.append(int(match.group(1)))
    return sorted(found)


def write_manifest(out_dir: str | os.PathLike, num_shards: int | None = None,
                   extra: Mapping[str, Any] | None = None) -> dict:
    """Collect every shard's metadata into manifest.json (atomically).

    Args:
        out_dir: the shard directory.
        num_shards: the expected number of shards; None takes 0..max found and still requires no gap.
        extra: more JSON-able fields for the manifest (e.g. the input file).

    Raises:
        ShardError: a shard is missing (named) or shards disagree on the embedding size.
    """
    out = pathlib.Path(out_dir)
    present = list_shards(out)
    expected = num_shards if num_shards is not None else (present[-1] + 1 if present else 0)
    missing = sorted(set(range(expected)) - set(present))
    if missing:
        raise ShardError(f"{out / shard_name(missing[0])}: missing ({len(missing)} shard(s) not finished)")
    shards = [storage.read_meta(out / shard_name(i) / SHARD_META, ShardError) for i in range(expected)]
    dims = {s["dim"] for s in shards}
    if len(dims) > 1:
        raise ShardError(f"{out}: shards disagree on the embedding size {sorted(dims)}")
    manifest = {
        "format": FORMAT, "version": VERSION, "dtype": "float16",
        "dim": dims.pop() if dims else None,
        "num_shards": expected,
        "num_passages": sum(s["num_passages"] for s in shards),
        "num_tokens": sum(s["num_tokens"] for s in shards),
        "shards": [{k: s[k] for k in ("name", "num_passages", "num_tokens", "files")} for s in shards],
        **dict(extra or {}),
    }
    storage.write_meta(out / MANIFEST, manifest)
    return manifest


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The manifest of a finished shard directory.

    Raises:
        ShardError: manifest.json is missing or not of this format.
    """
    return storage.read_meta(pathlib.Path(out_dir) / MANIFEST, ShardError, FORMAT)


def read_shard(out_dir: str | os.PathLike, entry: Mapping[str, Any], verify: bool = True,
               mmap: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One shard's (embeddings [tokens, dim] float16, lengths [passages] int32, ids) after checking it.

    Args:
        out_dir: the shard directory.
        entry: the shard's manifest entry.
        verify: compare sha256 checksums (sizes and counts are always checked).
        mmap: memory-map the embeddings instead of reading them.
    """
    folder = pathlib.Path(out_dir) / entry["name"]
    for fn in DATA_FILES:
        storage.check_file(folder / fn, entry["files"][fn], verify, ShardError)
    embeddings = np.load(folder / EMBEDDINGS, mmap_mode="r" if mmap else None)
    lengths = np.load(folder / LENGTHS)
    ids = read_json(folder / IDS, error=ShardError)
    if (embeddings.shape[0] != entry["num_tokens"] or len(lengths) != entry["num_passages"]
            or len(ids) != entry["num_passages"] or int(lengths.sum()) != entry["num_tokens"]):
        raise ShardError(f"{folder}: counts disagree with the manifest")
    return embeddings, lengths, ids


def read_corpus(out_dir: str | os.PathLike, verify: bool = True,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The whole encoded corpus: (embeddings [total_tokens, dim] float16, lengths [N] int32, ids [N])."""
    manifest = read_manifest(out_dir)
    embeddings = np.empty((manifest["num_tokens"], manifest["dim"] or 0), np.float16)
    lengths, ids, row = [], [], 0
    for entry in tqdm(manifest["shards"], desc="reading shards", unit="shard", disable=not progress):
        emb, lens, pids = read_shard(out_dir, entry, verify=verify, mmap=True)
        embeddings[row:row + emb.shape[0]] = emb
        row += emb.shape[0]
        lengths.append(lens)
        ids.extend(pids)
    if row != manifest["num_tokens"]:
        raise ShardError(f"{pathlib.Path(out_dir) / MANIFEST}: num_tokens {manifest['num_tokens']} but the "
                         f"shards hold {row}")
    lengths_arr = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
    return embeddings, lengths_arr.astype(np.int32), ids
