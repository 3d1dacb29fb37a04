"""The paper's numbers, read from the one file that holds them (paper_numbers.json beside this module; what each
table measures: docs/paper_tables.md). A cell the file does not hold, or holds as null, has no number: the report
leaves it empty and never makes one up."""
from __future__ import annotations

import dataclasses
import pathlib

from mire_jax.files import read_json

PATH = pathlib.Path(__file__).resolve().parent / "paper_numbers.json"


@dataclasses.dataclass(frozen=True)
class Cell:
    table: str
    row: str
    model: str | None
    benchmark: str
    metric: str
    value: float | None
    note: str
    source: str


class PaperNumbers:
    """The entries of paper_numbers.json, looked up by (table, row, model, benchmark, metric)."""

    def __init__(self, path: str | pathlib.Path = PATH):
        doc = read_json(path)
        self.path = str(path)
        self.paper, self.version = doc["paper"], doc.get("version", "")
        self.provenance = doc.get("provenance", "")
        self.cells = [Cell(e["table"], e["row"], e.get("model"), e["benchmark"], e["metric"], e.get("value"),
                           e.get("note", ""), e["source"]) for e in doc["entries"]]
        self.captions = {}
        for e in doc["entries"]:
            self.captions.setdefault(e["table"], e.get("caption", ""))

    def tables(self) -> list[str]:
        return list(dict.fromkeys(c.table for c in self.cells))

    def row_cells(self, table: str, row: str, model: str | None) -> list[Cell]:
        """The cells of one row of one table, in file order."""
        return [c for c in self.cells if c.table == table and c.row == row and c.model == model]

    def rows(self, table: str) -> list[tuple[str, str | None]]:
        return list(dict.fromkeys((c.row, c.model) for c in self.cells if c.table == table))
