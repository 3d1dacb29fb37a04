"""M2KR sets of PreFLMR (docs/data_formats.md): E-VQA, InfoSeek (and OK-VQA) as Hugging Face tables.

Root = a copy of the hub repo `BByrneLab/multi_task_multi_modal_knowledge_retrieval_benchmark_M2KR`:
  {task}_data/{split}-*.parquet                      queries (MIRe evaluates split "test")
  {task}_passages/{split}_passages-*.parquet         passages (MIRe: "test_passages")
  images/{task}/...                                  image root (MIRe: data/evqa, data/infoseek_images)
Either table may instead be a `datasets.save_to_disk` folder of the same name (a DatasetDict with
`dataset_dict.json` and one folder per split); its Arrow files are read with pyarrow, no `datasets` needed.

Published rules: question = `question` (or `instruction + " " + question` with use_instruction=True);
image = `join(image_root, img_path)`, InfoSeek by `basename(img_path)`; passages form a dict keyed
`str(passage_id)` (first position, last text); E-VQA and InfoSeek are judged by answer substrings
(`pos_item_ids` are not used; they are kept as `gold_pids` for textbook metrics). M2KR OK-VQA (never
evaluated by MIRe) takes the same substring rule; other tasks take gold ids (MIRe's OVEN branch compares
an id with a dict and never matches).
"""
from __future__ import annotations

import os
import pathlib
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks.base import Benchmark, Query, collapse_by_id
from mire_jax.eval.benchmarks.corpus import MemoryCorpus
from mire_jax.eval.benchmarks.image_refs import ImageFile
from mire_jax.eval.benchmarks.readers import BenchmarkFormatError, str_list
from mire_jax.files import read_json

ANSWER_TASKS = ("EVQA", "Infoseek", "OKVQA")
BASENAME_TASKS = ("Infoseek",)
_BATCH_ROWS = 4096


def table_files(table_dir: pathlib.Path, split: str) -> tuple[list[pathlib.Path], str]:
    """The files of one split of a table: (paths, "parquet" | "arrow"). FileNotFoundError if none."""
    parquet = sorted(table_dir.glob(f"{split}-*.parquet"))
    if parquet:
        return parquet, "parquet"
    if (table_dir / "dataset_dict.json").exists():
        split_dir = table_dir / split
    elif (table_dir / "state.json").exists():
        split_dir = table_dir
    else:
        raise FileNotFoundError(f"no {split}-*.parquet and no save_to_disk folder in {table_dir}")
    state_path = split_dir / "state.json"
    if not state_path.exists():
        raise FileNotFoundError(f"split {split!r} not found: {state_path} does not exist")
    state = read_json(state_path, error=BenchmarkFormatError)
    try:
        return [split_dir / entry["filename"] for entry in state["_data_files"]], "arrow"
    except (KeyError, TypeError) as e:
        raise BenchmarkFormatError(f"{state_path}: no '_data_files' list of {{'filename': ...}}") from e


def _batches(path: pathlib.Path, kind: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    if kind == "parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS, columns=columns)
        return
    with pa.memory_map(os.fspath(path)) as source:
        for batch in pa.ipc.open_stream(source):
            yield batch.select(columns)


def _schema_names(path: pathlib.Path, kind: str) -> list[str]:
    if kind == "parquet":
        return pq.read_schema(path).names
    with pa.memory_map(os.fspath(path)) as source:
        return pa.ipc.open_stream(source).schema.names


def iter_rows(table_dir: pathlib.Path, split: str, required: list[str],
              optional: tuple[str, ...] = ()) -> Iterator[tuple[str, dict]]:
    """Yield `(where, row)` over a table split; `where` names the file and the row (0-based).

    Raises:
      BenchmarkFormatError: a required column is missing from a file, or a required cell is null.
    """
    files, kind = table_files(table_dir, split)
    for path in files:
        names = _schema_names(path, kind)
        missing = [c for c in required if c not in names]
        if missing:
            raise BenchmarkFormatError(f"{path}: missing column(s) {missing} (has {names})")
        columns = required + [c for c in optional if c in names]
        row_no = 0
        for batch in _batches(path, kind, columns):
            for row in batch.to_pylist():
                where = f"{path}: row {row_no}"
                nulls = [c for c in required if row[c] is None]
                if nulls:
                    raise BenchmarkFormatError(f"{where}: null value in {nulls}")
                row_no += 1
                yield where, row


def _text(row: dict, name: str, where: str) -> str:
    value = row[name]
    if not isinstance(value, str):
        raise BenchmarkFormatError(f"{where}: column {name!r} should be a string, found {type(value).__name__}")
    return value


def load_m2kr(root: os.PathLike | str, split: str = "test", *, task: str, passages_split: str | None = None,
              data_dir: os.PathLike | str | None = None, passages_dir: os.PathLike | str | None = None,
              image_root: os.PathLike | str | None = None, use_instruction: bool = False) -> Benchmark:
    """One M2KR task (see the module docstring).

    Args:
      root: the M2KR repo copy.
      split: data split ("test" for MIRe's evaluation).
      task: "EVQA", "Infoseek", "OKVQA", ...
      passages_split: passage split (default `f"{split}_passages"`).
      data_dir, passages_dir, image_root: overrides (defaults `{task}_data`, `{task}_passages`, `images/{task}`).
      use_instruction: prefix the question with the row's instruction (MIRe's --use_instruction).
    """
    root = pathlib.Path(root)
    data_dir = pathlib.Path(data_dir) if data_dir else root / f"{task}_data"
    passages_dir = pathlib.Path(passages_dir) if passages_dir else root / f"{task}_passages"
    image_root = pathlib.Path(image_root) if image_root else root / "images" / task
    by_answers = task in ANSWER_TASKS
    required = ["question_id", "question", "img_path", "pos_item_ids"] + (["instruction"] if use_instruction else [])
    required += ["answers"] if by_answers else []
    queries = []
    for where, row in iter_rows(data_dir, split, required, optional=("answers",)):
        question = _text(row, "question", where)
        if use_instruction:
            question = _text(row, "instruction", where) + " " + question
        img_path = _text(row, "img_path", where)
        if task in BASENAME_TASKS:
            img_path = os.path.basename(img_path)
        gold = str_list(row["pos_item_ids"], "pos_item_ids", where)
        if not gold:
            raise BenchmarkFormatError(f"{where}: empty pos_item_ids (MIRe reads pos_item_ids[0])")
        answers = str_list(row["answers"], "answers", where) if row.get("answers") is not None else []
        queries.append(Query(qid=str(row["question_id"]), question=question,
                             image=ImageFile(os.fspath(image_root / img_path), img_path),
                             answers=answers, gold_pids=gold))
    queries, duplicates = collapse_by_id(queries, key=lambda q: q.qid)
    notes = [f"collapsed {duplicates} duplicate question_id(s) (last row wins)"] if duplicates else []

    passages_split = passages_split or f"{split}_passages"
    pairs = ((str(row["passage_id"]), _text(row, "passage_content", where))
             for where, row in iter_rows(passages_dir, passages_split, ["passage_id", "passage_content"]))
    corpus, collapsed = MemoryCorpus.from_pairs(pairs, source=os.fspath(passages_dir / passages_split))
    if collapsed:
        notes.append(f"collapsed {collapsed} duplicate passage_id(s) (first position, last text)")
    return Benchmark(name=f"m2kr_{task.lower()}", split=split, queries=queries, corpus=corpus,
                     relevance=metrics.SUBSTRING if by_answers else metrics.GOLD_ID, notes=tuple(notes))
