"""The analyses' figures (matplotlib, drawn off-screen to PNG): grouped bars with optional spreads and per-seed points,
and the gallery of where the pooling looks."""
from __future__ import annotations

import os
import textwrap
from typing import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def grouped_bars(categories: Sequence[str], series: Mapping[str, Sequence[float | None]], path: str, *, ylabel: str,
                 title: str, errors: Mapping[str, Sequence[float | None]] | None = None,
                 points: Mapping[str, Sequence[Sequence[float]]] | None = None, hline: float | None = None,
                 hline_label: str = "") -> str:
    """One group of bars per category, one bar per series (None: no bar); `errors` draws +-spread whiskers, `points`
    each seed's value as dots, `hline` a reference line (e.g. chance). Writes `path`, returns it."""
    plt = _pyplot()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    names = list(series)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(categories))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(categories) * max(1, len(names)) ** 0.5 + 2), 3.4))
    for i, name in enumerate(names):
        values = np.array([np.nan if v is None else v for v in series[name]], float)
        offset = x - 0.4 + width * (i + 0.5)
        err = None
        if errors and name in errors:
            err = np.array([0 if e is None else e for e in errors[name]], float)
        ax.bar(offset, np.nan_to_num(values), width, yerr=err, capsize=3, label=name)
        if points and name in points:
            for xi, seeds in zip(offset, points[name]):
                ax.scatter([xi] * len(seeds), seeds, s=9, color="black", zorder=3)
    if hline is not None:
        ax.axhline(hline, color="grey", linestyle="--", linewidth=1, label=hline_label or None)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, categories, rotation=20 if max(len(c) for c in categories) > 10 else 0, ha="right"
                  if max(len(c) for c in categories) > 10 else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def falls(rows: Sequence[Mapping], path: str, metric: str, title: str) -> str:
    """The image fall and the question fall of each model (modality reliance)."""
    return grouped_bars([r["model"] for r in rows],
                        {"shuffled image": [r["image fall"] for r in rows],
                         "generic question": [r["question fall"] for r in rows]},
                        path, ylabel=f"fall in {metric} (points)", title=title)


UNIFORM_SCALE = 3.0  # the gallery's colour scale ends at 3 times uniform attention


def attention_gallery(items: Sequence[Mapping], path: str, title: str) -> str:
    """Rows of (picture, head-averaged pooling map over it with the object's outline, the head given by the item).
    Each item: image (PIL), maps [H, g, g] (each summing to 1), mask ([size, size] or None), head, label (str).
    Maps are drawn relative to uniform attention on one scale, from 0 to `UNIFORM_SCALE` times uniform."""
    from PIL import Image
    plt = _pyplot()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cols = 3
    fig, axes = plt.subplots(len(items), cols, figsize=(2.4 * cols, 2.5 * len(items) + 0.4), squeeze=False)
    for row, item in zip(axes, items):
        image = item["image"].convert("RGB").resize((128, 128))
        maps, mask = np.asarray(item["maps"], float), item.get("mask")
        # On one scale for every panel: attention relative to uniform (1 = uniform), 0 to UNIFORM_SCALE.
        upscale = lambda m: np.asarray(Image.fromarray(
            (255 * np.clip(m * m.size / UNIFORM_SCALE, 0, 1)).astype(np.uint8)).resize(image.size, Image.NEAREST),
            float) / 255
        head = int(item.get("head", 0))
        panels = [(None, textwrap.fill(item["label"], 34)), (maps.mean(0), "mean of heads"), (maps[head], f"head {head}")]
        for ax, (m, name) in zip(row, panels):
            ax.imshow(image)
            if m is not None:
                ax.imshow(upscale(m), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            if mask is not None:
                big = np.asarray(Image.fromarray((255 * np.asarray(mask)).astype(np.uint8)).resize(image.size,
                                                                                                    Image.BILINEAR))
                ax.contour(big, levels=[127], colors="cyan", linewidths=0.8)
            ax.set_title(name, fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
