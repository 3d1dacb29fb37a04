"""Passage files: JSON Lines of {"id", "text", "image"?} or parquet of {"passage_id", "passage_content", "image"?},
streamed or loaded as a table; every error names the file and the line or row.

A passage may name an image (docs/data_formats.md, "Passages"): `image` is a path relative to an image root (by
default the passages file's folder; an absolute path stays as it is). Such a passage is encoded as the published
`MIRe.doc` encodes one (docs/model.md): the image's tokens, then its text; an image-only passage has no text
(`text` absent, null or empty). Streams yield `(id, text)` for a text passage and `(id, text, image path)` for a
passage with an image, so a corpus without images streams exactly as before.
"""
from __future__ import annotations

import os
from typing import Iterator, Union

from mire_jax.files import iter_json_lines

Passage = Union[tuple[str, str], tuple[str, str, str]]
IMAGE_FIELD = "image"


def _image_root(path: str | os.PathLike, image_root: str | os.PathLike | None) -> str:
    return os.fspath(image_root) if image_root else os.path.dirname(os.path.abspath(path))


def iter_jsonl_passages(path: str | os.PathLike, id_field: str = "id", text_field: str = "text",
                        image_field: str = IMAGE_FIELD,
                        image_root: str | os.PathLike | None = None) -> Iterator[Passage]:
    """`(id, text)` or `(id, text, image path)` per line of a JSON Lines file; blank lines are skipped.

    A line whose `image_field` is a non-empty string names an image (joined to `image_root`, default the file's
    folder); its text may then be absent or null ("": image only).

    Raises:
        ValueError: a line is not a JSON object with an id and a text or an image, or has a non-string image
            (names the file and line).
    """
    root = _image_root(path, image_root)
    for _, where, record in iter_json_lines(path):
        image = record.get(image_field)
        if image is not None and not isinstance(image, str):
            raise ValueError(f"{where}: field {image_field!r} should be an image path (a string), found "
                             f"{type(image).__name__}")
        if id_field not in record:
            raise ValueError(f"{where}: needs the fields {id_field!r} and {text_field!r}"
                             + (f" (or {image_field!r})" if image else ""))
        if image:
            text = record.get(text_field)
            yield str(record[id_field]), "" if text is None else str(text), os.path.join(root, image)
        elif text_field not in record:
            raise ValueError(f"{where}: needs the fields {id_field!r} and {text_field!r} (or an {image_field!r})")
        else:
            yield str(record[id_field]), str(record[text_field])


def iter_parquet_passages(path: str | os.PathLike, id_column: str = "passage_id",
                          text_column: str = "passage_content", batch_rows: int = 8192,
                          image_column: str = IMAGE_FIELD,
                          image_root: str | os.PathLike | None = None) -> Iterator[Passage]:
    """`(id, text)` or `(id, text, image path)` per row of a parquet file, read in record batches.

    An `image_column` of strings (when the file has one) names each row's image, relative to `image_root`
    (default the file's folder); a null or empty image is a text passage, a null text with an image is image-only.

    Raises:
        ValueError: a column is missing, the image column does not hold paths, or a row has a null id, or neither
            text nor image (names the file and row).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    names = schema.names
    has_images = image_column in names
    for column in (id_column,) + (() if has_images else (text_column,)):
        if column not in names:
            raise ValueError(f"{path}: no column {column!r} (columns: {names})")
    image_type = schema.field(image_column).type if has_images else None
    if has_images and not (pa.types.is_string(image_type) or pa.types.is_large_string(image_type)
                           or pa.types.is_null(image_type)):
        raise ValueError(f"{path}: column {image_column!r} holds {image_type}, expected image "
                         "paths (strings): write the images as files and the column as their paths")
    columns = [id_column] + ([text_column] if text_column in names else []) + ([image_column] if has_images else [])
    root = _image_root(path, image_root)
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        data = {name: batch.column(i).to_pylist() for i, name in enumerate(columns)}
        texts = data.get(text_column, [None] * batch.num_rows)
        images = data.get(image_column, [None] * batch.num_rows)
        for pid, text, image in zip(data[id_column], texts, images):
            if pid is None:
                raise ValueError(f"{path}: row {row}: null {id_column}")
            if image:
                yield str(pid), "" if text is None else str(text), os.path.join(root, image)
            elif text is None:
                raise ValueError(f"{path}: row {row}: null {text_column}" + (" and no image" if has_images else ""))
            else:
                yield str(pid), str(text)
            row += 1


def count_passages(path: str | os.PathLike) -> int:
    """Number of passages in a parquet file (from its metadata) or a JSON Lines file (non-blank lines)."""
    if str(path).endswith(".parquet"):
        import pyarrow.parquet as pq
        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def iter_passages(path: str | os.PathLike, id_field: str | None = None, text_field: str | None = None,
                  image_field: str | None = None,
                  image_root: str | os.PathLike | None = None) -> Iterator[Passage]:
    """Passages of a `.parquet` or JSON Lines file, with that format's default field names unless given; image
    paths relative to `image_root` (default: the file's folder)."""
    if str(path).endswith(".parquet"):
        return iter_parquet_passages(path, id_field or "passage_id", text_field or "passage_content",
                                     image_column=image_field or IMAGE_FIELD, image_root=image_root)
    return iter_jsonl_passages(path, id_field or "id", text_field or "text", image_field or IMAGE_FIELD,
                               image_root=image_root)


def read_passages(path: str | os.PathLike,
                  image_root: str | os.PathLike | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """-> (passage id -> text ("" for an image-only passage), passage id -> image path for those with one), ids as
    strings (the form ids take in URLs), from a file `iter_passages` reads.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed record, or an id given twice (names the file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such passages file")
    texts: dict[str, str] = {}
    images: dict[str, str] = {}
    for passage in iter_passages(path, image_root=image_root):
        pid = passage[0]
        if pid in texts:
            raise ValueError(f"{path}: passage id {pid!r} appears twice")
        texts[pid] = passage[1]
        if len(passage) > 2:
            images[pid] = passage[2]
    return texts, images


def load_passages(path: str | os.PathLike) -> dict[str, str]:
    """Passage id -> text of a passages file (`read_passages`, images left out)."""
    return read_passages(path)[0]
