"""Pareto fronts and the accuracy-vs-latency/size figure."""
import pytest

from qsal_lab.edge import pareto_front, plot_pareto

POINTS = [
    {"label": "big fp32", "accuracy": 0.95, "p50_ms": 10.0, "file_bytes": 4000},
    {"label": "big int8", "accuracy": 0.94, "p50_ms": 3.0, "file_bytes": 1000},
    {"label": "small fp32", "accuracy": 0.90, "p50_ms": 1.0, "file_bytes": 800},
    {"label": "slow and worse", "accuracy": 0.89, "p50_ms": 5.0, "file_bytes": 5000},
    {"label": "tie of big int8", "accuracy": 0.94, "p50_ms": 3.0, "file_bytes": 1000},
]


def test_pareto_front():
    assert pareto_front(POINTS, "p50_ms", "accuracy") == [2, 1, 4, 0]  # sorted by latency; ties both stay
    assert pareto_front(POINTS, "file_bytes", "accuracy") == [2, 1, 4, 0]
    assert pareto_front(POINTS[:1], "p50_ms", "accuracy") == [0]
    assert pareto_front([{"x": 1, "y": 1}, {"x": 1, "y": 2}], "x", "y") == [1]


def test_plot_pareto_saves_the_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("QSAL_FIGURES", str(tmp_path))
    fig = plot_pareto(POINTS + [{"label": "no accuracy", "accuracy": None, "p50_ms": 1, "file_bytes": 1}],
                      name="pareto_test", title="test")
    assert (tmp_path / "pareto_test.png").stat().st_size > 0
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    assert len(fig.axes[0].collections) == len(POINTS)  # the point without accuracy is left out
    with pytest.raises(ValueError, match="no point has a value for 'accuracy'"):
        plot_pareto([{"p50_ms": 1}])
