"""Passage corpora that stream `(pid, text)` in file order.

* `MemoryCorpus`: corpora MIRe builds as a dict (ReMuQ, M2KR, A-OKVQA, ViD2R val): a duplicate id keeps
  its first position and its last text. It may carry an image per passage (FashionIQ, WebQA): `items()` then
  yields `(pid, text, image)` for those, the form the index's encoding loop takes.
* `CsvCorpus`: a `kid,text` CSV streamed row by row, every row a passage (OK-VQA Google-Search, whose
  index MIRe builds from the row list); a duplicate id's text for relevance is its last row's, as in
  MIRe's `pid2passage` dict.
* `JsonlBlocksCorpus`: OK-VQA Wiki-11M's `all_blocks.txt` (11M JSON lines, optionally `.gz`), never held in
  memory; text lookups take one streaming pass (and `passage_id_to_line_id.json` only if an id repeats).
"""
from __future__ import annotations

import abc
import csv
import gzip
import os
import re
from typing import Iterable, Iterator

from tqdm import tqdm

from mire_jax.eval.benchmarks.readers import BenchmarkFormatError
from mire_jax.files import iter_json_lines, read_json

_INT_LITERAL = re.compile(r"\s*[+-]?\d+\s*")


class Corpus(abc.ABC):
    """Passages in file order. `source` names the file(s) for messages."""

    source: str

    @abc.abstractmethod
    def __iter__(self) -> Iterator[tuple[str, str]]:
        """Yield `(pid, text)` in file order."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of passages (index positions)."""

    def items(self) -> Iterator[tuple]:
        """`(pid, text)`, or `(pid, text, image)` for a passage that carries an image (an `ImageRef`), in file
        order: what the index encodes."""
        return iter(self)

    @property
    def has_images(self) -> bool:
        """Whether some passage carries an image."""
        return False

    def iter_passages(self, progress: bool = True, desc: str | None = None) -> Iterator[tuple[str, str]]:
        """Iterate with a tqdm progress bar (shown on terminals only)."""
        return iter(tqdm(self, total=len(self), desc=desc or f"passages of {os.path.basename(self.source)}",
                         unit="psg", disable=None if progress else True))

    def texts_for(self, pids: Iterable[str]) -> dict[str, str]:
        """`{pid: text}` for the requested ids (one streaming pass); KeyError naming ids that are absent."""
        wanted = set(pids)
        found: dict[str, str] = {}
        if wanted:
            for pid, text in self.iter_passages(desc="looking up passage texts"):
                if pid in wanted:
                    found[pid] = text
        _check_found(wanted, found, self.source)
        return found


def _check_found(wanted: set[str], found: dict[str, str], source: str) -> None:
    missing = wanted.difference(found)
    if missing:
        raise KeyError(f"{source}: {len(missing)} passage ids not in the corpus (e.g. {sorted(missing)[:5]})")


class MemoryCorpus(Corpus):
    """A corpus held as parallel lists (already deduplicated); `images` (optional, aligned): an `ImageRef` per
    passage that carries one, else None."""

    def __init__(self, pids: list[str], texts: list[str], source: str, images: list | None = None):
        if len(pids) != len(texts) or (images is not None and len(images) != len(pids)):
            raise ValueError("pids, texts and images differ in length")
        self.pids, self.texts, self.source = pids, texts, source
        self.images = images if images is not None and any(image is not None for image in images) else None

    def items(self) -> Iterator[tuple]:
        if self.images is None:
            return iter(self)
        return (item if image is None else (*item, image)
                for item, image in zip(zip(self.pids, self.texts), self.images))

    @property
    def has_images(self) -> bool:
        return self.images is not None

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]], source: str) -> tuple["MemoryCorpus", int]:
        """Build as a dict would (first position, last text). Returns (corpus, number of duplicates dropped)."""
        table: dict[str, str] = {}
        count = 0
        for pid, text in pairs:
            table[pid] = text
            count += 1
        return cls(list(table.keys()), list(table.values()), source), count - len(table)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return zip(self.pids, self.texts)

    def __len__(self) -> int:
        return len(self.pids)

    def texts_for(self, pids: Iterable[str]) -> dict[str, str]:
        table = dict(zip(self.pids, self.texts))
        wanted = set(pids)
        found = {pid: table[pid] for pid in wanted if pid in table}
        _check_found(wanted, found, self.source)
        return found


def normalise_kid(raw: str) -> str:
    """A CSV `kid` as MIRe's pandas read turns it into str: integers are re-printed (`"007"` -> `"7"`)."""
    return str(int(raw)) if _INT_LITERAL.fullmatch(raw) else raw


