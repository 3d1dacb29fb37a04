"""Reading JSON Lines with errors that name the file and line."""
from __future__ import annotations

import json
import os
from typing import Iterator


def iter_json_objects(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(line number, record) for every non-blank line of a JSONL file.

    Raises:
      ValueError: a line is not valid JSON or not a JSON object (the message names the file and line).
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from e
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            yield line_no, record
