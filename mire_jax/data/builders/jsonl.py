"""A generic (image + question -> passage) set in JSON Lines, one file per split.

Manual dir: `<split>.jsonl` files (e.g. train.jsonl, validation.jsonl), one record per line:
`{"id": str, "question": str, "image": str (relative to the image root), "document": str,
"document_id": str (optional), "answer": str (optional)}` (the field names of ViD2R on purpose).
"""
from __future__ import annotations

import pathlib
import re

import tensorflow_datasets as tfds

from mire_jax.data.builders import common
from mire_jax.files import iter_json_lines

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class ImageQuestionJsonl(common.PairBuilderBase):
    """Pairs from `<split>.jsonl` files; every such file of the manual dir becomes a split."""

    name = "image_question_jsonl"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put into the manual dir one <split>.jsonl file per split (at least train.jsonl), each line
      {"id": str, "question": str, "image": str, "document": str, "document_id": str?, "answer": str?}
    and the images under images/ (paths in "image" are relative to it), or pass image_root=...
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description="Generic (image, question) -> passage pairs.",
                                     features=common.pair_features())

    def _split_generators(self, dl_manager):
        manual = common.manual_dir_of(dl_manager, self.name, ["train.jsonl"], self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        files = sorted(manual.glob("*.jsonl"))
        if not files:
            raise common.ManualFilesMissingError(self.name, manual, [f"{manual}/<split>.jsonl (e.g. train.jsonl)"],
                                                 self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        for f in files:
            if not _SPLIT_NAME.match(f.stem):
                raise common.RecordError(f"{f}: the file name must be <split>.jsonl with a split name of letters, "
                                         "digits and '_'")
        if self._embed_images:
            common.check_files(self.name, manual, [self.image_root_for(manual)], self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return {f.stem: self._generate_examples(f, self._embedder(manual)) for f in files}

    def _generate_examples(self, path: pathlib.Path, embedder: common.ImageEmbedder):
        for line_no, where, record in iter_json_lines(path, error=common.RecordError):
            document_id = common.require_str(record, "document_id", where, optional=True)
            yield line_no, common.example_from_vid2r_fields(record, where, embedder, document_id=document_id)
        embedder.report(path.stem)
