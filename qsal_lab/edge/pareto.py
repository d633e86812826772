"""Pareto plots: which (model, backend) pairs are worth having when accuracy, latency and size all count.

A point is on the Pareto front when no other point is at least as fast (or small) *and* at least as
accurate, and strictly better in one of the two. Everything off the front is beaten by something on it.

    points = [{"label": "ResNet-20 int8", "accuracy": 0.91, "p50_ms": 0.23, "file_bytes": 310_000}, ...]
    fig = plot_pareto(points, name="edge_pareto")      # accuracy vs latency and vs size, front drawn
"""
from __future__ import annotations

import matplotlib.pyplot as plt

from ..plots import save_figure


def pareto_front(points, x: str, y: str) -> list[int]:
    """Indices of the points not dominated when `x` is better low and `y` better high, sorted by x."""
    points = list(points)
    front = []
    for i, p in enumerate(points):
        dominated = any(q[x] <= p[x] and q[y] >= p[y] and (q[x] < p[x] or q[y] > p[y])
                        for j, q in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][x], -points[i][y]))


def plot_pareto(points, name: str | None = None, title: str | None = None,
                axes=(("p50_ms", "p50 latency, batch 1 (ms)"), ("file_bytes", "file size (bytes)")),
                y: str = "accuracy", y_label: str = "test accuracy (%)"):
    """One panel per x axis (default: p50 latency and file size, both log scale) of `y` against it,
    every point labelled, the Pareto front as a step line. Saved as figures/<name>.png if named."""
    points = [p for p in points if p.get(y) is not None]
    if not points:
        raise ValueError(f"no point has a value for {y!r} to plot")
    fig, panels = plt.subplots(1, len(axes), figsize=(5.2 * len(axes), 3.8), squeeze=False)
    for ax, (x, x_label) in zip(panels[0], axes):
        usable = [p for p in points if p.get(x)]
        for k, p in enumerate(usable):
            ax.scatter(p[x], 100 * p[y], color=f"C{k % 10}", zorder=3)
            ax.annotate(p.get("label", str(k)), (p[x], 100 * p[y]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        front = [usable[i] for i in pareto_front(usable, x, y)]
        xs, ys = [p[x] for p in front], [100 * p[y] for p in front]
        ax.step(xs, ys, where="post", color="0.4", linestyle="--", linewidth=1, label="Pareto front", zorder=2)
        ax.set_xscale("log")
        ax.set_xlabel(x_label), ax.set_ylabel(y_label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, name)
    return fig
