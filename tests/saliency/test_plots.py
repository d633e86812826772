"""Saliency figures: grids of images x methods and images x models, overlays, curves; saved as PNG."""
import matplotlib
import pytest
import torch
from torch import nn

from qsal_lab.quant import QATConfig, quantize_model
from qsal_lab.saliency import (cascading_randomization, faithfulness, maps_by_method, maps_by_model,
                               plot_randomization, plot_removal_curves, saliency_grid)

matplotlib.use("Agg")


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 64, 3)).eval()


X, Y = torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 2])


def test_method_grid_is_saved(tmp_path, monkeypatch):
    monkeypatch.setenv("QSAL_FIGURES", str(tmp_path))
    maps = maps_by_method(tiny_cnn(), X, Y, options={"ig": {"n_steps": 4}, "smoothgrad": {"nt_samples": 2}})
    assert list(maps) == ["saliency", "ig", "smoothgrad", "gradcam", "occlusion"]
    fig = saliency_grid(X, maps, row_titles=["a", "b", "c"], name="grid")
    assert len(fig.axes) == 3 * 6 and (tmp_path / "grid.png").stat().st_size > 0
    fig = saliency_grid(X, maps, overlay_image=True, with_image=False)
    assert len(fig.axes) == 3 * 5


def test_bit_width_grid():
    models = {"fp32": tiny_cnn(), "W4A4": quantize_model(tiny_cnn(), QATConfig(w_bits=4, a_bits=4)).eval()}
    maps = maps_by_model(models, X, Y, "saliency")
    assert list(maps) == ["fp32", "W4A4"] and not torch.equal(maps["fp32"], maps["W4A4"])
    assert len(saliency_grid(X, maps).axes) == 3 * 3


def test_curves_and_randomization_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("QSAL_FIGURES", str(tmp_path))
    model = tiny_cnn()
    plot_removal_curves(faithfulness(model, X, Y, methods=["saliency"], fractions=(0, 0.5)), name="curves")
    plot_randomization(cascading_randomization(model, X, Y), name="cascade")
    assert (tmp_path / "curves.png").exists() and (tmp_path / "cascade.png").exists()


def test_grid_refuses_maps_of_other_images():
    with pytest.raises(ValueError, match=r"maps\['x'\] has shape"):
        saliency_grid(X, {"x": torch.rand(2, 3, 8, 8)})
    with pytest.raises(ValueError, match="at least one"):
        saliency_grid(X, {})
