"""qsal_lab.experiments.medical: the MedMNIST study end to end at the ci budget (PneumoniaMNIST, and a synthetic
multi-class and multi-label file in MedMNIST's layout), thresholds from validation only, tables and figures."""
import json

import numpy as np
import pytest

from qsal_lab.data import DataError
from qsal_lab.experiments import medical
from qsal_lab.experiments.medical import (ROWS, aggregate, balanced_nll, check_flag, clinical_score, format_aggregate,
                                          format_table, plot_pareto, plot_reliability_diagrams, run_study)
from qsal_lab.experiments.report import jsonable
from qsal_lab.experiments.study import INT8, Precision, Row
from tests.fixtures.medmnist import synthetic_medmnist


def test_balanced_nll_by_hand():
    y = np.array([0, 1, 1, 1])
    p = np.array([[0.5, 0.5], [0.2, 0.8], [0.2, 0.8], [0.2, 0.8]])
    # class 0: -log 0.5; class 1: -log 0.8; the mean of the two, however many of each there are
    assert balanced_nll(y, p, "binary-class") == pytest.approx((np.log(2) - np.log(0.8)) / 2)
    multi = np.array([[1, 0], [0, 0]])
    probs = np.array([[0.9, 0.1], [0.3, 0.2]])
    expected = np.mean([np.mean([-np.log(0.9), -np.log(0.7)]), -np.log(np.array([0.9, 0.8])).mean()])
    assert balanced_nll(multi, probs, "multi-label") == pytest.approx(expected)


@pytest.mark.parametrize("flag, message", [("organmnist3d", "is a 3D MedMNIST flag"), ("mnist", "no validation split"),
                                           ("pneumonia", "did you mean 'pneumoniamnist'")])
def test_bad_flags_are_refused_before_any_work(flag, message, tmp_path):
    with pytest.raises((DataError, ValueError), match=message):
        run_study(flag, out=tmp_path, budget="ci")
    assert not list(tmp_path.iterdir())


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"(?s)'dermamnist_64' is not available under .*dermamnist_64.npz"):
        run_study("dermamnist", size=64, out=tmp_path / "out", budget="ci", root=tmp_path, download=False)
    assert check_flag("pathmnist", 128) == "pathmnist_128"


def fake(model, precision, file_bytes, latency_ms, accuracy, auc, auc_ci, **more):
    metrics = {"auc": auc, "auc_ci": auc_ci, "accuracy_ci": (accuracy - 0.02, accuracy + 0.02), "sensitivity": 0.95,
               "sensitivity_ci": (0.93, 0.97), "specificity": 0.8, "specificity_ci": (0.75, 0.85), "ece": 0.03, **more}
    return Row(model, "PneumoniaMNIST", precision, accuracy=accuracy, file_bytes=file_bytes, latency_ms=latency_ms,
               metrics=metrics)


def fakes(auc_shift=0.0):
    return [fake("FP32", Precision(), 4_000_000, 2.0, 0.9, 0.97 + auc_shift, (0.95, 0.98)),
            fake("PTQ int8", INT8, 1_000_000, 0.7, 0.9, 0.969 + auc_shift, (0.95, 0.98)),
            fake("PACT W4A4", Precision(4, 4, 8), 600_000, None, 0.88, 0.96 + auc_shift, (0.94, 0.975)),
            Row("SGT + PACT W4A4", "PneumoniaMNIST", Precision(4, 4, 8),
                notes={"skipped": "needs one class per image"})]


