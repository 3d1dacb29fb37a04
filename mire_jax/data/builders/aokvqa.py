"""A-OKVQA (Schwenk et al., 2022) as (image + question -> rationales) pairs, MIRe's A-OKVQA fine-tuning set
(`dataset/aokvqa.py`, `cfgs/mire_train_aokvqa.yaml` in the public repository yeongjoonJu/MIRe).

Files: `aokvqa_v1p0_train.json` and `aokvqa_v1p0_val.json`, JSON arrays of
  {"split", "image_id": int, "question_id": str, "question", "choices", "correct_choice_idx",
   "direct_answers": [str], "difficult_direct_answer", "rationales": [str]}
and the COCO 2017 images under `images/coco/{train2017,val2017}/` of the manual dir (MIRe: `data/vid2r/images`),
or `image_root=`.

As MIRe: the passage is the three rationales joined by a space, its id the `question_id`; the image is
`{image_id:012d}.jpg` of the file's COCO folder (train2017 for train, val2017 for val). Splits: `train` and
`validation` (the val file). MIRe itself validates its fine-tuning on a random hold-out of the train file; the
val file is what it evaluates on (with the val rationales as the corpus).
"""
from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from mire_jax import files
from mire_jax.data.builders import common

# tfds split -> (file, COCO image folder under the image root)
SPLITS = {"train": ("aokvqa_v1p0_train.json", "coco/train2017"),
          "validation": ("aokvqa_v1p0_val.json", "coco/val2017")}


class Aokvqa(common.PairBuilderBase):
    """A-OKVQA (question -> joined rationales) pairs; splits `train` and `validation`."""

    name = "aokvqa"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download A-OKVQA (https://github.com/allenai/aokvqa): put aokvqa_v1p0_train.json and aokvqa_v1p0_val.json
    into the manual dir, and the COCO 2017 images under images/coco/train2017/ and images/coco/val2017/
    (MIRe: data/vid2r/images), or pass image_root=...
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=common.pair_features(),
                                     homepage="https://allenai.org/project/a-okvqa/home",
                                     description="A-OKVQA: (COCO image, question) -> joined rationales.")

    def _split_generators(self, dl_manager):
        files = [f for f, _ in SPLITS.values()]
        manual = common.manual_dir_of(dl_manager, self.name, files, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        required = [manual / f for f in files]
        if self._embed_images:
            required.append(self.image_root_for(manual))
        common.check_files(self.name, manual, required, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return {split: self._generate_examples(manual / f, folder, self._embedder(manual), split)
                for split, (f, folder) in SPLITS.items()}

    def _generate_examples(self, path: pathlib.Path, folder: str, embedder: common.ImageEmbedder, split: str):
        for index, record in enumerate(files.read_json_array(path, error=common.RecordError)):
            where = f"{path} record {index}"
            if not isinstance(record, dict):
                raise common.RecordError(f"{where}: expected an object, got {type(record).__name__}")
            question_id = common.require_str(record, "question_id", where)
            rationales = _str_list(record, "rationales", where)
            if not rationales:
                raise common.RecordError(f"{where}: empty 'rationales' (no passage)")
            image_id = f"{folder}/{_coco_number(record, where):012d}.jpg"
            yield index, common.pair_example(
                id=question_id, question=common.require_str(record, "question", where), image_id=image_id,
                image=embedder(image_id), document=" ".join(rationales),
                document_id=question_id, answers=_str_list(record, "direct_answers", where, optional=True))
        embedder.report(split)


def _coco_number(record: dict, where: str) -> int:
    value = record.get("image_id")
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    raise common.RecordError(f"{where}: field 'image_id' must be a COCO image number, got {value!r}")


def _str_list(record: dict, key: str, where: str, *, optional: bool = False) -> list[str]:
    value = record.get(key)
    if value is None and optional:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise common.RecordError(f"{where}: field {key!r} must be a list of strings, got {value!r}")
    return value
