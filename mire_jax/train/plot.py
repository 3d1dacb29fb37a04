"""PNG training curves from WORKDIR/metrics.jsonl: one panel per metric against the step, with the validation
loss and accuracy (after each epoch) drawn over the training ones.

    python train/plot.py WORKDIR [--out WORKDIR/curves.png]
"""
from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mire_jax.files import iter_json_lines  # noqa: E402

PANELS = ("loss", "accuracy", "lr", "samples_per_s", "grad_norm")


def plot(workdir: str, out: str | None = None, title: str | None = None) -> str:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no metrics to plot: {path}")
    rows = [row for _, _, row in iter_json_lines(path)]
    if not rows:
        raise ValueError(f"{path} is empty")
    training = [r for r in rows if "loss" in r]
    validation = [r for r in rows if "val_loss" in r]
    if not training:
        raise ValueError(f"{path} holds no training rows")
    keys = [k for k in PANELS if k in training[0]]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot([r["step"] for r in training], [r[key] for r in training], marker="." if len(training) < 50 else None,
                label="train")
        if validation and f"val_{key}" in validation[0]:
            ax.plot([r["step"] for r in validation], [r[f"val_{key}"] for r in validation], marker="o",
                    label="validation")
            ax.legend(fontsize=7)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title or os.path.basename(os.path.abspath(workdir)))
    fig.tight_layout()
    out = out or os.path.join(workdir, "curves.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    print(plot(a.workdir, a.out))


if __name__ == "__main__":
    main()
