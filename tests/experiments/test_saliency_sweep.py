"""qsal_lab.experiments.saliency_sweep on tiny untrained models and random images (no MNIST needed)."""
import copy

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qsal_lab.experiments.saliency_sweep import (COARSE, FINE, SweepModel, by_bits, first_degraded, format_table,
                                                 int8_models, label_of, saliency_rows, shipped_name, summary_table)
from qsal_lab.experiments.study import Precision, Row, find_row
from qsal_lab.models import SmallCNN
from qsal_lab.quant import QATConfig, quantize_model


def tiny_data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    return x, torch.randint(0, 10, (n,), generator=g)


def family(name, seed):
    torch.manual_seed(seed)
    fp = SmallCNN().eval()
    q4 = quantize_model(copy.deepcopy(fp), QATConfig(w_bits=4, a_bits=4)).eval()
    return {label_of(name): SweepModel(label_of(name), name, 32, fp),
            label_of(name, 4): SweepModel(label_of(name, 4), name, 4, q4)}


def test_names_and_labels():
    assert shipped_name("Standard") == "mnist_smallcnn" and shipped_name("SGT") == "mnist_sgt_smallcnn"
    assert shipped_name("Standard", 4) == "mnist_pact_w4a4" and shipped_name("SGT", 2) == "mnist_sgt_pact_w2a2"
    assert label_of("SGT", 4) == "SGT + PACT W4A4" and label_of("Standard", 8, "onnx") == "Standard int8 (ORT)"
    with pytest.raises(ValueError, match="unknown family 'Plain'"):
        shipped_name("Plain")
    assert FINE == (0.0, 0.02, 0.04, 0.06, 0.08, 0.1) and COARSE[-1] == 0.9


def test_rows_metrics_and_references(tmp_path):
    x, y = tiny_data()
    models = {**family("Standard", 0), **family("SGT", 1)}
    loader = DataLoader(TensorDataset(x, y), batch_size=6)
    models.update(int8_models(models, loader, tmp_path, families=("Standard",)))
    rows = saliency_rows(models, x, y, loader, methods=("saliency", "occlusion"), progress=False)
    # torch models get both methods, the ONNX model occlusion only
    assert [(r.model, r["method"]) for r in rows if r["kind"] == "onnx"] == [("Standard int8 (ORT)", "occlusion")]
    assert len(rows) == 4 * 2 + 1
    for r in rows:
        assert 0 <= r.accuracy <= 1 and 0 <= r["area"] <= 1 and 0 <= r["random_area"] <= 1 and r.data == "MNIST"
        assert r["gap"] == pytest.approx(r["random_area"] - r["area"])
        assert len(r["curve"]) == len(FINE) and len(r["curve_coarse"]) == len(COARSE)
        assert 0 <= r["gini"] <= 1
    fp = find_row(rows, "Standard", method="saliency")
    assert fp["spearman"] is None and fp.drop_pt == 0.0 and fp.precision == Precision()
    q = find_row(rows, "PACT W4A4", method="saliency")
    assert -1 <= q["spearman"] <= 1 and 0 <= q["top10_iou"] <= 1 and q.precision == Precision(4, 4, 8)
    assert q.drop_pt == pytest.approx(100 * (fp.accuracy - q.accuracy))
    assert find_row(rows, "PACT W4A4") is q  # the first method's row
    # agreement is against the family's own float model: the SGT float model agrees with itself
    sgt_q = find_row(rows, "SGT + PACT W4A4", method="saliency")
    assert sgt_q["spearman"] is not None
    onnx = find_row(rows, "Standard int8 (ORT)", method="occlusion")
    assert onnx["spearman"] > 0.5  # int8 of the same weights: nearly the float model's occlusion maps
    summary = summary_table(rows)
    assert summary.count("\n") == 1 + 5 and "| Standard int8 (ORT) | 8/8 |" in summary
    table = format_table(rows, methods=("saliency",))
    assert "| PACT W4A4 | 4/4 |" in table and "occlusion" not in table
    assert "below Standard float" in table or "above Standard float" in table or "same as Standard float" in table
    assert list(by_bits(rows, "Standard", "saliency", "gap")) == [32, 4]
    with pytest.raises(KeyError, match="no row 'nope'"):
        find_row(rows, "nope")


def test_float_model_must_come_first():
    x, y = tiny_data(4)
    fam = family("Standard", 0)
    reordered = dict(reversed(list(fam.items())))
    with pytest.raises(ValueError, match="float model must come before"):
        saliency_rows(reordered, x, y, methods=("saliency",), progress=False)


def test_first_degraded_reads_the_tolerances():
    def row(bits, drop, gap, rho):
        return Row(label_of("Standard", bits), "MNIST", Precision(bits, bits, 8 if bits < 32 else 32), drop_pt=drop,
                   metrics={"gap": gap, "spearman": rho}, notes={"family": "Standard", "method": "saliency",
                                                                 "kind": "torch"})
    rows = [row(32, 0.0, 0.2, None), row(8, 0.0, 0.19, 0.9), row(4, 0.1, 0.08, 0.7), row(2, 0.9, 0.02, 0.3)]
    assert first_degraded(rows, "Standard") == {"accuracy": 2, "faithfulness": 4, "agreement": 2}
    assert first_degraded(rows, "Standard", tolerances={"agreement": 0.95}) ["agreement"] == 8
    assert first_degraded(rows[:2], "Standard") == {"accuracy": None, "faithfulness": None, "agreement": None}
    rows[0].metrics["gap"] = -0.01  # the float maps no better than random: nothing to lose
    assert first_degraded(rows, "Standard")["faithfulness"] == 32
    assert np.isfinite(rows[0]["gap"])
