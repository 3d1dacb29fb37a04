"""ReMuQ (Luo et al., 2023, "End-to-end knowledge retrieval with multi-modal queries"), the set of MIRe's ReMuQ
fine-tuning (`cfgs/mire_train_remuq.yaml` in the public repository yeongjoonJu/MIRe).

Files:
  <manual>/train.json, test.json   the RA-VQA retriever schema (`retriever_records.py`): `question_id`, `img_id` (a WebQA
                                   image id such as 30079629), `question`, `answers` {answer: count},
                                   `ctxs` [{"id", "text"}], optional `caption`
  webqa/imgs.tsv                   WebQA's images, lines `<image_id>\\t<base64 JPEG>`
  webqa/imgs.lineidx               the byte offset of every tsv line, one decimal number a line
MIRe keeps the WebQA files in `data/webqa` beside `data/remuq`: the builder looks in `<manual>/webqa/`, then
`<manual>/../webqa/`, unless `webqa_dir=` names the folder.

As MIRe's loader (`dataset/vqa_ret.py: parse_pairs`, `dataset/remuq.py`): the positive is `ctxs[0]` (not a random
one), records with empty `ctxs` are dropped, a `caption` is removed from the question, and the image of `img_id`
is the tsv line at `lineidx[int(img_id) % 10_000_000]`. Unlike MIRe, the id written on that line is checked
against `img_id` (a mismatch is a `RecordError`). The decoded JPEG bytes are embedded in the record; its
`image_id` is `webqa/<img_id>.jpg` (the key of the vision-feature cache).
Splits: `train`, and `test` when `test.json` is there (MIRe fine-tunes on train only).
"""
from __future__ import annotations

import base64
import binascii
import os
import pathlib

import tensorflow_datasets as tfds

from mire_jax.data.builders import common
from mire_jax.data.builders.retriever_records import usable_records

SPLIT_FILES = {"train": "train.json", "test": "test.json"}
TSV, LINEIDX = "imgs.tsv", "imgs.lineidx"
# WebQA image ids are offset by 10^7 per source; the line number is the id modulo that (MIRe's lookup).
_LINE_MODULUS = 10_000_000


class WebqaImages:
    """Random access to the images of WebQA's `imgs.tsv` through `imgs.lineidx` (use as a context manager)."""

    def __init__(self, webqa_dir: pathlib.Path):
        self.tsv_path = webqa_dir / TSV
        self.lineidx_path = webqa_dir / LINEIDX
        self.offsets = _read_lineidx(self.lineidx_path)
        self._file = None

    def __enter__(self) -> "WebqaImages":
        self._file = open(self.tsv_path, "rb")
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def read(self, img_id: str, where: str) -> bytes:
        """The encoded image of WebQA id `img_id`; `RecordError` naming `where` when it cannot be found."""
        try:
            line_no = int(img_id) % _LINE_MODULUS
        except ValueError:
            raise common.RecordError(f"{where}: img_id {img_id!r} is not a WebQA image id (an integer)") from None
        if line_no >= len(self.offsets):
            raise common.RecordError(f"{where}: img_id {img_id} -> line {line_no}, but {self.lineidx_path} lists "
                                     f"only {len(self.offsets)} lines")
        offset = self.offsets[line_no]
        self._file.seek(offset)
        fields = self._file.readline().strip().split(b"\t")
        at = f"{self.tsv_path} line {line_no} (byte offset {offset} from {self.lineidx_path})"
        if len(fields) != 2:
            raise common.RecordError(f"{where}: img_id {img_id}: {at} is not '<image_id>\\t<base64>'")
        line_id = fields[0].decode("utf-8", errors="replace")
        if line_id != img_id:
            raise common.RecordError(f"{where}: img_id {img_id}: {at} holds image {line_id}, not {img_id} "
                                     "(imgs.lineidx does not match imgs.tsv)")
        try:
            return base64.b64decode(fields[1], validate=True)
        except binascii.Error as e:
            raise common.RecordError(f"{where}: img_id {img_id}: {at} is not valid base64: {e}") from e


def _read_lineidx(path: pathlib.Path) -> list[int]:
    offsets = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            try:
                offsets.append(int(line))
            except ValueError:
                raise common.RecordError(f"{path}: line {n}: expected a byte offset, got {line.strip()!r}") from None
    return offsets


class Remuq(common.PairBuilderBase):
    """ReMuQ pairs with WebQA images embedded; splits `train` (and `test`), see the module docstring.

    Args (besides `PairBuilderBase`'s; `image_root` is unused, the images come from the tsv):
      webqa_dir: the folder of imgs.tsv and imgs.lineidx (default: `<manual>/webqa`, else `<manual>/../webqa`).
    """

    name = "remuq"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download ReMuQ (https://github.com/luomancs/ReMuQ): put train.json (and test.json) into the manual dir, and
    WebQA's imgs.tsv and imgs.lineidx into <manual>/webqa/ or <manual>/../webqa/ (MIRe: data/remuq and
    data/webqa), or pass webqa_dir=...
    """

    def __init__(self, *, webqa_dir: str | os.PathLike | None = None, **kwargs):
        super().__init__(**kwargs)
        self._webqa_dir = None if webqa_dir is None else pathlib.Path(os.fspath(webqa_dir))
        self._original_state = dict(self._original_state, webqa_dir=webqa_dir)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=common.pair_features(),
                                     homepage="https://github.com/luomancs/ReMuQ",
                                     description="ReMuQ: (WebQA image, question) -> Wikipedia passage pairs.")

    def _webqa_dir_for(self, manual: pathlib.Path) -> tuple[pathlib.Path, list[pathlib.Path]]:
        """The WebQA folder to read, and the candidates looked at (for the error message)."""
        if self._webqa_dir is not None:
            return self._webqa_dir, [self._webqa_dir]
        candidates = [manual / "webqa", manual.parent / "webqa"]
        return next((c for c in candidates if (c / TSV).is_file()), candidates[0]), candidates

    def _split_generators(self, dl_manager):
        manual = common.manual_dir_of(dl_manager, self.name, [SPLIT_FILES["train"]], self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        webqa, candidates = self._webqa_dir_for(manual)
        missing = [str(manual / SPLIT_FILES["train"])] if not (manual / SPLIT_FILES["train"]).is_file() else []
        for name in (TSV, LINEIDX):
            if not (webqa / name).is_file():
                missing.append(" or ".join(str(c / name) for c in candidates))
        if missing:
            raise common.ManualFilesMissingError(self.name, manual, missing, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        return {split: self._generate_examples(manual / f, webqa, split)
                for split, f in SPLIT_FILES.items() if (manual / f).is_file()}

    def _generate_examples(self, path: pathlib.Path, webqa: pathlib.Path, split: str):
        with WebqaImages(webqa) as images:
            for index, where, rec in usable_records(path, f"{self.name}/{split}"):
                image = images.read(rec.img_id, where)
                doc_id, doc = rec.ctxs[0]
                yield index, common.pair_example(
                    id=rec.question_id, question=rec.question, image_id=f"webqa/{rec.img_id}.jpg",
                    image=image if self._embed_images else b"", document=doc, document_id=doc_id,
                    answers=rec.answers, negs=rec.negs)
