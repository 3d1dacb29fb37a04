"""Image decoding and preprocessing on the host (numpy + Pillow), as transformers' PIL image processors do it.

`preprocess` follows an `ImageProcessing` (`mire_jax.config`). CLIP's: convert to RGB, resize so that the SHORTER
side equals `size` (the longer side is `int(size * long / short)`, truncated) with bicubic resampling, centre crop
`size` x `size` (offsets `(dim - size) // 2`), scale by 1/255, subtract the mean and divide by the std. "square":
bicubic resize straight to `size` x `size`, then the same scaling. Output is NHWC-ready float32 [size, size, 3]
(the model's pixel layout).
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from mire_jax.config import ImageProcessing


class ImageError(ValueError):
    """An image could not be read or decoded."""


def decode_image(data: bytes, *, source: str = "<bytes>") -> Image.Image:
    """Decode encoded image bytes (JPEG, PNG, ...) to an RGB PIL image.

    Args:
      data: the encoded file contents.
      source: what to call the image in the error message (a path or a record id).

    Raises:
      ImageError: empty or undecodable data.
    """
    if not data:
        raise ImageError(f"empty image data ({source})")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as e:  # PIL raises several unrelated types for bad files
        raise ImageError(f"cannot decode image ({source}): {type(e).__name__}: {e}") from e
    return load_rgb(image, source=source)


def load_rgb(image: Image.Image, *, source: str = "<bytes>") -> Image.Image:
    """An opened image (only its header read) -> its RGB pixels; `ImageError` names `source` on failure."""
    try:
        image.load()  # force the full decode here so that truncated files fail now, not later
        return image.convert("RGB")
    except Exception as e:  # PIL raises several unrelated types for bad files
        raise ImageError(f"cannot decode image ({source}): {type(e).__name__}: {e}") from e


def read_image_file(path: str | os.PathLike) -> bytes:
    """The raw bytes of an image file; `ImageError` if missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ImageError(f"cannot read image file {os.fspath(path)}: {e.strerror or e}") from e


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so that the shorter side is `size` (aspect kept, longer side truncated to int)."""
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) == (width, height):
        return image
    return image.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)


def center_crop(array: np.ndarray, size: int) -> np.ndarray:
    """Centre crop of an HWC array to `size` x `size` (the input is at least that big after the resize)."""
    height, width = array.shape[:2]
    if height < size or width < size:
        raise ValueError(f"cannot crop {size}x{size} from an image of {height}x{width}")
    top, left = (height - size) // 2, (width - size) // 2
    return array[top: top + size, left: left + size]


def normalize(array: np.ndarray, processing: ImageProcessing) -> np.ndarray:
    """uint8 HWC -> float32 HWC: x / 255, then (x - mean) / std."""
    scaled = (array.astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
    return (scaled - np.asarray(processing.mean, np.float32)) / np.asarray(processing.std, np.float32)


def preprocess(image: Image.Image, processing: ImageProcessing = ImageProcessing()) -> np.ndarray:
    """One PIL image -> normalised float32 [size, size, 3]."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    size = processing.size
    if processing.resize == "square":
        resized = image if image.size == (size, size) else image.resize((size, size), Image.Resampling.BICUBIC)
        return normalize(np.asarray(resized), processing)
    return normalize(center_crop(np.asarray(resize_shorter_side(image, size)), size), processing)


def preprocess_bytes(data: bytes, processing: ImageProcessing = ImageProcessing(), *,
                     source: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes -> normalised float32 [size, size, 3]; `ImageError` names `source` on failure."""
    return preprocess(decode_image(data, source=source), processing)
