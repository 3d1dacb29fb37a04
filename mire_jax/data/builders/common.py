"""What the (image + question -> passage) builders share: features, manual-file checks, image embedding.

Every pair builder writes the same features, so the input pipeline does not care which source a record
came from:

  id           str   the record id (ViD2R `id`, M2KR `question_id`, JSONL `id`)
  question     str
  instruction  str   M2KR's instruction ("" elsewhere)
  image_id     str   the image path relative to the image root, posix separators (also the key of the
                     vision-feature cache)
  image        bytes the encoded image file as it is on disk (b"" when images are not embedded, or when the
                     file was missing at build time: the pipeline's missing-image policy handles that record)
  document     str   the positive passage
  document_id  str   its id ("" when the source has none)
  answers      [str] answer strings (ViD2R/JSONL: the single `answer`, if any)
  negs         [str] hard-negative passages (ViD2R `negs`; empty elsewhere)

Images are embedded as the original encoded bytes by default (`embed_images=True`): a built dataset is then
self-contained (array_record shards on any filesystem, no image tree to ship to every host), and the
pixels are exactly those of the files (no re-encoding). `embed_images=False` stores only `image_id`; the
pipeline then reads `<image_root>/<image_id>` at run time.
"""
from __future__ import annotations

import inspect
import logging
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

log = logging.getLogger(__name__)

FILE_FORMAT = "array_record"


class ManualFilesMissingError(FileNotFoundError):
    """Files that the user must download into the manual dir are not there."""

    def __init__(self, builder_name: str, manual_dir: os.PathLike | str, missing: Sequence[str],
                 instructions: str = ""):
        self.missing = list(missing)
        self.manual_dir = os.fspath(manual_dir)
        lines = [f"{builder_name}: {len(self.missing)} required file(s) missing from the manual dir "
                 f"{self.manual_dir}:"]
        lines += [f"  - {m}" for m in self.missing]
        if instructions:
            lines += ["", instructions.strip()]
        super().__init__("\n".join(lines))


class RecordError(ValueError):
    """A source record is malformed (the message names the file and the line/row)."""


def pair_features() -> tfds.features.FeaturesDict:
    """The features of every (image + question -> passage) builder (see the module docstring)."""
    return tfds.features.FeaturesDict({
        "id": tfds.features.Text(),
        "question": tfds.features.Text(),
        "instruction": tfds.features.Text(),
        "image_id": tfds.features.Text(),
        "image": tfds.features.Scalar(dtype=np.object_),
        "document": tfds.features.Text(),
        "document_id": tfds.features.Text(),
        "answers": tfds.features.Sequence(tfds.features.Text()),
        "negs": tfds.features.Sequence(tfds.features.Text()),
    })


def manual_dir_of(dl_manager, builder_name: str, required: Sequence[str], instructions: str) -> pathlib.Path:
    """The manual dir, checked to exist; raises `ManualFilesMissingError` listing `required` otherwise."""
    # Not `dl_manager.manual_dir`: it raises a bare AssertionError for a missing or empty folder, and the
    # user needs the list of files to put there.
    manual = pathlib.Path(os.fspath(dl_manager._manual_dir))  # pylint: disable=protected-access
    if not manual.is_dir():
        raise ManualFilesMissingError(builder_name, manual, [str(manual / r) for r in required], instructions)
    return manual