def test_table_aggregate_and_pareto_on_given_rows():
    FAKE = fakes()
    table = format_table(FAKE)
    assert "| FP32 | 32/32 | 4.00 MB | 2.00 ms | 0.970 [0.950, 0.980] |" in table
    assert "| PACT W4A4 | 4/4 | 0.60 MB | — |" in table and "not run: needs one class per image" in table
    agg = aggregate([{"seed": 0, "rows": FAKE}, {"seed": 1, "rows": fakes(-0.01)}])
    assert agg[0]["auc_mean"] == pytest.approx(0.965) and agg[0]["auc_std"] == pytest.approx(0.01 / np.sqrt(2))
    assert agg[0]["seeds"] == [0, 1] and "skipped" in agg[3]
    assert "| FP32 | 32/32 | 2 | 4.00 ± 0.00 |" in format_aggregate(agg)
    assert "not run: needs one class per image" in format_aggregate(agg)
    fig = plot_pareto(FAKE)
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    FAKE[2].metrics["packed_bytes"] = 300_000
    packed = plot_pareto([FAKE[2], FAKE[0]], size="packed_bytes")
    assert packed.axes[0].get_xlabel() == "file size, PACT rows bit-packed (MB)"
    with pytest.raises(ValueError, match="size must be 'file_bytes' or 'packed_bytes'"):
        plot_pareto(FAKE, size="bytes")


def _check_study(study, rows=ROWS):
    got = [r.model for r in study["rows"]]
    assert got == list(rows)
    for r in study["rows"]:
        if "skipped" in r:
            continue
        assert 0 <= r["auc"] <= 1 and r["auc_ci"][0] <= r["auc"] <= r["auc_ci"][1], r.model
        for key in ("accuracy", "sensitivity", "specificity"):
            assert r[f"{key}_ci"][0] <= r[key] <= r[f"{key}_ci"][1], (r.model, key)
        assert r.file_bytes > 0 and 0 <= r["ece"] <= 1 and r.clinical["auc"] == r["auc"]
        # a PACT model whose QDQ file the exporter refuses (near-tied logits after a ci epoch) is scored from its
        # bit-packed file and has no latency
        refused = "predicts the fake-quant model's class" in r.get("onnx_export_error", "")
        assert (r.latency_ms is not None and r.latency_ms > 0) or refused, (r.model, r.get("onnx_export_error"))
        assert r["auc"] == pytest.approx(r["medmnist_auc"])
    by = {r.model: r for r in study["rows"]}
    if "PTQ int8" in by:
        assert by["PTQ int8"].file_bytes < 0.3 * by["FP32"].file_bytes and by["PTQ int8"].precision == INT8
        assert 0.5 <= by["PTQ int8"]["agreement_with_fp32"] <= 1
        assert "QLinearConv" in by["PTQ int8"]["ort_ops"]["integer"]
    if "PACT W4A4" in by:
        packed = {m: by[m].get("packed_bytes", by[m].file_bytes) for m in ("PACT W4A4", "PACT W8A8")}
        assert packed["PACT W4A4"] < packed["PACT W8A8"] < by["FP32"].file_bytes
        assert by["PACT W4A4"].file_bytes < 0.3 * by["FP32"].file_bytes  # int8 storage in ONNX, or packed
    return by


def _poisoned(ds):
    """A copy of ds whose labels are wrong (the images untouched)."""
    import copy
    bad = copy.copy(ds)
    bad.labels = (1 - ds.labels) if ds.labels.max() <= 1 else (ds.labels + 1) % ds.info.num_classes
    return bad


