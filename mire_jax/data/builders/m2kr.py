"""M2KR (PreFLMR's benchmark suite, docs/data_formats.md): `{task}_data` and `{task}_passages` tables.

Manual dir = a copy of the Hugging Face repo layout (or of `datasets.save_to_disk` folders):
  {task}_data/{split}-*.parquet                   or {task}_data/ saved with DatasetDict.save_to_disk
  {task}_passages/{split}_passages-*.parquet      or {task}_passages/ saved with save_to_disk
  images/{task}/...                               image root (MIRe: data/evqa, data/infoseek_images);
                                                  pass image_root=... to point elsewhere
Config `<task>_data` yields pairs: positive = `pos_item_contents[0]`, its id `pos_item_ids[0]`; query text
`question` (the `instruction` is stored beside it); image = `img_path` (Infoseek: its basename, as MIRe does).
Config `<task>_passages` yields the passage tables (`passage_id`, `passage_content`).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow_datasets as tfds

from mire_jax import files
from mire_jax.data.builders import common

# Splits of the hub repo per task (Infoseek has no valid split).
TASK_SPLITS = {
    "EVQA": ("train", "valid", "test"),
    "Infoseek": ("train", "test"),
    "OKVQA": ("train", "valid", "test"),
}
# Tasks whose images MIRe opens by basename (flattened image folder).
BASENAME_TASKS = ("Infoseek",)


@dataclasses.dataclass
class M2krConfig(tfds.core.BuilderConfig):
    """One M2KR table: `task` (EVQA, Infoseek, OKVQA, ...), `table` ("data" or "passages"), its `splits`
    (data split names; the passage splits are `<split>_passages`), `image_basename` (open images by basename)."""
    task: str = "EVQA"
    table: str = "data"
    splits: tuple[str, ...] = ("train", "valid", "test")
    image_basename: bool = False

    @classmethod
    def make(cls, task: str, table: str, splits: Sequence[str] | None = None) -> "M2krConfig":
        if table not in ("data", "passages"):
            raise ValueError(f"M2KR table must be 'data' or 'passages', got {table!r}")
        splits = tuple(splits or TASK_SPLITS.get(task, ("train", "test")))
        return cls(name=f"{task}_{table}", task=task, table=table, splits=splits,
                   image_basename=task in BASENAME_TASKS, description=f"M2KR {task} {table} table")


def _passage_features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({"passage_id": tfds.features.Text(), "passage_content": tfds.features.Text()})


class M2kr(common.PairBuilderBase):
    """M2KR tables as tfds datasets (see the module docstring)."""

    name = "m2kr"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [M2krConfig.make(task, table) for task in TASK_SPLITS for table in ("data", "passages")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download BByrneLab/multi_task_multi_modal_knowledge_retrieval_benchmark_M2KR (the `{task}_data` and
    `{task}_passages` folders of parquet files, or DatasetDict.save_to_disk folders of the same names) into
    the manual dir, and the task's images under images/{task}/ (or pass image_root=...).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        features = common.pair_features() if cfg.table == "data" else _passage_features()
        return tfds.core.DatasetInfo(builder=self, description=f"M2KR {cfg.task} {cfg.table}.", features=features,
                                     homepage="https://huggingface.co/datasets/BByrneLab/"
                                              "multi_task_multi_modal_knowledge_retrieval_benchmark_M2KR")

    def _default_image_root(self, manual_dir: pathlib.Path) -> pathlib.Path:
        return manual_dir / "images" / self.builder_config.task

    def _split_names(self) -> list[tuple[str, str]]:
        """(tfds split name, file prefix) per split of this table."""
        cfg = self.builder_config
        if cfg.table == "data":
            return [(s, s) for s in cfg.splits]
        return [(f"{s}_passages", f"{s}_passages") for s in cfg.splits]

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        folder_name = f"{cfg.task}_{cfg.table}"
        manual = common.manual_dir_of(dl_manager, self.name, [folder_name], self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        folder = manual / folder_name
        sources, missing = {}, []
        for split, prefix in self._split_names():
            files = _table_files(folder, prefix)
            if files:
                sources[split] = files
            else:
                missing.append(f"{folder}/{prefix}-*.parquet (or a save_to_disk split folder {folder}/{prefix}/)")
        if cfg.table == "data" and self._embed_images:
            root = self.image_root_for(manual)
            if not root.is_dir():
                missing.append(f"{root}/ (image root)")
        if missing:
            raise common.ManualFilesMissingError(self.name, manual, missing, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        if cfg.table == "passages":
            return {split: self._generate_passages(files) for split, files in sources.items()}
        return {split: self._generate_examples(files, self._embedder(manual), split)
                for split, files in sources.items()}

    def _generate_examples(self, files: list[pathlib.Path], embedder: common.ImageEmbedder, split: str):
        basename = self.builder_config.image_basename
        for key, where, row in _iter_rows(files):
            pos_contents = _str_list(row, "pos_item_contents", where)
            if not pos_contents:
                raise common.RecordError(f"{where}: empty pos_item_contents (no positive passage)")
            pos_ids = _str_list(row, "pos_item_ids", where, optional=True)
            img_path = common.require_str(row, "img_path", where)
            image_id = os.path.basename(img_path) if basename else common.normalize_image_id(img_path)
            yield key, common.pair_example(
                id=common.require_str(row, "question_id", where),
                question=common.require_str(row, "question", where),
                instruction=common.require_str(row, "instruction", where, optional=True),
                image_id=image_id,
                image=embedder(image_id),
                document=pos_contents[0],
                document_id=pos_ids[0] if pos_ids else "",
                answers=_str_list(row, "answers", where, optional=True),
            )
        embedder.report(split)

    def _generate_passages(self, files: list[pathlib.Path]):
        for key, where, row in _iter_rows(files):
            yield key, {"passage_id": common.require_str(row, "passage_id", where),
                        "passage_content": common.require_str(row, "passage_content", where)}


def _table_files(folder: pathlib.Path, prefix: str) -> list[pathlib.Path]:
    """The parquet shards of one split, or the arrow files of a save_to_disk split folder."""
    parquet = sorted(folder.glob(f"{prefix}-*.parquet"))
    if parquet:
        return parquet
    state = folder / prefix / "state.json"
    if state.is_file():
        names = [d["filename"] for d in files.read_json(state, error=common.RecordError).get("_data_files", [])]
        return [folder / prefix / n for n in names]
    return []


def _iter_rows(files: list[pathlib.Path]) -> Iterator[tuple[str, str, dict]]:
    """(unique key, "file row N", row dict) for every row of the files, in order, a record batch at a time."""
    for path in files:
        for row_index, row in enumerate(_rows_of(path)):
            yield f"{path.name}/{row_index}", f"{path} row {row_index}", row


def _rows_of(path: pathlib.Path) -> Iterator[dict]:
    if path.suffix == ".parquet":
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    else:  # datasets' save_to_disk writes Arrow IPC streams
        batches = iter(pa.ipc.open_stream(pa.memory_map(str(path))))
    for batch in batches:
        yield from batch.to_pylist()


def _str_list(row: dict, key: str, where: str, *, optional: bool = False) -> list[str]:
    value = row.get(key)
    if value is None:
        if optional:
            return []
        raise common.RecordError(f"{where}: missing required field {key!r} (fields present: {sorted(row)})")
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, np.ndarray)):
        raise common.RecordError(f"{where}: field {key!r} must be a list of strings, got {type(value).__name__}")
    return [str(v) for v in value]