def iter_kid_text_csv(path: str) -> Iterator[tuple[int, str, str]]:
    """Yield `(row number (1-based, header excluded), pid, text)` of a `kid,text` CSV (RA-VQA / ReMuQ corpora).

    Quoted fields may hold commas, doubled quotes and newlines. A row whose field count differs from the
    header's, or with an empty kid, is an error naming the file, row and line.
    """
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise BenchmarkFormatError(f"{path}: empty file, expected a 'kid,text' header") from None
        if "kid" not in header or "text" not in header:
            raise BenchmarkFormatError(f"{path}: line 1: header {header} lacks 'kid' and/or 'text'")
        kid_col, text_col = header.index("kid"), header.index("text")
        row_no = 0
        try:
            for row_no, row in enumerate(reader, start=1):
                where = f"{path}: row {row_no} (line {reader.line_num})"
                if len(row) != len(header):
                    raise BenchmarkFormatError(f"{where}: {len(row)} fields, the header has {len(header)}")
                kid = row[kid_col]
                if not kid.strip():
                    raise BenchmarkFormatError(f"{where}: empty kid")
                yield row_no, normalise_kid(kid), row[text_col]
        except csv.Error as e:
            raise BenchmarkFormatError(f"{path}: row {row_no + 1} (line {reader.line_num}): bad CSV: {e}") from e


class CsvCorpus(Corpus):
    """A `kid,text` CSV streamed in file order; every row is an index position (no collapsing)."""

    def __init__(self, path: str):
        self.source = path
        self._length: int | None = None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        count = 0
        for _, pid, text in iter_kid_text_csv(self.source):
            count += 1
            yield pid, text
        self._length = count

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(1 for _ in iter_kid_text_csv(self.source))
        return self._length


class JsonlBlocksCorpus(Corpus):
    """OK-VQA Wiki-11M blocks: JSON lines `{"id": str, "text": str, ...}`, position = line order.

    Args:
      path: `all_blocks.txt` (or `all_blocks.txt.gz`).
      line_map_path: `passage_id_to_line_id.json` (`{id: 1-based line}`), read only when an id repeats.
    """

    def __init__(self, path: str, line_map_path: str | None = None):
        self.source = path
        self.line_map_path = line_map_path
        self._length: int | None = None

    def _iter_lines(self) -> Iterator[tuple[int, str, str]]:
        line_no = 0
        lines = iter_json_lines(self.source, error=BenchmarkFormatError, objects_only=False, skip_blank=False)
        for line_no, where, record in lines:
            if not isinstance(record, dict) or "id" not in record or "text" not in record:
                raise BenchmarkFormatError(f"{where}: expected an object with 'id' and 'text'")
            if not isinstance(record["text"], str):
                raise BenchmarkFormatError(f"{where}: field 'text' should be str")
            yield line_no, str(record["id"]), record["text"]
        self._length = line_no

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, pid, text in self._iter_lines():
            yield pid, text

    def __len__(self) -> int:
        if self._length is None:
            count, last = 0, b"\n"
            opener = gzip.open if self.source.endswith(".gz") else open
            with opener(self.source, "rb") as f:
                while chunk := f.read(1 << 24):
                    count += chunk.count(b"\n")
                    last = chunk[-1:]
            self._length = count + (0 if last == b"\n" else 1)
        return self._length

    def texts_for(self, pids: Iterable[str]) -> dict[str, str]:
        """One pass over the blocks; an id found on several lines takes the line the line map names."""
        wanted = set(pids)
        occurrences: dict[str, list[tuple[int, str]]] = {}
        if wanted:
            lines = tqdm(self._iter_lines(), total=self._length, desc="looking up passage texts", unit="line",
                         disable=None)
            for line_no, pid, text in lines:
                if pid in wanted:
                    occurrences.setdefault(pid, []).append((line_no, text))
        found = {pid: hits[0][1] for pid, hits in occurrences.items() if len(hits) == 1}
        repeated = {pid: hits for pid, hits in occurrences.items() if len(hits) > 1}
        if repeated:
            found.update(self._resolve_repeated(repeated))
        _check_found(wanted, found, self.source)
        return found

    def _resolve_repeated(self, repeated: dict[str, list[tuple[int, str]]]) -> dict[str, str]:
        if not self.line_map_path:
            raise BenchmarkFormatError(f"{self.source}: ids repeat (e.g. {sorted(repeated)[:3]}) and no "
                                       "passage_id_to_line_id.json was given to say which line MIRe reads")
        line_map = read_json(self.line_map_path, error=BenchmarkFormatError)
        resolved = {}
        for pid, hits in repeated.items():
            line = line_map.get(pid)
            texts = {line_no: text for line_no, text in hits}
            if line not in texts:
                raise BenchmarkFormatError(f"{self.line_map_path}: id {pid!r} maps to line {line}, but it is on "
                                           f"lines {sorted(texts)} of {self.source}")
            resolved[pid] = texts[line]
        return resolved
