"""OK-VQA with RA-VQA's Google-Search passages (Lin & Byrne, 2022), the fine-tuning set of MIRe's OK-VQA (GS) results.

Files (RA-VQA v2 data, `RAVQA_v2_data/okvqa/pre-extracted_features/passages/`): one JSON array per split of
  {"question_id": int, "img_id": "COCO_val2014_000000297147", "question": str, "caption": str,
   "answers": {answer: count}, "ctxs": [{"id", "text", "has_answer"}], "negs": [str] (optional)}
`ctxs` are the weakly-labelled positives (passages holding an answer; may be empty).

Splits, as in MIRe's `cfgs/mire_train_okvqa_gs.yaml` (public repository yeongjoonJu/MIRe):
  train       `retriever_train_w_negs.json` when present (the authors' own file: `retriever_train.json` plus
              hard negatives `negs`), else `retriever_train.json`
  validation  `retriever_testdev.json`

What MIRe's loader (`dataset/vqa_ret.py: parse_pairs`, `dataset/okvqa.py`) does and this builder reproduces:
records with empty `ctxs` are dropped (counted in the log); the caption appended to the question is removed
(`question.replace(caption, "").strip()`); the positive is ONE ctx picked at random when the data is loaded and
kept for every epoch (in the validation split too); the image is `coco/{train|val}2014/<img_id>.jpg` under the
image root (MIRe: `data/vid2r/images`).

Deliberate difference: MIRe picks the ctx with the process's unseeded `random.choice`, so its positives differ
from run to run. Here the pick is a pure function of (`OkvqaGsConfig.seed`, index of the record in its file):
`numpy.random.default_rng(SeedSequence([seed, index])).integers(len(ctxs))`, the same on every rebuild and
machine. Another seed gives another draw (config `seed<N>`).

The helpers for this record schema (`parse_retriever_record`, `read_json_array`) are shared with ReMuQ, whose
files use the same schema.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from mire_jax.data.builders import common

log = logging.getLogger(__name__)

PASSAGES_SUBDIR = pathlib.PurePosixPath("RAVQA_v2_data/okvqa/pre-extracted_features/passages")
TRAIN_FILES = ("retriever_train_w_negs.json", "retriever_train.json")  # first found wins
VALIDATION_FILE = "retriever_testdev.json"
_COCO_IMG_ID = re.compile(r"^COCO_(train|val)2014_(\d{1,12})$")


@dataclasses.dataclass(frozen=True)
class RetrieverRecord:
    """One usable (non-empty `ctxs`) record of the RA-VQA retriever schema, validated."""
    question_id: str
    img_id: str
    question: str  # caption already removed
    ctxs: tuple[tuple[str, str], ...]  # (id, text) of every positive
    answers: tuple[str, ...]
    negs: tuple[str, ...]


def read_json_array(path: pathlib.Path) -> list:
    """A file holding one JSON array; `RecordError` naming the file otherwise."""
    with open(path, encoding="utf-8") as f:
        try:
            records = json.load(f)
        except json.JSONDecodeError as e:
            raise common.RecordError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(records, list):
        raise common.RecordError(f"{path}: expected a JSON array of records, got {type(records).__name__}")
    return records


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


def coco2014_image_id(img_id: str, where: str) -> str:
    """`COCO_val2014_000000297147` -> `coco/val2014/COCO_val2014_000000297147.jpg` (MIRe's `imageid2path`)."""
    m = _COCO_IMG_ID.match(img_id)
    if not m:
        raise common.RecordError(f"{where}: img_id {img_id!r} is not of the form COCO_{{train|val}}2014_<digits>")
    split, number = m.group(1), m.group(2).zfill(12)
    return f"coco/{split}2014/COCO_{split}2014_{number}.jpg"


def positive_index(seed: int, record_index: int, num_ctxs: int) -> int:
    """Which ctx is the positive of the record at `record_index` of its file (see the module docstring)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, record_index]))
    return int(rng.integers(num_ctxs))


def log_dropped(builder_name: str, split: str, dropped: int, total: int) -> None:
    if dropped:
        log.info("%s/%s: dropped %d of %d records with empty ctxs (no positive passage), as MIRe does",
                 builder_name, split, dropped, total)


@dataclasses.dataclass
class OkvqaGsConfig(tfds.core.BuilderConfig):
    """`seed` draws each record's positive ctx (a different seed is a different dataset)."""
    seed: int = 0

    @classmethod
    def make(cls, seed: int = 0) -> "OkvqaGsConfig":
        return cls(name=f"seed{seed}", seed=seed,
                   description=f"positives drawn from the ctxs with seed {seed}")


class OkvqaGs(common.PairBuilderBase):
    """OK-VQA (Google-Search passages) pairs; splits `train` and `validation` (see the module docstring)."""

    name = "okvqa_gs"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [OkvqaGsConfig.make(0)]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download RA-VQA's data (RAVQA_v2_data) and point the manual dir at the folder that holds
    {PASSAGES_SUBDIR}/ (or at that passages/ folder itself). It needs
      retriever_train_w_negs.json or retriever_train.json, and retriever_testdev.json,
    and the COCO 2014 images under images/coco/{{train2014,val2014}}/ of the manual dir
    (MIRe: data/vid2r/images), or pass image_root=...
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, features=common.pair_features(), homepage="https://arxiv.org/abs/2411.08334",
            description="OK-VQA questions with RA-VQA's Google-Search passages as positives (MIRe fine-tuning).")

    def _split_generators(self, dl_manager):
        manual = common.manual_dir_of(dl_manager, self.name, [str(PASSAGES_SUBDIR / VALIDATION_FILE)],
                                      self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        passages = manual / PASSAGES_SUBDIR if (manual / PASSAGES_SUBDIR).is_dir() else manual
        train = next((passages / f for f in TRAIN_FILES if (passages / f).is_file()), None)
        required = [passages / VALIDATION_FILE]
        if self._embed_images:
            required.append(self.image_root_for(manual))
        missing = [] if train else [f"{passages / TRAIN_FILES[0]} (or {TRAIN_FILES[1]})"]
        missing += [str(p) for p in required if not p.exists()]
        if missing:
            raise common.ManualFilesMissingError(self.name, manual, missing, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        log.info("%s: train split from %s", self.name, train)
        return {"train": self._generate_examples(train, self._embedder(manual), "train"),
                "validation": self._generate_examples(passages / VALIDATION_FILE, self._embedder(manual),
                                                      "validation")}

    def _generate_examples(self, path: pathlib.Path, embedder: common.ImageEmbedder, split: str):
        records = read_json_array(path)
        seed = self.builder_config.seed
        dropped = 0
        for index, raw in enumerate(records):
            where = f"{path} record {index}"
            rec = parse_retriever_record(raw, where)
            if rec is None:
                dropped += 1
                continue
            image_id = coco2014_image_id(rec.img_id, where)
            doc_id, doc = rec.ctxs[positive_index(seed, index, len(rec.ctxs))]
            yield index, common.pair_example(id=rec.question_id, question=rec.question, image_id=image_id,
                                             image=embedder(image_id), document=doc, document_id=doc_id,
                                             answers=rec.answers, negs=rec.negs)
        log_dropped(self.name, split, dropped, len(records))
        embedder.report(split)

