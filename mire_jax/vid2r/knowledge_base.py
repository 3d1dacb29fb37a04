"""The knowledge base of the response-to-passage conversion: a stream of `(pid, text)` passages.

Formats (by extension; a folder is read as its supported files in name order):

* `.jsonl`, `.jsonl.gz`: one object per line; Wiki6M (docs/data_formats.md) by default: text `wikipedia_content`,
  id `wikidata_id`. Unknown keys are ignored.
* `.csv`: a header row; default columns `kid`, `text` (the OK-VQA Google-Search / ReMuQ corpora).
* `.parquet`: default columns `passage_id`, `passage_content` (M2KR `*_passages`).

`id_field=""` numbers the passages by position (0-based, across all files), which is what the published
conversion's ColBERT collection does. Texts are stripped (the published code indexes
`wikipedia_content.strip()`, no title).
"""
from __future__ import annotations

import csv
import os
from typing import Callable, Iterable, Iterator

from tqdm.auto import tqdm

from mire_jax.files import iter_json_lines

DEFAULT_FIELDS = {"jsonl": ("wikidata_id", "wikipedia_content"), "csv": ("kid", "text"),
                  "parquet": ("passage_id", "passage_content")}


class KnowledgeBaseError(ValueError):
    """A knowledge-base file is malformed; the message names the file and the line or row."""


def _kind(path: str) -> str | None:
    name = path.lower().removesuffix(".gz")
    for ext, kind in ((".jsonl", "jsonl"), (".csv", "csv"), (".parquet", "parquet")):
        if name.endswith(ext):
            return kind
    return None


class KnowledgeBase:
    """Passages of one file or folder, streamed in order, never held in memory.

    Args:
        path: a file or a folder of files (see the module docstring).
        text_field: the text key/column (default: per format, `DEFAULT_FIELDS`).
        id_field: the id key/column (default: per format); "" numbers passages by position.
    """

    def __init__(self, path: str | os.PathLike, text_field: str | None = None, id_field: str | None = None):
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            self.files = [os.path.join(self.path, f) for f in sorted(os.listdir(self.path))
                          if _kind(f) is not None]
            if not self.files:
                raise KnowledgeBaseError(f"{self.path}: no .jsonl, .jsonl.gz, .csv or .parquet file in this folder")
        elif os.path.exists(self.path):
            if _kind(self.path) is None:
                raise KnowledgeBaseError(f"{self.path}: unsupported knowledge-base format "
                                         "(expected .jsonl, .jsonl.gz, .csv or .parquet)")
            self.files = [self.path]
        else:
            raise FileNotFoundError(f"knowledge base not found: {self.path}")
        kinds = {_kind(f) for f in self.files}
        if len(kinds) > 1:
            raise KnowledgeBaseError(f"{self.path}: mixed file formats {sorted(kinds)}")
        self.kind = kinds.pop()
        default_id, default_text = DEFAULT_FIELDS[self.kind]
        self.text_field = text_field or default_text
        self.id_field = default_id if id_field is None else id_field

    def signature(self) -> dict:
        """What identifies this KB for the stage fingerprints (paths, sizes, mtimes, fields)."""
        return {"files": [{"path": os.path.abspath(f), "size": os.path.getsize(f),
                           "mtime_ns": os.stat(f).st_mtime_ns} for f in self.files],
                "text_field": self.text_field, "id_field": self.id_field}

    def __iter__(self) -> Iterator[tuple[str, str]]:
        position = 0
        for path in self.files:
            for where, pid, text in getattr(self, f"_iter_{self.kind}")(path):
                if not isinstance(text, str):
                    raise KnowledgeBaseError(f"{where}: field {self.text_field!r} must be a string, "
                                             f"found {type(text).__name__}")
                yield (str(pid) if self.id_field else str(position)), text.strip()
                position += 1

    def iter_passages(self, progress: bool = True, desc: str = "knowledge base") -> Iterator[tuple[str, str]]:
        """`iter(self)` with a progress bar."""
        return iter(tqdm(self, desc=desc, unit="psg", disable=not progress))

    def _field(self, record, name: str, where: str):
        if not isinstance(record, dict):
            raise KnowledgeBaseError(f"{where}: expected a JSON object, found {type(record).__name__}")
        if name not in record or record[name] is None:
            raise KnowledgeBaseError(f"{where}: missing field {name!r} (fields present: {sorted(record)[:10]})")
        return record[name]

    def _iter_jsonl(self, path: str):
        for _, where, record in iter_json_lines(path, error=KnowledgeBaseError, objects_only=False):
            pid = self._field(record, self.id_field, where) if self.id_field else None
            yield where, pid, self._field(record, self.text_field, where)

    def _iter_csv(self, path: str):
        csv.field_size_limit(1 << 30)
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            needed = [c for c in (self.id_field, self.text_field) if c]
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise KnowledgeBaseError(f"{path}: header lacks column(s) {missing} (header: {reader.fieldnames})")
            for row_no, row in enumerate(reader, start=2):
                where = f"{path}: line {row_no}"
                if row.get(self.text_field) is None:
                    raise KnowledgeBaseError(f"{where}: row has fewer columns than the header")
                yield where, row[self.id_field] if self.id_field else None, row[self.text_field]

    def _iter_parquet(self, path: str):
        import pyarrow.parquet as pq
        pf = pq.ParquetFile(path)
        columns = [c for c in (self.id_field, self.text_field) if c]
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise KnowledgeBaseError(f"{path}: no column(s) {missing} (columns: {pf.schema_arrow.names})")
        row = 0
        for batch in pf.iter_batches(columns=columns, batch_size=4096):
            data = batch.to_pydict()
            for i, text in enumerate(data[self.text_field]):
                yield f"{path}: row {row}", data[self.id_field][i] if self.id_field else None, text
                row += 1

    def texts_for(self, pids: Iterable[str], progress: bool = True,
                  transform: Callable[[str], str] | None = None) -> dict[str, str]:
        """`{pid: text}` for the wanted ids, in one streaming pass (a repeated id keeps its first text).

        `transform` is applied to each text found before it is kept (e.g. a cut, to save memory).

        Raises:
            KeyError: naming (some of) the ids that are not in the knowledge base.
        """
        wanted = set(pids)
        found: dict[str, str] = {}
        if wanted:
            for pid, text in self.iter_passages(progress, desc="looking up hit passages"):
                if pid in wanted and pid not in found:
                    found[pid] = transform(text) if transform else text
                    if len(found) == len(wanted):
                        break
        missing = wanted.difference(found)
        if missing:
            raise KeyError(f"{self.path}: {len(missing)} passage id(s) not in the knowledge base, "
                           f"e.g. {sorted(missing)[:5]}")
        return found
