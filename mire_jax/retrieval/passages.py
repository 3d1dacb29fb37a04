"""Passage files: JSON Lines of {"id", "text"} or parquet of {"passage_id", "passage_content"}, streamed or loaded
as a table; every error names the file and the line or row."""
from __future__ import annotations

import os
from typing import Iterator

from mire_jax.files import iter_json_lines


def iter_jsonl_passages(path: str | os.PathLike, id_field: str = "id",
                        text_field: str = "text") -> Iterator[tuple[str, str]]:
    """(passage id, text) per line of a JSON Lines file; blank lines are skipped.

    Raises:
        ValueError: a line is not a JSON object with both fields (names the file and line).
    """
    for _, where, record in iter_json_lines(path):
        if id_field not in record or text_field not in record:
            raise ValueError(f"{where}: needs the fields {id_field!r} and {text_field!r}")
        yield str(record[id_field]), str(record[text_field])


def iter_parquet_passages(path: str | os.PathLike, id_column: str = "passage_id",
                          text_column: str = "passage_content",
                          batch_rows: int = 8192) -> Iterator[tuple[str, str]]:
    """(passage id, text) per row of a parquet file, read in record batches.

    Raises:
        ValueError: a column is missing, or a row has a null id or text (names the file and row).
    """
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    for column in (id_column, text_column):
        if column not in names:
            raise ValueError(f"{path}: no column {column!r} (columns: {names})")
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=[id_column, text_column]):
        for pid, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            if pid is None or text is None:
                raise ValueError(f"{path}: row {row}: null {id_column if pid is None else text_column}")
            yield str(pid), str(text)
            row += 1


def count_passages(path: str | os.PathLike) -> int:
    """Number of passages in a parquet file (from its metadata) or a JSON Lines file (non-blank lines)."""
    if str(path).endswith(".parquet"):
        import pyarrow.parquet as pq
        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def iter_passages(path: str | os.PathLike, id_field: str | None = None,
                  text_field: str | None = None) -> Iterator[tuple[str, str]]:
    """Passages of a `.parquet` or JSON Lines file, with that format's default field names unless given."""
    if str(path).endswith(".parquet"):
        return iter_parquet_passages(path, id_field or "passage_id", text_field or "passage_content")
    return iter_jsonl_passages(path, id_field or "id", text_field or "text")


def load_passages(path: str | os.PathLike) -> dict[str, str]:
    """Passage id (as a string, the form ids take in URLs) -> text, from a JSON Lines file of {"id", "text"} or a
    parquet file of {"passage_id", "passage_content"} (read by `iter_passages`).

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
