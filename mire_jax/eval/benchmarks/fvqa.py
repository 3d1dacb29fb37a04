"""FVQA (docs/data_formats.md): fact-based visual questions over a knowledge base of fact sentences, from the
release (github.com/wangpengnorman/FVQA, `new_dataset_release.zip`), root holding
    new_dataset_release/all_qs_dict_release.json      {qid: {"question", "img_file", "answer", "fact": [fact ids],
                                                             "fact_surface", ...}}
    new_dataset_release/all_fact_triples_release.json {fact id: {"surface": "[[a cat]] is a kind of [[animal]]",
                                                                 "e1_label", "r", "e2_label", ...}}
    new_dataset_release/images/<img_file>
    Name_Lists/{train,test}_list_{0..4}.txt            the image files of the five train/test folds

Published rules (`dataset/fvqa.py`, `FVQALoader`): a query is `question` with the image `images/<img_file>`, keyed by
its key in the questions file; the corpus is every fact, its `surface` with every "[" and "]" removed, keyed by
fact id (a dict); relevant: the query's `fact` ids. The published evaluation reads the whole questions file
(split "all", the default); "test0" ... "test4" and "train0" ... "train4" keep the questions whose image is in
that fold's name list. The candidates are texts; the images are the queries'.
"""
from __future__ import annotations

import os
import pathlib
import re

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks.base import Benchmark, Query
from mire_jax.eval.benchmarks.corpus import MemoryCorpus
from mire_jax.eval.benchmarks.image_refs import ImageFile
from mire_jax.eval.benchmarks.readers import BenchmarkFormatError, get_field, str_list
from mire_jax.files import read_json

FVQA_SPLITS = ("all",) + tuple(f"{part}{fold}" for part in ("test", "train") for fold in range(5))
RELEASE_DIR = "new_dataset_release"
_BRACKETS = re.compile(r"[\[\]]")


def _fold_images(root: pathlib.Path, split: str) -> set[str]:
    path = root / "Name_Lists" / f"{split[:-1]}_list_{split[-1]}.txt"
    if not path.exists():
        raise FileNotFoundError(f"fvqa: split {split!r} needs {path} (the release's Name_Lists/)")
    with open(path, encoding="utf-8") as f:
        return {line.strip() for line in f if line.strip()}


def load_fvqa(root: os.PathLike | str, split: str = "all", *, questions_file: os.PathLike | str | None = None,
              facts_file: os.PathLike | str | None = None, image_root: os.PathLike | str | None = None) -> Benchmark:
    """FVQA (see the module docstring).

    Args:
      root: the folder holding `new_dataset_release/` (and `Name_Lists/` for a fold split).
      split: "all" (the published evaluation), or "test0".."test4" / "train0".."train4".
      questions_file, facts_file, image_root: overrides.
    """
    root = pathlib.Path(root)
    if split not in FVQA_SPLITS:
        raise ValueError(f"fvqa: unknown split {split!r}; expected 'all', 'test0'..'test4' or 'train0'..'train4'")
    release = root / RELEASE_DIR
    questions_file = os.fspath(questions_file or release / "all_qs_dict_release.json")
    facts_file = os.fspath(facts_file or release / "all_fact_triples_release.json")
    image_root = pathlib.Path(image_root) if image_root else release / "images"
    fold = None if split == "all" else _fold_images(root, split)

    facts = read_json(facts_file, error=BenchmarkFormatError)
    if not isinstance(facts, dict):
        raise BenchmarkFormatError(f"{facts_file}: expected a JSON object keyed by fact id, found "
                                   f"{type(facts).__name__}")
    pids, texts = [], []
    for fact_id, fact in facts.items():
        surface = get_field(fact, "surface", f"{facts_file}: fact {fact_id!r}", str)
        pids.append(str(fact_id))
        texts.append(_BRACKETS.sub("", surface))
    corpus = MemoryCorpus(pids, texts, source=facts_file)

    questions = read_json(questions_file, error=BenchmarkFormatError)
    if not isinstance(questions, dict):
        raise BenchmarkFormatError(f"{questions_file}: expected a JSON object keyed by question id, found "
                                   f"{type(questions).__name__}")
    known = set(pids)
    queries, unknown_facts = [], 0
    for qid, record in questions.items():
        where = f"{questions_file}: question {qid!r}"
        img_file = get_field(record, "img_file", where, str)
        if fold is not None and img_file not in fold:
            continue
        gold = str_list(get_field(record, "fact", where, list), "fact", where)
        unknown_facts += sum(1 for pid in gold if pid not in known)
        answer = get_field(record, "answer", where, (str, int, float))
        queries.append(Query(qid=str(qid), question=get_field(record, "question", where, str),
                             image=ImageFile(os.fspath(image_root / img_file), img_file), answers=[str(answer)],
                             gold_pids=gold))
    notes = [f"{unknown_facts} gold fact id(s) are not in {os.path.basename(facts_file)}"] if unknown_facts else []
    return Benchmark(name="fvqa", split=split, queries=queries, corpus=corpus, relevance=metrics.GOLD_ID,
                     notes=tuple(notes))