@pytest.mark.slow
def test_pneumoniamnist_study_at_ci_budget(data_root, tmp_path):
    if not (data_root / "medmnist" / "pneumoniamnist.npz").exists():
        pytest.skip("no PneumoniaMNIST")
    study = run_study("pneumoniamnist", out=tmp_path, budget="ci", progress=False)
    by = _check_study(study)
    assert study["selection"]["chosen"] in ("weighted_loss", "sampler")
    assert {c["imbalance"] for c in study["selection"]["candidates"]} == {"weighted_loss", "sampler"}
    assert by["SGT + PACT W4A4"]["imbalance"] == "sampler" and by["SGT + PACT W4A4"]["sgt"]["fraction"] == 0.1
    assert by["FP32"]["threshold_method"] == "youden" and "ppv" in by["FP32"]
    assert 0.5 <= by["PACT W8A8"]["agreement_with_fake_quant"] <= 1 and by["PACT W8A8"].latency_ms > 0
    assert by["PACT W4A4"]["auc_drop"] == pytest.approx(by["FP32"]["auc"] - by["PACT W4A4"]["auc"])
    assert by["FP32"]["auc_drop"] == 0.0 and by["PTQ int8"]["file_vs_fp32"] < 0.3

    # thresholds come from validation only: poisoned test labels leave every threshold as it was
    recipe = medical.medical_recipe("ci")
    val_ds, test_ds = medical.eval_splits("pneumoniamnist", recipe)
    from qsal_lab.quant import OnnxClassifier
    fp32 = OnnxClassifier(by["FP32"]["path"], threads=1)
    clean = clinical_score(val_ds, test_ds, recipe.n_boot)(fp32)
    poisoned = clinical_score(val_ds, _poisoned(test_ds), recipe.n_boot)(fp32)
    assert clean["metrics"]["threshold"] == poisoned["metrics"]["threshold"] == by["FP32"]["threshold"]
    assert clean["clinical"]["operating_point"] == poisoned["clinical"]["operating_point"]
    # the test numbers did see the poison
    assert poisoned["metrics"]["sensitivity"] == pytest.approx(1 - clean["metrics"]["specificity"])

    # the figures draw from the rows, and the rows write as JSON (without the per-image scores)
    plot_pareto(study["rows"])
    plot_reliability_diagrams(study["rows"])
    written = json.loads(json.dumps(study["rows"], default=jsonable))
    assert written[0]["model"] == "FP32" and "test_probs" not in written[0] and written[0]["clinical"]["auc"] > 0

    # a finished float run made the same way is reused, not retrained
    chosen = study["selection"]["chosen"]
    path = tmp_path / f"pneumoniamnist_seed0/float_{chosen}_seed0/checkpoint.pt"
    before = path.stat().st_mtime_ns
    assert medical.train_float("pneumoniamnist", recipe, path.parent, chosen, seed=0) == path
    assert path.stat().st_mtime_ns == before
    assert not medical.same_training(path, "pneumoniamnist", recipe, chosen, seed=1)

    report = medical.evaluate_checkpoint(study["float_checkpoint"], val_subset=recipe.val_subset,
                                         test_subset=recipe.test_subset, n_boot=50)
    assert report["operating_point"]["method"] == "youden" and 0 <= report["auc"] <= 1


@pytest.mark.slow
def test_multiclass_study_on_a_synthetic_medmnist_file(tmp_path, monkeypatch):
    """bloodmnist here is a SYNTHETIC file in MedMNIST's layout (tests/fixtures/medmnist.py), not BloodMNIST."""
    root = synthetic_medmnist(monkeypatch, tmp_path / "data", "bloodmnist")
    study = run_study("bloodmnist", out=tmp_path / "out", budget="ci", root=root, progress=False)
    by = _check_study(study)
    assert by["FP32"]["threshold"] is None and by["FP32"]["threshold_method"] == "argmax"
    assert len(by["FP32"].clinical["sensitivity_per_class"]) == 8
    assert study["task"] == "multi-class"


@pytest.mark.slow
def test_multilabel_study_skips_sgt_and_says_why(tmp_path, monkeypatch):
    """chestmnist here is a SYNTHETIC file in MedMNIST's layout, not ChestMNIST."""
    root = synthetic_medmnist(monkeypatch, tmp_path / "data", "chestmnist")
    rows = ("FP32", "SGT + PACT W4A4")
    study = run_study("chestmnist", out=tmp_path / "out", budget="ci", root=root, rows=rows, progress=False)
    by = _check_study(study, rows)
    assert study["selection"]["chosen"] == "weighted_loss"  # no class-balanced sampler for several labels
    assert "needs one class per image" in by["SGT + PACT W4A4"]["skipped"]
    assert len(by["FP32"]["threshold"]) == 14


def test_unknown_rows_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown rows \\['PACT W2A2'\\]"):
        run_study("pneumoniamnist", out=tmp_path, budget="ci", rows=("FP32", "PACT W2A2"))
