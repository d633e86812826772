"""The book's recurring figures. Each returns its matplotlib Figure and, given `name`, also
saves it as a PNG under `figures/` (or `$QSAL_FIGURES`) so results can be looked at outside
the notebook. `frame_slider` turns precomputed figures into a slider that works on the static page."""
from __future__ import annotations

import io
import os
from pathlib import Path

import ipywidgets as widgets
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


def figure_png(fig, dpi: int = 90, close: bool = True, **savefig) -> bytes:
    """The figure as PNG bytes, e.g. one frame of a `frame_slider`. close=False keeps a figure that is
    redrawn for the next frame (faster than drawing a new one each time)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, **savefig)
    if close:
        plt.close(fig)
    return buffer.getvalue()


def frame_slider(frames, labels, description: str, index: int = 0, choices: str | None = None, **slider):
    """A slider over precomputed frames that works without a running kernel, as on the rendered book's page:
    the slider's position is linked to the frame shown in the browser (jslink), not through Python.

    frames: one frame per label, each PNG bytes (`figure_png`) or any widget; or {name: frames} for several
    sets of frames that share the slider, one set shown at a time, picked with toggle buttons described
    `choices`. labels: the slider's label for each frame. index: the frame shown first. Further keyword
    arguments go to the ipywidgets SelectionSlider (layout, style). Returns the widget to display."""
    sets = frames if isinstance(frames, dict) else {None: frames}
    labels = list(labels)
    for name, group in sets.items():
        if len(group) != len(labels):
            raise ValueError(f"{len(labels)} labels for {len(group)} frames" + (f" of {name!r}" if name else ""))
    if not 0 <= index < len(labels):
        raise ValueError(f"index {index} is not a frame: there are {len(labels)}")
    position = widgets.SelectionSlider(options=[(label, i) for i, label in enumerate(labels)], index=index,
                                       description=description, **slider)
    stacks = {name: widgets.Stack([widgets.Image(value=f, format="png") if isinstance(f, bytes) else f
                                   for f in group], selected_index=index) for name, group in sets.items()}
    for stack in stacks.values():
        widgets.jslink((position, "index"), (stack, "selected_index"))
    if not isinstance(frames, dict):
        return widgets.VBox([position, stacks[None]])
    buttons = widgets.ToggleButtons(options=list(stacks), description=choices or "")
    shown = widgets.Stack(list(stacks.values()), selected_index=0)
    widgets.jslink((buttons, "index"), (shown, "selected_index"))
    return widgets.VBox([buttons, position, shown])
