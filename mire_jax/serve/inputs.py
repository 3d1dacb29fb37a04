"""Checks of what a request sends, each failure an `InputError` with a 4xx status and a one-line reason."""
from __future__ import annotations

import dataclasses
import io
import warnings

from PIL import Image

from mire_jax.retrieval.images import ImageError, load_rgb


class InputError(Exception):
    """Bad input: answered with `status` and `reason`, never with a stack trace."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may send.

    Attributes:
        max_image_bytes: size of the uploaded image file.
        max_image_pixels: width x height of the decoded image (a small file can hold a huge image).
        max_question_chars: length of the question (the tokenizer keeps only `query_maxlen` word pieces anyway).
        max_k: results per query.
        max_explain_passages: passages one /explain request may ask about.
    """
    max_image_bytes: int = 10 * 2 ** 20
    max_image_pixels: int = 40_000_000
    max_question_chars: int = 2000
    max_k: int = 100
    max_explain_passages: int = 20

    @property
    def max_body_bytes(self) -> int:
        """A whole request body: the image plus room for the other fields and the multipart framing."""
        return self.max_image_bytes + 64 * 1024


def parse_question(raw) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise InputError(400, "question must be a text field, not a file")
    return " ".join(raw.split())


def check_question(question: str, limits: Limits) -> str:
    if len(question) > limits.max_question_chars:
        raise InputError(400, f"question is {len(question)} characters long; the limit is "
                              f"{limits.max_question_chars}")
    return question


def parse_k(raw, default: int, largest: int) -> int:
    """k from a form field: an integer in [1, largest]."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return min(default, largest)
    if not isinstance(raw, str):
        raise InputError(400, "k must be a text field, not a file")
    try:
        k = int(raw.strip())
    except ValueError:
        raise InputError(400, f"k must be an integer, got {raw.strip()[:40]!r}") from None
    if not 1 <= k <= largest:
        raise InputError(400, f"k must be between 1 and {largest}, got {k}")
    return k


def open_upload(data: bytes, filename: str, limits: Limits) -> Image.Image:
    """Uploaded bytes -> the image with only its header read, or an InputError: empty, too big, not an image, too
    many pixels. `decode_opened` decodes it."""
    name = filename or "the upload"
    if not data:
        raise InputError(400, f"image {name!r} is empty")
    if len(data) > limits.max_image_bytes:
        raise InputError(413, f"image {name!r} is {len(data)} bytes; the limit is {limits.max_image_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(413, f"image {name!r} has too many pixels; the limit is {limits.max_image_pixels}") from None
    except Exception:
        raise InputError(400, f"{name!r} is not an image Pillow can read (JPEG, PNG, WebP, ...)") from None
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise InputError(413, f"image {name!r} is {width}x{height} pixels; the limit is "
                              f"{limits.max_image_pixels} pixels")
    if min(width, height) < 1:
        raise InputError(400, f"image {name!r} has no pixels")
    return image


def decode_opened(image: Image.Image, filename: str) -> Image.Image:
    """An image from `open_upload` -> its RGB pixels, or an InputError naming the cause (a truncated file, say)."""
    name = filename or "the upload"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return load_rgb(image, source=name)
    except ImageError as e:
        cause = e.__cause__
        detail = (f"{type(cause).__name__}: {cause}" if cause else str(e)).splitlines()[0][:200]
        raise InputError(400, f"image {name!r} cannot be decoded: {detail}") from None


def decode_upload(data: bytes, filename: str, limits: Limits) -> Image.Image:
    """Uploaded bytes -> an RGB image, or an InputError: empty, too big, not an image, truncated, too many pixels."""
    return decode_opened(open_upload(data, filename, limits), filename)
