"""ViD2R, MIRe's pre-training set (docs/data_formats.md): one JSON array of
`{"image", "id", "question", "document", "answer", ["negs"]}`, images relative to an image root."""
from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from mire_jax import files
from mire_jax.data.builders import common

# The README of MIRe calls the file ViD2R.json, its configs ViD2R_all.json: either is accepted.
ANNOTATION_FILES = ("ViD2R.json", "ViD2R_all.json")


class Vid2r(common.PairBuilderBase):
    """ViD2R (image + question -> converted passage) pairs; one `train` split."""

    name = "vid2r"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put into the manual dir:
      ViD2R.json (or ViD2R_all.json)   the output of MIRe's runs/convert_tasks.py
      images/                          the image root its `image` paths are relative to
                                       (MIRe: data/vid2r/images); or pass image_root=...
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description="ViD2R: (image, question) -> passage pairs.",
                                     features=common.pair_features(), homepage="https://arxiv.org/abs/2411.08334")

    def _split_generators(self, dl_manager):
        manual = common.manual_dir_of(dl_manager, self.name, ANNOTATION_FILES[:1], self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        found = [manual / f for f in ANNOTATION_FILES if (manual / f).exists()]
        if not found:
            raise common.ManualFilesMissingError(
                self.name, manual, [f"{manual / ANNOTATION_FILES[0]} (or {ANNOTATION_FILES[1]})"],
                self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        if self._embed_images:
            common.check_files(self.name, manual, [self.image_root_for(manual)], self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return {"train": self._generate_examples(found[0], self._embedder(manual))}

    def _generate_examples(self, path: pathlib.Path, embedder: common.ImageEmbedder):
        for index, record in enumerate(files.read_json_array(path, error=common.RecordError)):
            where = f"{path} record {index}"
            if not isinstance(record, dict):
                raise common.RecordError(f"{where}: expected an object, got {type(record).__name__}")
            negs = _negative_passages(record.get("negs") or [], where)
            yield index, common.example_from_vid2r_fields(record, where, embedder, negs=negs)
        embedder.report("train")


def _negative_passages(negs, where: str) -> list[str]:
    """`negs` holds the other records of the same image (dicts with a `document`) or plain passages."""
    out = []
    for i, neg in enumerate(negs):
        if isinstance(neg, str):
            out.append(neg)
        elif isinstance(neg, dict):
            out.append(common.require_str(neg, "document", f"{where} negs[{i}]").strip())
        else:
            raise common.RecordError(f"{where}: negs[{i}] must be an object or a string")
    return out
