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

The record schema is shared with ReMuQ (`retriever_records.py`).
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from mire_jax.data.builders import common
from mire_jax.data.builders.retriever_records import usable_records

log = logging.getLogger(__name__)

PASSAGES_SUBDIR = pathlib.PurePosixPath("RAVQA_v2_data/okvqa/pre-extracted_features/passages")
TRAIN_FILES = ("retriever_train_w_negs.json", "retriever_train.json")  # first found wins
VALIDATION_FILE = "retriever_testdev.json"
_COCO_IMG_ID = re.compile(r"^COCO_(train|val)2014_(\d{1,12})$")


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
        seed = self.builder_config.seed
        for index, where, rec in usable_records(path, f"{self.name}/{split}"):
            image_id = coco2014_image_id(rec.img_id, where)
            doc_id, doc = rec.ctxs[positive_index(seed, index, len(rec.ctxs))]
            yield index, common.pair_example(id=rec.question_id, question=rec.question, image_id=image_id,
                                             image=embedder(image_id), document=doc, document_id=doc_id,
                                             answers=rec.answers, negs=rec.negs)
        embedder.report(split)

