"""The passage texts the server returns with each result."""
from __future__ import annotations

import os

from mire_jax.index.encode import iter_passages


def load_passages(path: str | os.PathLike) -> dict[str, str]:
    """Passage id (as a string, the form ids take in URLs) -> text, from a JSON Lines file of {"id", "text"} or a
    parquet file of {"passage_id", "passage_content"} (read by `mire_jax.index.encode.iter_passages`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed record, or an id given twice (names the file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such passages file")
    texts: dict[str, str] = {}
    for pid, text in iter_passages(path):
        if pid in texts:
            raise ValueError(f"{path}: passage id {pid!r} appears twice")
        texts[pid] = text
    return texts
