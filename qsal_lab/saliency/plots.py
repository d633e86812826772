"""Saliency figures: overlays, image x method and image x bit-width grids, removal curves, randomisation.

    maps = maps_by_method(model, x, y)                          # {"saliency": ..., "ig": ..., ...}
    saliency_grid(x, maps, name="mnist_methods")                # rows: images; columns: methods
    saliency_grid(x, maps_by_model({"fp32": fp, "W4A4": q4}, x, y, "saliency"), name="mnist_bits")

Each figure is returned and, given `name`, saved as figures/<name>.png (qsal_lab.plots.save_figure).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..plots import save_figure
from .attribution import METHODS, PERTURBATION_METHODS, attribute, normalize_maps


def maps_by_method(model, x, target, methods=None, options: dict | None = None) -> dict:
    """{method: maps} for the same images (default: every method the model supports);
    options = {method: {option: value}}."""
    if methods is None:
        methods = METHODS if isinstance(model, torch.nn.Module) else PERTURBATION_METHODS
    options = options or {}
    return {m: attribute(model, x, target, m, **options.get(m, {})) for m in methods}


def maps_by_model(models: dict, x, target, method: str = "saliency", **options) -> dict:
    """{label: maps} of one method for several models (e.g. {"FP32": fp, "W4A4": pact4, "int8": onnx})."""
    return {label: attribute(m, x, target, method, **options) for label, m in models.items()}


def image_for_display(image: torch.Tensor) -> np.ndarray:
    """A (C, H, W) normalised image as an (H, W) or (H, W, 3) array in [0, 1] (min-max per image)."""
    img = image.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    img = img.permute(1, 2, 0).numpy()
    return img[..., 0] if img.shape[-1] == 1 else img


def overlay(ax, image: torch.Tensor, saliency_map: torch.Tensor | None = None, alpha: float = 0.55,
            cmap: str = "inferno", percentile: float = 99.0):
    """Draw the image in grey with its saliency map (|map| summed over channels, normalised) on top."""
    img = image_for_display(image)
    ax.imshow(img, cmap=None if img.ndim == 3 else "gray")
    if saliency_map is not None:
        heat = normalize_maps(saliency_map.abs().sum(0, keepdim=True)[None], percentile=percentile)[0, 0]
        ax.imshow(heat.cpu().numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    ax.set_xticks([]), ax.set_yticks([])
    return ax


def saliency_grid(images: torch.Tensor, maps: dict, row_titles=None, name: str | None = None,
                  with_image: bool = True, overlay_image: bool = False, percentile: float = 99.0,
                  size: float = 1.4, cmap: str = "inferno"):
    """Rows: images; columns: the entries of `maps` ({label: (N, C, H, W) maps}, e.g. methods or bit widths),
    each map normalised on its own. with_image adds the image itself as the first column; overlay_image
    draws every map over its image instead of on its own."""
    if not maps:
        raise ValueError("saliency_grid needs at least one set of maps, e.g. {'saliency': maps}")
    n = len(images)
    for label, m in maps.items():
        if tuple(m.shape) != tuple(images.shape):
            raise ValueError(f"maps[{label!r}] has shape {tuple(m.shape)}, the images {tuple(images.shape)}")
    columns = (["image"] if with_image else []) + list(maps)
    fig, axes = plt.subplots(n, len(columns), figsize=(size * len(columns), size * n), squeeze=False)
    for i in range(n):
        for j, label in enumerate(columns):
            ax = axes[i, j]
            if label == "image" and with_image:
                overlay(ax, images[i])
            elif overlay_image:
                overlay(ax, images[i], maps[label][i], percentile=percentile, cmap=cmap)
            else:
                heat = normalize_maps(maps[label][i].abs().sum(0, keepdim=True)[None], percentile=percentile)[0, 0]
                ax.imshow(heat.cpu().numpy(), cmap=cmap, vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(str(label), fontsize=9)
            if j == 0 and row_titles is not None:
                ax.set_ylabel(str(row_titles[i]), fontsize=8)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def plot_removal_curves(curves: dict, name: str | None = None, title: str = "faithfulness: remove the most salient pixels"):
    """Accuracy against the fraction of pixels removed, one line per method (random dashed); area in the legend."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for label, c in curves.items():
        style = {"color": "grey", "linestyle": "--"} if label == "random" else {"marker": "o", "markersize": 3}
        ax.plot([100 * f for f in c.fractions], [100 * a for a in c.accuracy], label=f"{label} (area {c.area:.3f})",
                **style)
    ax.set_xlabel("pixels removed (%)"), ax.set_ylabel("accuracy (%)"), ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3), ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, name)
    return fig


def plot_randomization(rows: list[dict], name: str | None = None, keys=("spearman", "ssim")):
    """Similarity to the trained model's maps as layers are randomised from the top (cascading_randomization)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for key in keys:
        ax.plot(range(len(rows)), [r[key] for r in rows], marker="o", label=key)
    ax.set_xticks(range(len(rows)), [r["layer"] for r in rows], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("similarity to the trained model's maps"), ax.set_ylim(-0.1, 1.05)
    ax.set_xlabel("randomised down to layer"), ax.grid(alpha=0.3), ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, name)
    return fig
