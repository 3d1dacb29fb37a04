"""A-OKVQA (docs/data_formats.md). Root = the folder holding `aokvqa_v1p0_{train,val,test}.json`, with COCO 2017
images under `images/coco/{train2017,val2017,test2017}/%012d.jpg` (MIRe: data/vid2r/images/coco/...).

Published rules: the corpus is one passage per question of the evaluated file, `" ".join(rationales)`,
keyed by `question_id` (a dict: a repeated id keeps its first position and its last text); the passage
with the query's own id is the only relevant one. Answers = `direct_answers` (not used for relevance).
The test file ships without rationales, so it cannot be loaded as a benchmark (MIRe fails the same way).
"""
from __future__ import annotations

import os
import pathlib

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks.base import Benchmark, Query, collapse_by_id
from mire_jax.eval.benchmarks.corpus import MemoryCorpus
from mire_jax.eval.benchmarks.image_refs import ImageFile
from mire_jax.eval.benchmarks.readers import BenchmarkFormatError, get_field, str_list
from mire_jax.files import read_json_array

AOKVQA_SPLITS = ("train", "val", "test")


def load_aokvqa(root: os.PathLike | str, split: str = "val", *, queries_file: os.PathLike | str | None = None,
                image_root: os.PathLike | str | None = None) -> Benchmark:
    """A-OKVQA (see the module docstring).

    Args:
      root: folder holding the A-OKVQA JSON files (and `images/` unless `image_root` is given).
      split: "val" (MIRe's evaluation) or "train".
      queries_file, image_root: overrides (default image root `images/coco/{split}2017`).
    """
    root = pathlib.Path(root)
    if split not in AOKVQA_SPLITS:
        raise ValueError(f"aokvqa: unknown split {split!r}; expected one of {AOKVQA_SPLITS}")
    queries_file = os.fspath(queries_file or root / f"aokvqa_v1p0_{split}.json")
    image_root = pathlib.Path(image_root) if image_root else root / "images" / "coco" / f"{split}2017"
    queries, passages = [], []
    for index, record in enumerate(read_json_array(queries_file, error=BenchmarkFormatError)):
        where = f"{queries_file}: record {index}"
        qid = str(get_field(record, "question_id", where, (str, int)))
        question = get_field(record, "question", where, str)
        image_id = get_field(record, "image_id", where, int)
        if "rationales" not in record and split == "test":
            raise BenchmarkFormatError(f"{where}: missing field 'rationales' (the A-OKVQA test split has none, "
                                       "so it has no corpus)")
        rationales = str_list(get_field(record, "rationales", where, list), "rationales", where)
        answers = str_list(record.get("direct_answers", []), "direct_answers", where)
        rel = f"{image_id:012d}.jpg"
        queries.append(Query(qid=qid, question=question, image=ImageFile(os.fspath(image_root / rel), rel),
                             answers=answers, gold_pids=[qid]))
        passages.append((qid, " ".join(rationales)))
    queries, duplicates = collapse_by_id(queries, key=lambda q: q.qid)
    corpus, _ = MemoryCorpus.from_pairs(passages, source=queries_file)
    notes = [f"collapsed {duplicates} duplicate question_id(s) (last record wins)"] if duplicates else []
    return Benchmark(name="aokvqa", split=split, queries=queries, corpus=corpus, relevance=metrics.GOLD_ID,
                     notes=tuple(notes))
