"""What every file of an encoded corpus and of an index rests on: checksums, the JSON manifests that list them, and
folders written whole.

A folder of data (an encoded-corpus shard, an index shard) is written under a hidden temporary name and renamed into
place when complete, so a folder with its final name is always whole and an interrupted run leaves only a temporary
folder (named as `mire_jax.files` names its temporaries) that the next run removes. Its metadata lists the sha256 and
size of every file, and a manifest written last lists the metadata files: anything missing or altered is refused by
name.

The metadata of a finished index can be replaced in place (a recalibration rewrites its settings): `replace_metas` writes
the new files and the new manifest beside the old ones, then renames them into place, the manifest last, and
`read_manifest` reads whichever manifest the files agree with, so that neither a reader nor a crash ever meets a mix.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import uuid
from typing import Any, Callable, Iterable, Mapping, TypeVar

from mire_jax import files

MANIFEST = "manifest.json"
PENDING = ".next"  # suffix of the files of a replacement not yet renamed into place (`replace_metas`)
T = TypeVar("T")


class IndexFileError(ValueError):
    """A saved index file is missing or altered; the message names the file."""


class IndexFormatError(IndexFileError):
    """A saved index of another format version (an older mire-jax wrote it): it has to be built again."""


class ShardError(ValueError):
    """An encoded-corpus shard or its manifest is missing, inconsistent or altered; the message names the file."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entries(folder: pathlib.Path, names: Iterable[str]) -> dict[str, dict]:
    """{name: {"sha256", "bytes"}} of files of `folder`, as metadata and manifests list them."""
    return {n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size} for n in names}


def check_file(path: pathlib.Path, expected: Mapping[str, Any], verify: bool,
               error: type[Exception] = IndexFileError) -> None:
    """Raise `error` naming `path` if it is missing, of another size than `expected` says, or (with `verify`) of
    another sha256."""
    if not path.exists():
        raise error(f"{path}: missing")
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise error(f"{path}: {size} bytes, the manifest says {expected['bytes']} (altered)")
    if verify and sha256_file(path) != expected["sha256"]:
        raise error(f"{path}: sha256 differs from the manifest (altered)")


def read_meta(path: pathlib.Path, error: type[Exception] = IndexFileError, format: str | None = None) -> dict:
    """A metadata or manifest JSON file; `error` naming it when it is missing, not JSON, or not of `format`."""
    if not path.exists():
        raise error(f"{path}: missing")
    meta = files.read_json(path, error=error)
    if format is not None and (not isinstance(meta, dict) or meta.get("format") != format):
        raise error(f"{path}: not a {format} file")
    return meta


def write_meta(path: pathlib.Path, meta: Any) -> None:
    """Metadata or a manifest, synced before its rename: a file that exists is whole."""
    files.write_json(path, meta, indent=1, fsync=True)


def write_folder(root: pathlib.Path, name: str, write: Callable[[pathlib.Path], T], *, replace: bool) -> T:
    """`write(folder)` into a temporary folder of `root`, then renamed to `root/name`; returns what `write` returned.

    `replace`: an existing `root/name` is replaced; otherwise a folder that another writer finished first stands
    (the same shard written by two processes) and this one is dropped.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{files.TEMPORARY_SUFFIX}"
    tmp.mkdir()
    try:
        result = write(tmp)
        if replace and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if replace or not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def remove_stale_temporaries(root: pathlib.Path, names: Iterable[str] | None = None) -> list[str]:
    """Delete the temporary folders that interrupted writes of the folders `names` (None: of any folder) left in
    `root`; only pass a process's own folders when other processes may be writing into `root`. -> names removed."""
    wanted = None if names is None else set(names)
    removed = []
    for child in root.iterdir() if root.exists() else []:
        if not (files.is_temporary(child.name) and child.is_dir()):
            continue
        if wanted is None or child.name[1:].split(".", 1)[0] in wanted:  # ".shard_000003.<random>.partial"
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    return removed


def _entry(manifest: Mapping[str, Any], name: str, path: pathlib.Path, error: type[Exception]) -> Mapping[str, Any]:
    files_ = manifest.get("files") if isinstance(manifest, Mapping) else None
    if not isinstance(files_, Mapping) or name not in files_:
        raise error(f"{path}: does not list {name}")
    return files_[name]


def read_manifest(root: pathlib.Path, first: str, verify: bool, error: type[Exception] = IndexFileError) -> dict:
    """The manifest of `root` that its file `first` (the metadata read next) agrees with.

    That is manifest.json, except while a replacement (`replace_metas`) is renaming its files or after one was
    interrupted there: then `first` may already be the new file, which the pending manifest lists, or the replacement
    may have finished between two reads. Raises `error` naming the file when no manifest agrees.
    """
    root = pathlib.Path(root)
    path = root / MANIFEST
    manifest = read_meta(path, error)
    try:
        check_file(root / first, _entry(manifest, first, path, error), verify, error)
        return manifest
    except error as mismatch:
        for candidate in (root / (MANIFEST + PENDING), path):
            if not candidate.exists():
                continue
            try:
                other = read_meta(candidate, error)
                check_file(root / first, _entry(other, first, candidate, error), verify, error)
                return other
            except error:
                continue
        raise mismatch


def replace_metas(root: pathlib.Path, metas: Mapping[str, Any], listed: Iterable[str],
                  header: Mapping[str, Any]) -> None:
    """Replace metadata files of a finished folder and its manifest as one change.

    Every new file is first written whole beside the old one (`NAME.next`, synced), then the new manifest
    (`manifest.json.next`: `header` and the sha256 and size of every file of `listed`, the new ones under their final
    names); then the files are renamed into place, the manifest last, and the folder is synced. A reader meets the old
    files, the new ones, or (between two renames, or after a crash there) new files that only the pending manifest
    lists, which `read_manifest` then takes; a later replacement overwrites what an interrupted one left.
    """
    root = pathlib.Path(root)
    for name, meta in metas.items():
        write_meta(root / (name + PENDING), meta)
    entries = {}
    for name in listed:
        path = root / (name + PENDING if name in metas else name)
        entries[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    write_meta(root / (MANIFEST + PENDING), {**header, "files": entries})
    for name in metas:
        os.replace(root / (name + PENDING), root / name)
    os.replace(root / (MANIFEST + PENDING), root / MANIFEST)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
