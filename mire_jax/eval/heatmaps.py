"""Drawing what the pooling looks at: the image, the head-averaged attention over it, and each head's map (the maps
come from `mire_jax.retrieval.Searcher.pooling_maps`)."""
from __future__ import annotations

import numpy as np


def save_heatmaps(image, maps: np.ndarray, question: str, path: str) -> str:
    """PNG: the image, the head-averaged map over it, then one panel per head."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    image = image.convert("RGB")
    panels = 2 + maps.shape[0]
    cols = min(panels, 8)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.0 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    size = image.size
    upscale = lambda m: np.asarray(Image.fromarray((255 * m / max(m.max(), 1e-12)).astype(np.uint8)).resize(size, Image.BILINEAR))
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("image", fontsize=8)
    axes.flat[1].imshow(image)
    axes.flat[1].imshow(upscale(maps.mean(0)), cmap="inferno", alpha=0.6)
    axes.flat[1].set_title("mean of heads", fontsize=8)
    for h in range(maps.shape[0]):
        ax = axes.flat[2 + h]
        ax.imshow(upscale(maps[h]), cmap="inferno")
        ax.set_title(f"head {h}", fontsize=8)
    fig.suptitle(question, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
