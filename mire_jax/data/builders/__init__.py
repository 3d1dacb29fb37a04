"""tensorflow-datasets builders (array_record, no TensorFlow needed) for MIRe's training data.

  vid2r                 ViD2R JSON (pre-training)
  m2kr                  M2KR tables, configs `<task>_data` / `<task>_passages` (EVQA, Infoseek, OKVQA, ...)
  image_question_jsonl  a generic `<split>.jsonl` set with ViD2R's field names
  okvqa_gs              OK-VQA with RA-VQA's Google-Search passages (fine-tuning), config `seed<N>`
  remuq                 ReMuQ with WebQA's tsv images (fine-tuning)
  aokvqa                A-OKVQA, positive = the joined rationales (fine-tuning)

All are manual-dir builders: `prepare(...)` builds one into `data_dir`; read it back with
`builder.as_data_source()` or `open_split(...)`.
"""
from __future__ import annotations

import os
from typing import Any

import tensorflow_datasets as tfds

from mire_jax.data.builders.aokvqa import Aokvqa
from mire_jax.data.builders.common import FILE_FORMAT, ManualFilesMissingError, RecordError, pair_features
from mire_jax.data.builders.jsonl import ImageQuestionJsonl
from mire_jax.data.builders.m2kr import M2kr, M2krConfig
from mire_jax.data.builders.okvqa_gs import OkvqaGs, OkvqaGsConfig
from mire_jax.data.builders.remuq import Remuq
from mire_jax.data.builders.vid2r import Vid2r

BUILDERS = {cls.name: cls for cls in (Vid2r, M2kr, ImageQuestionJsonl, OkvqaGs, Remuq, Aokvqa)}


def make_builder(name: str, *, data_dir: str | os.PathLike, config: Any = None, **kwargs) -> tfds.core.DatasetBuilder:
    """A builder by name (see `BUILDERS`); `kwargs` go to its constructor (`image_root`, `embed_images`;
    `webqa_dir` for remuq)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown dataset builder {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](data_dir=os.fspath(data_dir), config=config, **kwargs)


def prepare(name: str, *, data_dir: str | os.PathLike, manual_dir: str | os.PathLike, config: Any = None,
            **kwargs) -> tfds.core.DatasetBuilder:
    """Build dataset `name` from the files in `manual_dir` into `data_dir` (no-op when already built).

    Raises:
      ManualFilesMissingError: listing every required file that is not in `manual_dir`.
      RecordError: a malformed record (file and line/row named).
    """
    builder = make_builder(name, data_dir=data_dir, config=config, **kwargs)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)),
        file_format=FILE_FORMAT)
    return builder


def open_split(dataset_dir: str | os.PathLike, split: str):
    """Random-access data source of one split of a built dataset, from its folder alone
    (`<data_dir>/<name>/[<config>/]<version>`): no builder code or image files needed."""
    return tfds.builder_from_directory(os.fspath(dataset_dir)).as_data_source(split=split)


__all__ = ["Aokvqa", "BUILDERS", "FILE_FORMAT", "ImageQuestionJsonl", "M2kr", "M2krConfig", "ManualFilesMissingError",
           "OkvqaGs", "OkvqaGsConfig", "RecordError", "Remuq", "Vid2r", "make_builder", "open_split",
           "pair_features", "prepare"]
