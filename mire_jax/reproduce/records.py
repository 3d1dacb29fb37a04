"""Where a stage keeps its state in the output folder, and the record of its last run.

    R/stages/<stage name>/record.json   the record (below), written atomically by process 0
    R/stages/<stage name>/work/         what the stage builds (training workdirs, ViD2R work files, caches)
    R/stages/<stage name>/results/      its results files, read back by the report

A record says: status ("running" while it runs, then "done" or "failed"), the fingerprint of its inputs and the
inputs themselves (settings, file signatures, the run ids of the stages it read, the code version: what a rerun
compares to say what changed), the run id of a finished run (a fresh id every time the stage finishes, so the
stages after it see that it reran), its outputs (paths, relative to R where they lie inside it), a summary, the
wall time and the hardware of the run that made it, and on failure the error in one line.
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import time
from typing import Any

from mire_jax.files import read_json, write_json

STAGES_DIR = "stages"
RECORD_FILE = "record.json"
RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclasses.dataclass
class Record:
    stage: str
    status: str
    fingerprint: str
    inputs: dict
    run_id: str = ""
    started: str = ""
    finished: str = ""
    wall_s: float | None = None
    outputs: dict = dataclasses.field(default_factory=dict)
    summary: dict = dataclasses.field(default_factory=dict)
    hardware: dict = dataclasses.field(default_factory=dict)
    error: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


class StageFolders:
    """The folders and record of one stage under the output folder `out`."""

    def __init__(self, out: str, stage: str):
        self.out, self.stage = os.path.abspath(out), stage
        self.root = os.path.join(self.out, STAGES_DIR, *stage.split("/"))
        self.work = os.path.join(self.root, "work")
        self.results = os.path.join(self.root, "results")
        self.record_path = os.path.join(self.root, RECORD_FILE)

    def read(self) -> Record | None:
        if not os.path.exists(self.record_path):
            return None
        return Record.from_dict(read_json(self.record_path))

    def write(self, record: Record) -> None:
        write_json(self.record_path, record.to_dict(), indent=2)

    def clear(self) -> None:
        """Removes what an earlier run with other inputs built (work and results); the record stays until the new
        run replaces it."""
        for folder in (self.work, self.results):
            shutil.rmtree(folder, ignore_errors=True)

    def relative(self, path: str) -> str:
        """`path` relative to the output folder when it lies inside it (records stay valid if R moves)."""
        path = os.path.abspath(path)
        return os.path.relpath(path, self.out) if path.startswith(self.out + os.sep) else path

    def absolute(self, path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(self.out, path)


def outputs_relative(folders: StageFolders, outputs: dict[str, Any]) -> dict[str, Any]:
    """Output paths (strings that name existing paths) made relative to R; other values kept."""
    def convert(value):
        if isinstance(value, str) and os.path.isabs(value) and os.path.exists(value):
            return folders.relative(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value
    return convert(outputs)
