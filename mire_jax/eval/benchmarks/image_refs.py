"""References to query images that load lazily: an image file, or a record of WebQA's base64 TSV (ReMuQ)."""
from __future__ import annotations

import abc
import base64
import binascii
import dataclasses
import functools
import io
import os

from PIL import Image

from mire_jax.eval.benchmarks.readers import BenchmarkFormatError


class ImageRef(abc.ABC):
    """Where one image is. `key` is a stable id (a path relative to the image root, or an image id)."""

    key: str

    @abc.abstractmethod
    def read_bytes(self) -> bytes:
        """The encoded image (JPEG, PNG, ...)."""

    def load(self) -> Image.Image:
        """The decoded image, RGB."""
        data = self.read_bytes()
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
            return image.convert("RGB")
        except Exception as e:  # Pillow raises several unrelated types for bad data
            raise OSError(f"cannot decode image {self}: {type(e).__name__}: {e}") from e


@dataclasses.dataclass(frozen=True)
class ImageFile(ImageRef):
    """An image file. When `path` does not exist, the same name with extension `.jpg` is tried (InfoSeek's
    `.JPEG` names are shipped as `.jpg`; MIRe falls back the same way).

    Attributes:
      path: the file path.
      key: the path relative to the image root (posix separators).
    """
    path: str
    key: str

    def resolve(self) -> str:
        """The existing path (`path` or its `.jpg` fallback); FileNotFoundError naming both otherwise."""
        if os.path.exists(self.path):
            return self.path
        fallback = os.path.splitext(self.path)[0] + ".jpg"
        if fallback != self.path and os.path.exists(fallback):
            return fallback
        tried = self.path if fallback == self.path else f"{self.path} (nor {fallback})"
        raise FileNotFoundError(f"image not found: {tried}")

    def read_bytes(self) -> bytes:
        with open(self.resolve(), "rb") as f:
            return f.read()

    def __str__(self) -> str:
        return self.path


@functools.lru_cache(maxsize=8)
def _line_offsets(lineidx_path: str) -> tuple[int, ...]:
    offsets = []
    with open(lineidx_path, encoding="ascii") as f:
        for line_no, line in enumerate(f, start=1):
            try:
                offsets.append(int(line.strip()))
            except ValueError:
                raise BenchmarkFormatError(
                    f"{lineidx_path}: line {line_no}: expected a byte offset, found {line.strip()!r}") from None
    return tuple(offsets)


@dataclasses.dataclass(frozen=True)
class WebQATsvImage(ImageRef):
    """An image in WebQA's `imgs.tsv` (`"<image_id>\\t<base64 JPEG>"` lines), found through `imgs.lineidx`
    (one byte offset per TSV line) at index `int(image_id) % 10_000_000`, as MIRe's ReMuQ loader reads it.

    Attributes:
      tsv_path: `imgs.tsv`.
      lineidx_path: `imgs.lineidx`.
      key: the image id.
    """
    tsv_path: str
    lineidx_path: str
    key: str

    def read_bytes(self) -> bytes:
        offsets = _line_offsets(self.lineidx_path)
        index = int(self.key) % 10_000_000
        if index >= len(offsets):
            raise BenchmarkFormatError(f"{self.lineidx_path}: image {self.key} needs line {index + 1}, the index has "
                             f"{len(offsets)} lines")
        with open(self.tsv_path, "rb") as f:
            f.seek(offsets[index])
            line = f.readline().rstrip(b"\r\n")
        image_id, sep, payload = line.partition(b"\t")
        where = f"{self.tsv_path}: byte offset {offsets[index]} (lineidx line {index + 1})"
        if not sep:
            raise BenchmarkFormatError(f"{where}: expected '<image_id>\\t<base64>', found no tab")
        if image_id.decode("ascii", "replace") != self.key:
            found = image_id.decode("ascii", "replace")
            raise BenchmarkFormatError(f"{where}: holds image {found!r}, expected {self.key!r}")
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as e:
            raise BenchmarkFormatError(f"{where}: invalid base64 ({e})") from e

    def __str__(self) -> str:
        return f"{self.tsv_path}#{self.key}"
