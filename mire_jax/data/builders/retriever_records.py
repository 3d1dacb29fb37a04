"""Records of RA-VQA's retriever schema, shared by the OK-VQA Google-Search files and ReMuQ: one JSON array of
  {"question_id", "img_id", "question", "caption" (optional), "answers": {answer: count},
   "ctxs": [{"id", "text", ...}], "negs": [str] (optional)}
As MIRe's loader (`dataset/vqa_ret.py: parse_pairs` in the public repository yeongjoonJu/MIRe), a record whose
`ctxs` is empty is dropped, and a caption inside the question is removed.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Iterator

from mire_jax import files
from mire_jax.data.builders import common

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RetrieverRecord:
    """One usable (non-empty `ctxs`) record of the RA-VQA retriever schema, validated."""
    question_id: str
    img_id: str
    question: str  # caption already removed
    ctxs: tuple[tuple[str, str], ...]  # (id, text) of every positive
    answers: tuple[str, ...]
    negs: tuple[str, ...]


def parse_retriever_record(record, where: str) -> RetrieverRecord | None:
    """Validate one record of the schema; None when its `ctxs` is empty (MIRe drops those).
    Errors (`RecordError`) name `where`."""
    if not isinstance(record, dict):
        raise common.RecordError(f"{where}: expected an object, got {type(record).__name__}")
    question = common.require_str(record, "question", where)
    if record.get("caption") is not None:
        question = question.replace(common.require_str(record, "caption", where), "").strip()
    answers = record.get("answers")
    if not isinstance(answers, dict):
        raise common.RecordError(f"{where}: field 'answers' must be an object {{answer: count}}, "
                                 f"got {type(answers).__name__}")
    ctxs = record.get("ctxs")
    if not isinstance(ctxs, list):
        raise common.RecordError(f"{where}: field 'ctxs' must be a list of passages, got {type(ctxs).__name__}")
    parsed_ctxs = []
    for i, ctx in enumerate(ctxs):
        if not isinstance(ctx, dict):
            raise common.RecordError(f"{where}: ctxs[{i}] must be an object, got {type(ctx).__name__}")
        parsed_ctxs.append((common.require_str(ctx, "id", f"{where} ctxs[{i}]"),
                            common.require_str(ctx, "text", f"{where} ctxs[{i}]").strip()))
    negs = record.get("negs") or []
    if not isinstance(negs, list) or not all(isinstance(n, str) for n in negs):
        raise common.RecordError(f"{where}: field 'negs' must be a list of strings")
    # The id fields are validated even for a dropped record: a malformed file should not pass unnoticed.
    question_id = common.require_str(record, "question_id", where)
    img_id = common.require_str(record, "img_id", where)
    if not parsed_ctxs:
        return None
    return RetrieverRecord(question_id=question_id, img_id=img_id, question=question, ctxs=tuple(parsed_ctxs),
                           answers=tuple(str(a) for a in answers), negs=tuple(negs))


def usable_records(path: pathlib.Path, name: str) -> Iterator[tuple[int, str, RetrieverRecord]]:
    """(index in the file, where, record) of every record with a positive; logs how many were dropped."""
    records = files.read_json_array(path, error=common.RecordError)
    dropped = 0
    for index, raw in enumerate(records):
        where = f"{path} record {index}"
        rec = parse_retriever_record(raw, where)
        if rec is None:
            dropped += 1
            continue
        yield index, where, rec
    if dropped:
        log.info("%s: dropped %d of %d records with empty ctxs (no positive passage), as MIRe does", name, dropped,
                 len(records))
