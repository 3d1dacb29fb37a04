"""OK-VQA with its two retrieval corpora (docs/data_formats.md).

OKVQA-GS (RA-VQA v2's Google-Search corpus), root = the folder holding `RAVQA_v2_data/` (MIRe: data/okvqa):
  RAVQA_v2_data/okvqa/pre-extracted_features/passages/okvqa_full_clean_corpus.csv   `kid,text`, 166,390 rows
  .../passages/retriever_{train,testdev,test}.json                                   queries (test = eval)
  images/coco/{train2014,val2014}/<img_id>.jpg           (MIRe: data/vid2r/images; pass image_root=...)
Published rules: the caption is removed from the question (`question.replace(caption, "").strip()`),
records with empty `ctxs` are dropped, answers = the keys of `answers`, relevance = whole-word regex
falling back to substring where the regex is invalid. The corpus is the CSV row list (no collapsing).

OKVQA-WK11M (Qu et al.'s Wikipedia blocks), root = MIRe's data/okvqa:
  all_blocks.txt (or .gz)  passage_id_to_line_id.json  {train,val,test}2014_pairs_cap_combine_sum.txt
  mscoco_val2014_annotations.json                        answers of val/test queries
  images/coco/{train,val}2014/COCO_{split}2014_%012d.jpg
Published rules: question as-is; answers = the lowercased non-empty `answer`s of the question's val
annotation (keyed by `answer_id`); relevance = whole-word regex, unescaped, invalid patterns raise.
The image split is "train" when the pairs file name contains "train", else "val" (MIRe tests the whole
path; the file name gives the same answer for its layout). For the train split, whose answers are not in
the val annotations, `mscoco_train2014_annotations.json` is used when present, else the record's own
`answers` (same lowercasing): MIRe never evaluates that split.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re

from mire_jax.eval import metrics
from mire_jax.eval.benchmarks.base import Benchmark, Query, collapse_by_id
from mire_jax.eval.benchmarks.corpus import CsvCorpus, JsonlBlocksCorpus
from mire_jax.eval.benchmarks.image_refs import ImageFile
from mire_jax.eval.benchmarks.readers import BenchmarkFormatError, dedupe, get_field
from mire_jax.files import iter_json_lines, read_json, read_json_array

GS_PASSAGES_DIR = pathlib.Path("RAVQA_v2_data", "okvqa", "pre-extracted_features", "passages")
GS_QUERY_FILES = {"train": "retriever_train.json", "testdev": "retriever_testdev.json",
                  "test": "retriever_test.json"}
GS_CORPUS_FILE = "okvqa_full_clean_corpus.csv"

WK11M_SPLITS = ("train", "val", "test")
_COCO_IMG_ID = re.compile(r"COCO_([a-z]+\d{4})_\d+")


@dataclasses.dataclass(frozen=True)
class RetrieverRecord:
    """One record of RA-VQA's retriever JSON (also ReMuQ's), after MIRe's parse_pairs cleanup."""
    where: str
    qid: str
    question: str
    img_id: str
    answers: list[str]
    ctx_ids: list[str]
    ctx_ids_are_str: bool


def parse_retriever_json(path: str) -> tuple[list[RetrieverRecord], int]:
    """Read a retriever_*.json / ReMuQ {train,test}.json: caption removed, empty-`ctxs` records dropped.

    Returns:
      (records in file order, number of records dropped for empty `ctxs`).
    """
    records, dropped = [], 0
    for index, raw in enumerate(read_json_array(path, error=BenchmarkFormatError)):
        where = f"{path}: record {index}"
        qid = get_field(raw, "question_id", where, (int, str))
        question = get_field(raw, "question", where, str)
        if "caption" in raw:
            question = question.replace(get_field(raw, "caption", where, str), "").strip()
        ctxs = get_field(raw, "ctxs", where, list)
        answers = get_field(raw, "answers", where, dict)
        img_id = get_field(raw, "img_id", where, (int, str))
        if not ctxs:
            dropped += 1
            continue
        ctx_ids = [get_field(ctx, "id", f"{where}: ctxs[{i}]", (int, str)) for i, ctx in enumerate(ctxs)]
        records.append(RetrieverRecord(where=where, qid=str(qid), question=question, img_id=str(img_id),
                                       answers=[str(a) for a in answers], ctx_ids=[str(c) for c in ctx_ids],
                                       ctx_ids_are_str=isinstance(ctx_ids[0], str)))
    return records, dropped


def _coco_image_path(img_id: str, where: str) -> str:
    match = _COCO_IMG_ID.fullmatch(img_id)
    if not match:
        raise BenchmarkFormatError(f"{where}: img_id {img_id!r} is not of the form COCO_<split><year>_<digits>")
    return f"coco/{match.group(1)}/{img_id}.jpg"


