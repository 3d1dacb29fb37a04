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
from typing import Any, Iterable

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
        marker = files.read_json(self._marker(stage))
        if marker.get("fingerprint") != fp or not all(os.path.exists(p) for p in marker.get("outputs", [])):
            return None
        return marker

    def mark(self, stage: str, fp: str, outputs: Iterable[str], summary: Any = None) -> dict:
        marker = {"stage": stage, "fingerprint": fp, "outputs": [os.path.abspath(p) for p in outputs],
                  "summary": summary}
        files.write_json(self._marker(stage), marker, indent=2)
        return marker

    def clear(self, stage: str) -> None:
        if os.path.exists(self._marker(stage)):
            os.remove(self._marker(stage))
