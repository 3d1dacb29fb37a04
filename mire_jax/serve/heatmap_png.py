"""PNG heatmaps over the image the model saw, for /explain.

The maps cover what the model's preprocessing keeps (`mire_jax.retrieval.images.preprocess`): CLIP's the central
square (shorter side resized, centre crop), SigLIP's the whole upload (resized straight to a square), so they are
drawn over that part of the upload. They are upscaled and
coloured as the library's figures draw them (`mire_jax.eval.heatmaps.save_heatmaps`: bilinear upscaling, the inferno
colour map at 60% opacity over the image), except that the colours span each map's lowest to highest value rather
than zero to the highest: a head's attention is often only 1.5-3x above uniform, which the library's scale shows as
an evenly bright image. `contrast` (highest / lowest) says how focused a map is; the page shows it.
"""
from __future__ import annotations

import base64
import functools
import io

import numpy as np
from PIL import Image

ALPHA = 0.6
DISPLAY_SIZE = 320


def model_view(image: Image.Image, size: int = DISPLAY_SIZE, resize: str = "shorter_side_and_crop") -> Image.Image:
    """What the preprocessing `resize` mode keeps of `image`, resized to size x size: the central square (the
    centre crop), or with "square" the whole image."""
    if resize == "square":
        return image.convert("RGB").resize((size, size), Image.BICUBIC)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.convert("RGB").crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)


def contrast(attention: np.ndarray) -> float:
    """Highest over lowest attention of a map (1: uniform)."""
    return float(attention.max() / max(float(attention.min()), 1e-12))


def _upscale(attention: np.ndarray, size: int) -> np.ndarray:
    """[grid, grid] -> uint8 [size, size], stretched from the map's lowest (0) to its highest value (255)."""
    low, span = float(attention.min()), float(attention.max() - attention.min())
    scaled = (255 * (attention - low) / span if span > 1e-12 else np.zeros_like(attention)).astype(np.uint8)
    return np.asarray(Image.fromarray(scaled).resize((size, size), Image.BILINEAR))


@functools.lru_cache(maxsize=1)
def _inferno() -> np.ndarray:
    """The inferno colour map as a [256, 3] float32 table (the colour map only: no pyplot, safe in any thread)."""
    from matplotlib import colormaps
    return colormaps["inferno"](np.arange(256))[:, :3].astype(np.float32)


def overlay(view: Image.Image, attention: np.ndarray) -> Image.Image:
    """The heatmap of `attention` [grid, grid] blended over `view` (a square image)."""
    colours = _inferno()[_upscale(np.asarray(attention, np.float32), view.size[0])]
    blended = (1 - ALPHA) * (np.asarray(view, np.float32) / 255.0) + ALPHA * colours
    return Image.fromarray(np.clip(blended * 255 + 0.5, 0, 255).astype(np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def data_url(image: Image.Image) -> str:
    """A PNG as a `data:` URL, which an <img> shows without another request."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def figure_png(image: Image.Image, maps: np.ndarray, question: str, resize: str = "shorter_side_and_crop") -> bytes:
    """The library's panel figure (the image, the head mean over it, one panel per head) as PNG bytes."""
    from mire_jax.eval.heatmaps import save_heatmaps
    buffer = io.BytesIO()
    save_heatmaps(model_view(image, 256, resize), maps, question or "(image only)", buffer)
    return buffer.getvalue()
