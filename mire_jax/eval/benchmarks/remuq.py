"""ReMuQ (docs/data_formats.md). Root = MIRe's data/remuq, with WebQA's image TSV beside it:

  {train,test}.json           RA-VQA retriever schema (`question_id`, `img_id`, `question`, `answers`, `ctxs`)
  open_corpus_195837.csv      `kid,text`, 195,837 rows
  webqa/imgs.tsv, webqa/imgs.lineidx   (MIRe: data/webqa/...; pass webqa_dir=...)

Published rules: the same cleanup as OK-VQA-GS (caption removed if present, empty `ctxs` dropped);
gold passage = `ctxs[0]["id"]`; the corpus is a dict keyed `str(kid)` (a duplicate kid keeps its first
position and its last text); a query image is the TSV line at `lineidx[int(img_id) % 10_000_000]`.
MIRe compares `str(kid)` with `ctxs[0]["id"]` uncast, so a numeric gold id would never match there; ids
are compared as str here (a note records it when the file has numeric ids).
"""
from __future__ import annotations

import os
import pathlib

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks.base import Benchmark, Query, collapse_by_id
from mire_jax.eval.benchmarks.corpus import MemoryCorpus, iter_kid_text_csv
from mire_jax.eval.benchmarks.image_refs import WebQATsvImage
from mire_jax.eval.benchmarks.okvqa import parse_retriever_json
from mire_jax.eval.benchmarks.readers import BenchmarkFormatError

REMUQ_SPLITS = ("train", "test")
REMUQ_CORPUS_FILE = "open_corpus_195837.csv"


def load_remuq(root: os.PathLike | str, split: str = "test", *, queries_file: os.PathLike | str | None = None,
               corpus_file: os.PathLike | str | None = None,
               webqa_dir: os.PathLike | str | None = None) -> Benchmark:
    """ReMuQ (see the module docstring).

    Args:
      root: folder holding `{split}.json`, the corpus CSV and (unless `webqa_dir` is given) `webqa/`.
      split: "test" (MIRe's evaluation) or "train".
      queries_file, corpus_file, webqa_dir: overrides.
    """
    root = pathlib.Path(root)
    if split not in REMUQ_SPLITS:
        raise ValueError(f"remuq: unknown split {split!r}; expected one of {REMUQ_SPLITS}")
    queries_file = os.fspath(queries_file or root / f"{split}.json")
    webqa_dir = pathlib.Path(webqa_dir) if webqa_dir else root / "webqa"
    tsv, lineidx = os.fspath(webqa_dir / "imgs.tsv"), os.fspath(webqa_dir / "imgs.lineidx")
    records, dropped = parse_retriever_json(queries_file)
    for rec in records:
        if not rec.img_id.isdigit():
            raise BenchmarkFormatError(f"{rec.where}: img_id {rec.img_id!r} is not a WebQA image number")
    queries = [Query(qid=rec.qid, question=rec.question, image=WebQATsvImage(tsv, lineidx, rec.img_id),
                     answers=rec.answers, gold_pids=rec.ctx_ids[:1]) for rec in records]
    queries, duplicates = collapse_by_id(queries, key=lambda q: q.qid)
    notes = [f"dropped {dropped} record(s) with empty ctxs from {os.path.basename(queries_file)}"] if dropped else []
    if duplicates:
        notes.append(f"collapsed {duplicates} duplicate question_id(s) (last record wins)")
    numeric_gold = sum(1 for rec in records if not rec.ctx_ids_are_str)
    if numeric_gold:
        notes.append(f"{numeric_gold} gold ids are numbers in the JSON: compared as str here, never matched by MIRe")
    corpus_file = os.fspath(corpus_file or root / REMUQ_CORPUS_FILE)
    corpus, collapsed = MemoryCorpus.from_pairs(((pid, text) for _, pid, text in iter_kid_text_csv(corpus_file)),
                                                source=corpus_file)
    if collapsed:
        notes.append(f"collapsed {collapsed} duplicate kid(s) in the corpus (first position, last text)")
    return Benchmark(name="remuq", split=split, queries=queries, corpus=corpus, relevance=metrics.GOLD_ID,
                     notes=tuple(notes))
