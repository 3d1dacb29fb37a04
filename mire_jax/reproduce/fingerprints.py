"""What a stage's inputs are, as a short stable hash: its settings, the data files and checkpoints it reads, the stages
it reads from, and the version of the code that makes its results.

Files are signed cheaply: path, size and modification time, plus a content hash for files of at most
`CONTENT_HASH_BYTES` (configs, vocabularies, small annotation files), so that rewriting a small file with the same
bytes changes nothing and a large corpus is never read. A folder is signed by the signatures of its files (up to
`MAX_FOLDER_FILES`; past that by their count, total size and newest modification time). Image folders are never
signed (millions of files): a stage lists them as inputs that must exist, not as inputs that are fingerprinted.

The code version of a stage is a hash of the source files of the package parts its results depend on (e.g. a
training stage: mire_jax/train, mire_jax/data, mire_jax/models, ...), so editing the report code reruns nothing and
editing the training step reruns the trainings and everything after them.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
from typing import Any, Iterable, Mapping

CONTENT_HASH_BYTES = 4 << 20
MAX_FOLDER_FILES = 2000
PACKAGE = pathlib.Path(__file__).resolve().parents[1]   # the mire_jax folder


def digest(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (dict keys sorted; other objects by their str)."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def _content_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:20]


def file_signature(path: str | os.PathLike) -> dict:
    """{path, size, mtime_ns} of a file, with its content hash ("sha256") when it is small. For a small file the
    content stands for the file: its modification time is left out, so touching it changes nothing."""
    path = os.path.abspath(os.fspath(path))
    st = os.stat(path)
    if st.st_size <= CONTENT_HASH_BYTES:
        return {"path": path, "size": st.st_size, "sha256": _content_hash(path)}
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _folder_files(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found.extend(os.path.join(dirpath, name) for name in sorted(filenames) if not name.startswith("."))
    return found


def path_signature(path: str | os.PathLike) -> dict:
    """The signature of a file, or of a folder (its files' signatures, relative paths; a summary past
    `MAX_FOLDER_FILES`). FileNotFoundError when `path` does not exist."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return file_signature(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(path)
    files = _folder_files(path)
    if len(files) > MAX_FOLDER_FILES:
        stats = [os.stat(f) for f in files]
        return {"path": os.path.abspath(path), "files": len(files), "bytes": sum(s.st_size for s in stats),
                "newest_mtime_ns": max(s.st_mtime_ns for s in stats)}
    signed = {}
    for f in files:
        sig = file_signature(f)
        sig.pop("path")
        signed[os.path.relpath(f, path)] = sig
    return {"path": os.path.abspath(path), "files": signed}


@functools.lru_cache(maxsize=None)
def _source_hash(part: str) -> str:
    target = PACKAGE / part
    if target.is_file():
        files = [target]
    elif target.is_dir():
        files = sorted(target.rglob("*.py"))
    else:
        raise ValueError(f"code part {part!r}: no such module or package in {PACKAGE}")
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(PACKAGE)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:20]


def code_version(parts: Iterable[str]) -> str:
    """A hash of the source of the package parts (paths relative to mire_jax/, e.g. "train", "config.py")."""
    return digest({part: _source_hash(part) for part in sorted(set(parts))})


def changes(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = "", limit: int = 4) -> list[str]:
    """What differs between two nested dicts of recorded inputs, as short readable items ("config.lr: 5e-05 ->
    0.001", "files.queries: changed", "upstream.pretrain: reran"), at most `limit` of them."""
    found: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(found) > limit:
            return
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{where}.{key}" if where else str(key))
            return
        if a != b:
            top = where.split(".")[0]
            if top == "files":
                found.append(f"{'.'.join(where.split('.')[:2])} changed")
            elif top == "upstream":
                found.append(f"{where.split('.', 1)[-1]} was rerun")
            elif top == "code":
                found.append("code changed")
            else:
                found.append(f"{where}: {_short(a)} -> {_short(b)}")

    walk(before, after, prefix)
    unique = list(dict.fromkeys(found))
    return unique[:limit] + ([f"and {len(unique) - limit} more"] if len(unique) > limit else [])


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