def load_okvqa_gs(root: os.PathLike | str, split: str = "test", *, passages_dir: os.PathLike | str | None = None,
                  queries_file: os.PathLike | str | None = None, corpus_file: os.PathLike | str | None = None,
                  image_root: os.PathLike | str | None = None) -> Benchmark:
    """OK-VQA over the Google-Search corpus (see the module docstring).

    Args:
      root: folder holding `RAVQA_v2_data/` (and `images/` unless `image_root` is given).
      split: "test" (MIRe's evaluation), "testdev" or "train".
      passages_dir, queries_file, corpus_file, image_root: overrides of the default locations.
    """
    root = pathlib.Path(root)
    if split not in GS_QUERY_FILES:
        raise ValueError(f"okvqa_gs: unknown split {split!r}; expected one of {sorted(GS_QUERY_FILES)}")
    passages_dir = pathlib.Path(passages_dir) if passages_dir else root / GS_PASSAGES_DIR
    queries_file = os.fspath(queries_file or passages_dir / GS_QUERY_FILES[split])
    image_root = pathlib.Path(image_root) if image_root else root / "images"
    records, dropped = parse_retriever_json(queries_file)
    queries = []
    for rec in records:
        rel = _coco_image_path(rec.img_id, f"{queries_file}: question_id {rec.qid}")
        queries.append(Query(qid=rec.qid, question=rec.question, image=ImageFile(os.fspath(image_root / rel), rel),
                             answers=rec.answers, gold_pids=rec.ctx_ids))
    queries, duplicates = collapse_by_id(queries, key=lambda q: q.qid)
    notes = [f"dropped {dropped} record(s) with empty ctxs from {os.path.basename(queries_file)}"] if dropped else []
    if duplicates:
        notes.append(f"collapsed {duplicates} duplicate question_id(s) (last record wins)")
    corpus = CsvCorpus(os.fspath(corpus_file or passages_dir / GS_CORPUS_FILE))
    return Benchmark(name="okvqa_gs", split=split, queries=queries, corpus=corpus,
                     relevance=metrics.WHOLE_WORD_OR_SUBSTRING, notes=tuple(notes))


def _annotation_answers(path: str) -> dict[int, list[str]]:
    """`{question_id: answers}` from an OK-VQA annotation file, MIRe's way (see the module docstring)."""
    data = read_json(path, error=BenchmarkFormatError)
    annotations = get_field(data, "annotations", path, list)
    table: dict[int, list[str]] = {}
    for index, ann in enumerate(annotations):
        where = f"{path}: annotations[{index}]"
        qid = get_field(ann, "question_id", where, int)
        by_answer_id = {}
        for j, answer in enumerate(get_field(ann, "answers", where, list)):
            answer_where = f"{where}.answers[{j}]"
            by_answer_id[get_field(answer, "answer_id", answer_where)] = get_field(answer, "answer", answer_where, str)
        table[qid] = dedupe([a.lower() for a in by_answer_id.values() if a])
    return table


def _blocks_file(root: pathlib.Path) -> pathlib.Path:
    plain = root / "all_blocks.txt"
    gz = root / "all_blocks.txt.gz"
    return gz if not plain.exists() and gz.exists() else plain


def load_okvqa_wk11m(root: os.PathLike | str, split: str = "test", *, pairs_file: os.PathLike | str | None = None,
                     blocks_file: os.PathLike | str | None = None, line_map_file: os.PathLike | str | None = None,
                     annotations_file: os.PathLike | str | None = None,
                     image_root: os.PathLike | str | None = None) -> Benchmark:
    """OK-VQA over the 11M Wikipedia blocks (see the module docstring). The corpus is streamed, never loaded.

    Args:
      root: MIRe's data/okvqa folder (pairs files, all_blocks.txt, line map, annotations, `images/`).
      split: "test" (MIRe's evaluation), "val" or "train".
      pairs_file, blocks_file, line_map_file, annotations_file, image_root: overrides.
    """
    root = pathlib.Path(root)
    if split not in WK11M_SPLITS:
        raise ValueError(f"okvqa_wk11m: unknown split {split!r}; expected one of {WK11M_SPLITS}")
    pairs_file = os.fspath(pairs_file or root / f"{split}2014_pairs_cap_combine_sum.txt")
    image_root = pathlib.Path(image_root) if image_root else root / "images"
    image_split = "train" if "train" in os.path.basename(pairs_file) else "val"
    notes = []
    if annotations_file is None:
        annotations_file = root / f"mscoco_{'train' if split == 'train' else 'val'}2014_annotations.json"
        if split == "train" and not annotations_file.exists():
            annotations_file = None
            notes.append("answers from the pairs file (no train annotation file)")
    answers_by_qid = _annotation_answers(os.fspath(annotations_file)) if annotations_file else None

    queries = []
    for _, where, record in iter_json_lines(pairs_file, error=BenchmarkFormatError, objects_only=False,
                                            skip_blank=False):
        raw_qid = get_field(record, "question_id", where, (int, str))
        try:
            qid = int(raw_qid)
        except ValueError:
            raise BenchmarkFormatError(f"{where}: question_id {raw_qid!r} is not an integer") from None
        image_id = get_field(record, "image_id", where, (int, str))
        if isinstance(image_id, str) and not image_id.isdigit():
            raise BenchmarkFormatError(f"{where}: image_id {image_id!r} is not an integer")
        image_id = int(image_id)
        question = get_field(record, "question", where, str)
        if answers_by_qid is not None:
            if qid not in answers_by_qid:
                raise BenchmarkFormatError(f"{where}: question_id {qid} has no annotation in {annotations_file}")
            answers = answers_by_qid[qid]
        else:
            raw_answers = get_field(record, "answers", where, list)
            answers = dedupe([str(a).lower() for a in raw_answers if a])
        rel = f"coco/{image_split}2014/COCO_{image_split}2014_{image_id:012d}.jpg"
        queries.append(Query(qid=str(qid), question=question, image=ImageFile(os.fspath(image_root / rel), rel),
                             answers=answers, gold_pids=[]))
    queries, duplicates = collapse_by_id(queries, key=lambda q: q.qid)
    if duplicates:
        notes.append(f"collapsed {duplicates} duplicate question_id(s) (last record wins)")
    line_map_file = os.fspath(line_map_file or root / "passage_id_to_line_id.json")
    corpus = JsonlBlocksCorpus(os.fspath(blocks_file or _blocks_file(root)), line_map_path=line_map_file)
    return Benchmark(name="okvqa_wk11m", split=split, queries=queries, corpus=corpus,
                     relevance=metrics.WHOLE_WORD, notes=tuple(notes))
