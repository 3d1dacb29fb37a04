"""Rendering of an attribute combination to a small RGB picture (numpy only).

Shapes and patterns are evaluated analytically in the shape's own frame on a supersampled grid, then
box-filtered down, so edges are anti-aliased and the pattern rotates and scales with the shape. Each view
adds a random rotation, scale, offset, colour jitter and pixel noise.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from mire_jax.demo.world.attributes import BACKGROUNDS, COLOURS, Appearance

_SUPERSAMPLE = 3
_PATTERN_SHADE = 0.38  # the pattern's second colour is the shape colour darkened to this fraction


@dataclasses.dataclass(frozen=True)
class ViewParams:
    """Random nuisance parameters of one rendering."""

    rotation_deg: float
    scale: float
    offset_x: float
    offset_y: float
    pattern_phase: float
    noise_std: float
    colour_jitter: tuple[float, float, float]

    def as_dict(self) -> dict[str, float | list[float]]:
        """Rounded values, for metadata files."""
        return {
            "rotation_deg": round(self.rotation_deg, 3),
            "scale": round(self.scale, 4),
            "offset_x": round(self.offset_x, 4),
            "offset_y": round(self.offset_y, 4),
            "pattern_phase": round(self.pattern_phase, 4),
            "noise_std": round(self.noise_std, 3),
            "colour_jitter": [round(v, 3) for v in self.colour_jitter],
        }


def sample_view(rng: np.random.Generator, max_rotation_deg: float = 20.0) -> ViewParams:
    """Draws the nuisance parameters of one view."""
    return ViewParams(
        rotation_deg=float(rng.uniform(-max_rotation_deg, max_rotation_deg)),
        scale=float(rng.uniform(0.62, 0.8)),
        offset_x=float(rng.uniform(-0.08, 0.08)),
        offset_y=float(rng.uniform(-0.08, 0.08)),
        pattern_phase=float(rng.uniform(0.0, 1.0)),
        noise_std=float(rng.uniform(3.0, 8.0)),
        colour_jitter=tuple(float(v) for v in rng.uniform(-10.0, 10.0, size=3)),
    )


def _regular_polygon(n: int, radius: float, start_deg: float) -> np.ndarray:
    angles = np.deg2rad(start_deg + 360.0 * np.arange(n) / n)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    angles = np.deg2rad(-90.0 + 180.0 * np.arange(2 * points) / points)
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


# Vertices in the shape frame: u to the right, v downwards, the shape inside the unit disc.
_POLYGONS: dict[str, np.ndarray] = {
    "triangle": _regular_polygon(3, 1.0, -90.0) + np.array([0.0, 0.12]),  # centred on its bounding box
    "square": np.array([[-0.78, -0.78], [0.78, -0.78], [0.78, 0.78], [-0.78, 0.78]]),
    "star": _star(5, 1.0, 0.42) + np.array([0.0, 0.05]),
    "pentagon": _regular_polygon(5, 0.95, -90.0) + np.array([0.0, 0.08]),
    "diamond": np.array([[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]]),
}


def _inside_polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over pixels (works for the non-convex star)."""
    inside = np.zeros(u.shape, dtype=bool)
    x0, y0 = vertices[-1]
    for x1, y1 in vertices:
        crosses = (y1 > v) != (y0 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at_v = x0 + (v - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (u < x_at_v)
        x0, y0 = x1, y1
    return inside


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of `shape` at shape-frame coordinates (u, v).

    Raises:
        ValueError: for an unknown shape name.
    """
    if shape in _POLYGONS:
        return _inside_polygon(u, v, _POLYGONS[shape])
    if shape == "circle":
        return u * u + v * v <= 0.92**2
    if shape == "cross":
        arm, reach = 0.3, 0.92
        return ((np.abs(u) <= arm) & (np.abs(v) <= reach)) | ((np.abs(v) <= arm) & (np.abs(u) <= reach))
    if shape == "crescent":
        return (u * u + v * v <= 0.95**2) & ((u - 0.42) ** 2 + (v + 0.1) ** 2 > 0.72**2)
    raise ValueError(f"unknown shape {shape!r}")


def pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Where the pattern's second colour goes, at shape-frame coordinates (u, v).

    Raises:
        ValueError: for an unknown pattern name.
    """
    if pattern == "plain":
        return np.zeros(u.shape, dtype=bool)
    if pattern == "striped":
        period = 0.36
        return np.floor(v / period + phase) % 2 == 1
    if pattern == "dotted":
        period, radius = 0.44, 0.12
        du = (u / period + phase) % 1.0 - 0.5
        dv = (v / period + phase) % 1.0 - 0.5
        return du * du + dv * dv <= (radius / period) ** 2
    if pattern == "checked":
        period = 0.42
        return (np.floor(u / period + phase) + np.floor(v / period + phase)) % 2 == 1
    if pattern == "banded":  # concentric bands
        period = 0.3
        return np.floor(np.sqrt(u * u + v * v) / period + phase * 0.5) % 2 == 1
    raise ValueError(f"unknown pattern {pattern!r}")


def render(appearance: Appearance, view: ViewParams, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draws one view of `appearance`.

    Args:
        appearance: the attribute combination.
        view: nuisance parameters (rotation, scale, offset, ...).
        size: output side length in pixels.
        rng: source of the pixel noise.

    Returns:
        uint8 array [size, size, 3].
    """
    u, v = _shape_frame(view, size)
    inside = shape_mask(appearance.shape, u, v)
    second = inside & pattern_mask(appearance.pattern, u, v, view.pattern_phase)
    # Anti-aliasing: the fraction of each output pixel's subsamples covered by each colour.
    second_cover = _box_average(second, size)[..., None]
    first_cover = _box_average(inside, size)[..., None] - second_cover

    colour = np.clip(np.asarray(COLOURS[appearance.colour], dtype=np.float32) + view.colour_jitter, 0, 255)
    background = np.asarray(BACKGROUNDS[appearance.background], dtype=np.float32)
    image = background * (1.0 - first_cover - second_cover) + colour * first_cover
    image += (colour * _PATTERN_SHADE) * second_cover
    image += rng.normal(0.0, view.noise_std, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def object_mask(appearance: Appearance, view: ViewParams, size: int) -> np.ndarray:
    """Where the object of `render(appearance, view, size, rng)` is: the share of each pixel it covers, float32
    [size, size] in [0, 1] (the same anti-aliased coverage the picture is painted with; no randomness drawn, so the
    picture is unchanged)."""
    u, v = _shape_frame(view, size)
    return _box_average(shape_mask(appearance.shape, u, v), size)


def _shape_frame(view: ViewParams, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The shape-frame coordinates (u, v) of the supersampled pixel centres under the view's rotation, offset and
    scale."""
    y, x = _grid(size)
    theta = np.deg2rad(view.rotation_deg)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    dx, dy = x - np.float32(view.offset_x), y - np.float32(view.offset_y)
    u = (cos * dx + sin * dy) / np.float32(view.scale)
    v = (-sin * dx + cos * dy) / np.float32(view.scale)
    return u, v


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Supersampled pixel-centre coordinates in [-1, 1] (y downwards), float32 [fine, fine] each."""
    fine = size * _SUPERSAMPLE
    coords = ((np.arange(fine, dtype=np.float32) + 0.5) / fine * 2.0 - 1.0).astype(np.float32)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    y.setflags(write=False)
    x.setflags(write=False)
    return y, x


def _box_average(mask: np.ndarray, size: int) -> np.ndarray:
    counts = mask.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).sum(axis=(1, 3), dtype=np.int32)
    return counts.astype(np.float32) / np.float32(_SUPERSAMPLE * _SUPERSAMPLE)
