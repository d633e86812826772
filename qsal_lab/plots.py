"""The book's recurring figures. Each returns its matplotlib Figure and, given `name`, also
saves it as a PNG under `figures/` (or `$QSAL_FIGURES`) so results can be looked at outside
the notebook."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch


def save_figure(fig, name: str | None) -> Path | None:
    """Write `fig` to figures/<name>.png (folder from $QSAL_FIGURES, default ./figures)."""
    if not name:
        return None
    folder = Path(os.environ.get("QSAL_FIGURES", "figures"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def show_images(ds, indices, titles=None, ncols=10, name=None, size=1.1):
    """A grid of dataset images (un-normalised for display)."""
    indices = list(indices)
    nrows = max(1, -(-len(indices) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.25)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (ax, i) in enumerate(zip(axes.flat, indices)):
        img = ds.images[i].permute(1, 2, 0).numpy()
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def plot_history(history, name=None, keys=("train_loss", "test_loss"), acc_key="test_accuracy"):
    """Loss curves (left) and test accuracy (right) per epoch."""
    epochs = history["epoch"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for k in keys:
        ax1.plot(epochs, history[k], marker="o", label=k.replace("_", " "))
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend()
    ax2.plot(epochs, [100 * a for a in history[acc_key]], marker="o", color="C2")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("test accuracy (%)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def plot_confusion(cm: torch.Tensor, class_names, name=None, title="confusion matrix"):
    """Counts[true, predicted] as a heat map, with the numbers written in."""
    cm = cm.numpy() if isinstance(cm, torch.Tensor) else np.asarray(cm)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(0.5 * k + 2, 0.5 * k + 1.5))
    ax.imshow(np.log1p(cm), cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 3 else "black")
    ax.set_xticks(range(k), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, name)
    return fig
