"""Resumable pipeline stages: atomic outputs and fingerprints of inputs and options.

A stage writes its outputs atomically (`mire_jax.files`: a temporary name, then a rename), then writes
`<work_dir>/<stage>.done.json` with its fingerprint (a hash of its options, its input files' signatures and
the fingerprints of the stages it reads). A rerun skips a stage whose marker has the same fingerprint and
whose outputs all exist; anything upstream that changed changes the fingerprint, so the stage reruns.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Iterator

from mire_jax import files


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def file_signature(path: str | os.PathLike) -> dict:
    """Path, size and modification time of a file: cheap to take even for very large inputs."""
    path = os.fspath(path)
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Atomically write JSON (UTF-8, non-ASCII kept, as the published scripts write)."""
    files.write_json(path, obj, indent=indent, ensure_ascii=False)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    """Atomically write JSON Lines."""
    with files.atomic_open(path, encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def iter_jsonl(path: str | os.PathLike) -> Iterator[Any]:
    """Stream the objects of a JSON Lines file (blank lines skipped); errors name the file and line."""
    for _, _, record in files.iter_json_lines(path, objects_only=False):
        yield record


def read_jsonl(path: str | os.PathLike) -> list:
    """All objects of a JSON Lines file."""
    return list(iter_jsonl(path))


class StageMarkers:
    """The `<stage>.done.json` markers of one work folder."""

    def __init__(self, work_dir: str | os.PathLike, force: bool = False):
        self.work_dir = os.fspath(work_dir)
        self.force = force
        os.makedirs(self.work_dir, exist_ok=True)

    def path(self, name: str) -> str:
        return os.path.join(self.work_dir, name)

    def _marker(self, stage: str) -> str:
        return self.path(f"{stage}.done.json")

    def done(self, stage: str, fp: str) -> dict | None:
        """The marker of `stage` when it is complete with fingerprint `fp` (else None)."""
        if self.force or not os.path.exists(self._marker(stage)):
            return None
        with open(self._marker(stage), encoding="utf-8") as f:
            marker = json.load(f)
        if marker.get("fingerprint") != fp or not all(os.path.exists(p) for p in marker.get("outputs", [])):
            return None
        return marker

    def mark(self, stage: str, fp: str, outputs: Iterable[str], summary: Any = None) -> dict:
        marker = {"stage": stage, "fingerprint": fp, "outputs": [os.path.abspath(p) for p in outputs],
                  "summary": summary}
        write_json(self._marker(stage), marker)
        return marker

    def clear(self, stage: str) -> None:
        if os.path.exists(self._marker(stage)):
            os.remove(self._marker(stage))