def check_files(builder_name: str, manual_dir: pathlib.Path, paths: Iterable[pathlib.Path],
                instructions: str = "") -> None:
    """Raise `ManualFilesMissingError` naming every path of `paths` that does not exist."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ManualFilesMissingError(builder_name, manual_dir, missing, instructions)


def normalize_image_id(path: str) -> str:
    """A relative image path in posix form without a leading './' (the stable key of an image)."""
    return pathlib.PurePosixPath(path.replace("\\", "/")).as_posix().lstrip("/").removeprefix("./")


class ImageEmbedder:
    """Reads image files under a root for embedding into records; counts and logs the missing ones."""

    def __init__(self, image_root: pathlib.Path, embed: bool, builder_name: str):
        self.image_root = image_root
        self.embed = embed
        self.builder_name = builder_name
        self.missing: list[str] = []

    def __call__(self, image_id: str) -> bytes:
        if not self.embed:
            return b""
        path = self.image_root / image_id
        try:
            return path.read_bytes()
        except OSError:
            self.missing.append(str(path))
            return b""

    def report(self, split: str) -> None:
        if self.missing:
            shown = "\n  ".join(self.missing[:10])
            more = f"\n  ... and {len(self.missing) - 10} more" if len(self.missing) > 10 else ""
            log.warning("%s/%s: %d image file(s) not found, stored without bytes (the pipeline's missing-image "
                        "policy decides):\n  %s%s", self.builder_name, split, len(self.missing), shown, more)
        self.missing = []


def require_str(record: dict, key: str, where: str, *, optional: bool = False) -> str:
    """`record[key]` as a str; `RecordError` naming `where` when absent (unless optional) or not a str.

    Ids may be numbers in some sources: they are converted with `str()` (as MIRe's loaders compare them; docs/data_formats.md).
    """
    if key not in record or record[key] is None:
        if optional:
            return ""
        raise RecordError(f"{where}: missing required field {key!r} (fields present: {sorted(record)})")
    value = record[key]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise RecordError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


class PairBuilderBase(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Common constructor of the pair builders: where the images are and whether to embed them.

    Args (besides tfds's `data_dir`, `config`, `version`, `file_format`):
      image_root: the folder that image paths are relative to. Default: `<manual_dir>/images`
        (builders may refine the default, e.g. M2KR uses `<manual_dir>/images/<task>`).
      embed_images: store the encoded image bytes in the records (default) or only the image id.
    """

    def __init__(self, *, image_root: str | os.PathLike | None = None, embed_images: bool = True, **kwargs):
        kwargs.setdefault("file_format", FILE_FORMAT)
        super().__init__(**kwargs)
        self._image_root = None if image_root is None else pathlib.Path(os.fspath(image_root))
        self._embed_images = bool(embed_images)
        # Keep the extra arguments when tfds pickles the builder (it re-runs __init__ from this dict).
        self._original_state = dict(self._original_state, image_root=image_root, embed_images=embed_images,
                                    file_format=kwargs["file_format"])

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds's own lookup touches the `importlib_resources` backport, which it only requires on
        # Python < 3.9 and which is not installed: use the module file (it only locates checksum files).
        return epath.Path(inspect.getfile(cls))

    def _default_image_root(self, manual_dir: pathlib.Path) -> pathlib.Path:
        return manual_dir / "images"

    def image_root_for(self, manual_dir: pathlib.Path) -> pathlib.Path:
        return self._image_root if self._image_root is not None else self._default_image_root(manual_dir)

    def _embedder(self, manual_dir: pathlib.Path) -> ImageEmbedder:
        return ImageEmbedder(self.image_root_for(manual_dir), self._embed_images, self.name)


def pair_example(*, id: str, question: str, image_id: str, image: bytes, document: str,  # noqa: A002
                 instruction: str = "", document_id: str = "", answers: Sequence[str] = (),
                 negs: Sequence[str] = ()) -> dict:
    """One record in the shared feature layout."""
    return {"id": id, "question": question, "instruction": instruction, "image_id": image_id, "image": image,
            "document": document, "document_id": document_id, "answers": list(answers), "negs": list(negs)}


def example_from_vid2r_fields(record: dict, where: str, embedder: ImageEmbedder, **extra) -> dict:
    """A record with ViD2R's field names (`id`, `question`, `image`, `document`, optional `answer`) -> one example;
    `extra` sets further fields of `pair_example`. Errors name `where`."""
    image_id = normalize_image_id(require_str(record, "image", where))
    answer = require_str(record, "answer", where, optional=True)
    return pair_example(id=require_str(record, "id", where), question=require_str(record, "question", where),
                        image_id=image_id, image=embedder(image_id),
                        document=require_str(record, "document", where).strip(),
                        answers=[answer] if answer else [], **extra)
