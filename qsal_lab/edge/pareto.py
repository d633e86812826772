"""Pareto plots: which (model, backend) pairs are worth having when accuracy, latency and size all count.

A point is on the Pareto front when no other point is at least as fast (or small) *and* at least as
accurate, and strictly better in one of the two. Everything off the front is beaten by something on it.

    points = [{"label": "ResNet-20 int8", "accuracy": 0.91, "p50_ms": 0.23, "file_bytes": 310_000}, ...]
    fig = plot_pareto(points, name="edge_pareto")      # accuracy vs latency and vs size, front drawn
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

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
                axes=(("p50_ms", "p50 latency, batch 1 (ms)", 1.0), ("file_bytes", "file size (MB)", 1e-6)),
                y: str = "accuracy", y_label: str = "test accuracy (%)"):
    """One panel per x axis (key, label, scale; default: p50 latency and file size, log scale) of `y`
    (a fraction, shown in %) against it, every point labelled, the Pareto front as a dashed step line.
    Saved as figures/<name>.png if named. Points without a `y` value are left out."""
    points = [p for p in points if p.get(y) is not None]
    if not points:
        raise ValueError(f"no point has a value for {y!r} to plot")
    fig, panels = plt.subplots(1, len(axes), figsize=(5.6 * len(axes), 4.0), squeeze=False)
    for ax, (x, x_label, scale) in zip(panels[0], axes):
        usable = sorted((p for p in points if p.get(x)), key=lambda p: p[x])
        for k, p in enumerate(usable):
            colour = f"C{next(i for i, q in enumerate(points) if q is p) % 10}"  # the same in every panel
            ax.scatter(p[x] * scale, 100 * p[y], color=colour, zorder=3)
            # staggered so that labels of equally accurate points do not print over each other
            ax.annotate(p.get("label", str(k)), (p[x] * scale, 100 * p[y]), textcoords="offset points",
                        xytext=(5, 5 - 10 * (k % 3)), fontsize=7)
        front = [usable[i] for i in pareto_front(usable, x, y)]
        ax.step([p[x] * scale for p in front], [100 * p[y] for p in front], where="post", color="0.4",
                linestyle="--", linewidth=1, label="Pareto front", zorder=2)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(x_label), ax.set_ylabel(y_label)
        low = min(100 * p[y] for p in usable)
        ax.set_ylim(min(low - 1, low * 0.98), min(100.5, max(100 * p[y] for p in usable) + 1))
        ax.margins(x=0.25)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, name)
    return fig
