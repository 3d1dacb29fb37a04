"""ViD2R validation queries (docs/data_formats.md; MIRe's Vid2RLoader). Root = MIRe's data/vid2r:

  ViD2R.json          one JSON array of `{"image", "id", "question", "document", "answer", ["negs"]}`
  images/...          image root (`image` is relative to it)

Published rules: records whose question is shorter than 25 characters are skipped, the first 5000
kept records are the queries, a query's id is its index in the array (skipped records still use up
indices), the corpus is the kept records' `document.strip()` keyed by that id, and the query's own
passage is the only relevant one. Answers = `[answer]` when present.
"""
from __future__ import annotations

import os
import pathlib

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks.base import Benchmark, Query
from mire_jax.eval.benchmarks.corpus import MemoryCorpus
from mire_jax.eval.benchmarks.image_refs import ImageFile
from mire_jax.eval.benchmarks.readers import BenchmarkFormatError, get_field
from mire_jax.files import read_json_array

MIN_QUESTION_CHARS = 25
MAX_QUERIES = 5000


def load_vid2r_val(root: os.PathLike | str, split: str = "val", *, anno_file: os.PathLike | str | None = None,
                   image_root: os.PathLike | str | None = None, max_queries: int = MAX_QUERIES,
                   min_question_chars: int = MIN_QUESTION_CHARS) -> Benchmark:
    """ViD2R validation (see the module docstring).

    Args:
      root: folder holding `ViD2R.json` (and `images/` unless `image_root` is given).
      split: only "val".
      anno_file: the JSON array to read (e.g. `ViD2R_all.json` or a held-out file).
      image_root: override of `root/images`.
      max_queries, min_question_chars: MIRe's 5000 and 25.
    """
    if split != "val":
        raise ValueError(f"vid2r_val: only split 'val' exists, got {split!r}")
    root = pathlib.Path(root)
    anno_file = os.fspath(anno_file or root / "ViD2R.json")
    image_root = pathlib.Path(image_root) if image_root else root / "images"
    queries, passages, skipped = [], [], 0
    for index, record in enumerate(read_json_array(anno_file, error=BenchmarkFormatError)):
        where = f"{anno_file}: record {index}"
        question = get_field(record, "question", where, str)
        if len(question) < min_question_chars:
            skipped += 1
            continue
        document = get_field(record, "document", where, str).strip()
        image = None
        if "image" in record:
            rel = get_field(record, "image", where, str)
            image = ImageFile(os.fspath(image_root / rel), rel)
        answers = [get_field(record, "answer", where, str)] if "answer" in record else []
        qid = str(index)
        queries.append(Query(qid=qid, question=question, image=image, answers=answers, gold_pids=[qid]))
        passages.append((qid, document))
        if len(queries) >= max_queries:
            break
    notes = (f"skipped {skipped} record(s) with questions under {min_question_chars} characters; "
             f"kept {len(queries)} (at most {max_queries})",)
    corpus, _ = MemoryCorpus.from_pairs(passages, source=anno_file)
    return Benchmark(name="vid2r_val", split=split, queries=queries, corpus=corpus, relevance=metrics.GOLD_ID,
                     notes=notes)
