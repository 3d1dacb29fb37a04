"""Does a frozen vision tower carry the attributes? Linear probes on the features MIRe reads from it."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from mire_jax.api import encode_vision
from mire_jax.config import MIReConfig
from mire_jax.demo.warmup.common import load_images


def vision_probe_features(config: MIReConfig, params: dict, pixels: np.ndarray, *,
                          batch_size: int = 128) -> np.ndarray:
    """[N, 2v] = [last-layer CLS ; mean of the penultimate-layer patches] of `encode_vision`, in fixed batches."""
    n = pixels.shape[0]
    out = np.zeros((n, 2 * config.vision.hidden_size), np.float32)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        chunk = np.pad(pixels[start:stop], ((0, batch_size - (stop - start)), (0, 0), (0, 0), (0, 0)))
        feats = np.asarray(encode_vision(config, params, chunk))[: stop - start]
        out[start:stop] = np.concatenate([feats[:, 0], feats[:, 1:].mean(1)], axis=1)
    return out


def linear_probe_accuracy(train_x: np.ndarray, train_y: Sequence, test_x: np.ndarray, test_y: Sequence, *,
                          ridge: float = 1.0) -> float:
    """Top-1 accuracy of a ridge-regression one-vs-rest classifier (closed form, standardised features).

    Closed form rather than a trained logistic regression: deterministic, instant, and linear all the same.
    """
    classes, train_labels = np.unique(np.asarray(train_y), return_inverse=True)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = np.concatenate([(train_x - mean) / std, np.ones((len(train_x), 1))], axis=1).astype(np.float64)
    targets = np.eye(len(classes))[train_labels]
    weights = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ targets)
    xt = np.concatenate([(test_x - mean) / std, np.ones((len(test_x), 1))], axis=1)
    predicted = classes[np.argmax(xt @ weights, axis=1)]
    return float(np.mean(predicted == np.asarray(test_y)))


def attribute_probe(config: MIReConfig, params: dict, image_root: str | os.PathLike,
                    train_records: Sequence[Mapping], test_records: Sequence[Mapping], *,
                    attributes: Sequence[str] | None = None, progress: bool = False) -> dict[str, float]:
    """Linear-probe accuracy per attribute on held-out images.

    Args:
      train_records, test_records: rows like the synthetic benchmark's `meta/images.jsonl`:
        {"image": path relative to `image_root`, "appearance": {attribute: value, ...}}.
      attributes: which appearance keys to probe (default: all keys of the first record).

    Returns:
      {attribute: accuracy} plus {f"{attribute}_chance": frequency of the commonest test value}.
    """
    attributes = list(attributes or train_records[0]["appearance"])
    size = config.vision.image_size
    feats = {}
    for name, records in (("train", train_records), ("test", test_records)):
        pixels = load_images(image_root, [r["image"] for r in records], size, progress=progress)
        feats[name] = vision_probe_features(config, params, pixels)
    result = {}
    for attr in attributes:
        train_y = [r["appearance"][attr] for r in train_records]
        test_y = [r["appearance"][attr] for r in test_records]
        result[attr] = linear_probe_accuracy(feats["train"], train_y, feats["test"], test_y)
        _, counts = np.unique(test_y, return_counts=True)
        result[f"{attr}_chance"] = float(counts.max() / len(test_y))
    return result
