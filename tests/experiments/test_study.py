"""qsal_lab.experiments.study: the typed row, the fine-tuning recipe, the row builders and the table, on tiny inputs."""
import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qsal_lab.experiments.study import (INT8, FineTune, Precision, Row, accuracy_on, against, find_row, finished_run,
                                        float_checkpoint, ort_rows, pact_row, percent, ship_checkpoint, slug, table)
from qsal_lab.models import SmallCNN
from qsal_lab.quant import QATConfig, quantize_model
from qsal_lab.train import fit


def loader(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)),
                      batch_size=8)


def test_a_row_reads_like_its_json_and_says_what_it_lacks():
    row = Row("PACT W4A4", "MNIST", Precision(4, 4, 8), accuracy=0.99, metrics={"gap": 0.1},
              notes={"history": [], "test_probs": [0.5]})
    assert row["accuracy"] == row.accuracy and row["w_bits"] == 4 and row["gap"] == 0.1 and row["history"] == []
    assert "gap" in row and "nope" not in row and row.get("nope", 3) == 3
    flat = row.to_dict()
    assert flat["model"] == "PACT W4A4" and flat["first_last_bits"] == 8 and "test_probs" not in flat
    assert json.loads(json.dumps(flat))["gap"] == 0.1
    with pytest.raises(KeyError, match="row 'PACT W4A4' has no 'nope'; it has: model, data"):
        row["nope"]
    row.notes["gap"] = 0.2
    with pytest.raises(ValueError, match=r"has \['gap'\] both as a metric and as a note"):
        row.to_dict()


def test_precision_of_a_config_and_in_words():
    assert Precision.of(QATConfig(w_bits=2, a_bits=4)) == Precision(2, 4, 8)
    assert str(Precision()) == "32/32" and str(INT8) == "8/8"
    assert Precision(4, 4, 8, {"fc": 2}).to_dict()["layer_bits"] == {"fc": 2}


def test_fine_tune_names_its_row_and_builds_its_config():
    step = FineTune(4, 2, 1000, sgt_fraction=0.1)
    assert step.sgt and step.model == "SGT + PACT W4A4" and slug(step.model) == "sgt_pact_w4a4"
    config = step.config(alpha_lr_scale=10.0)
    assert (config.w_bits, config.pact_alpha, config.weight_quant, config.alpha_lr_scale) == (4, 4.0, "symmetric", 10.0)
    assert FineTune(2, 1, pact_alpha=3.0).config().pact_alpha == 3.0 and not FineTune(2, 1).sgt


def test_find_row_against_and_table():
    rows = [Row("FP32", "d", accuracy=0.9, file_bytes=400, size_bytes=400, latency_ms=2.0),
            Row("PTQ int8 (ORT)", "d", INT8, accuracy=0.91, file_bytes=120, latency_ms=1.0,
                metrics={"fp32_file_bytes": 480})]
    against(rows, rows[0])
    assert rows[1].drop_pt == pytest.approx(-1.0) and rows[1]["file_vs_fp32"] == 0.25
    assert rows[1]["latency_vs_fp32"] == 0.5 and rows[0].drop_pt == 0.0 and "size_vs_fp32" not in rows[1]
    assert find_row(rows, "PTQ int8 (ORT)") is rows[1]
    with pytest.raises(KeyError, match="no row 'PACT W4A4'; the rows are: FP32, PTQ int8 \\(ORT\\)"):
        find_row(rows, "PACT W4A4")
    assert table(rows, {"model": lambda r: r.model, "accuracy": lambda r: percent(r.accuracy)}).splitlines() == [
        "| model | accuracy |", "|---|---|", "| FP32 | 90.00% |", "| PTQ int8 (ORT) | 91.00% |"]


def test_ort_rows_time_and_score_both_files(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    fp32, int8 = ort_rows(model, accuracy_on(loader()), loader(seed=1), tmp_path, "noise", loader()
                          .dataset[0][0].unsqueeze(0), {"model": "smallcnn"}, repeats=2, rounds=2)
    assert (fp32.model, int8.model, int8.precision) == ("FP32 (ORT)", "PTQ int8 (ORT)", INT8)
    assert int8.file_bytes < 0.3 * fp32.file_bytes and int8["fp32_file_bytes"] == fp32.file_bytes
    assert int8["speedup_vs_fp32"] == pytest.approx(fp32.latency_ms / int8.latency_ms)
    assert "QLinearConv" in int8["ort_ops"]["integer"] and int8["calibration"] == "minmax on 16 training images"


def test_pact_row_scores_the_packed_file_and_keeps_the_train_notes(tmp_path):
    torch.manual_seed(0)
    step = FineTune(4, 1, 16)

    def train(step, run):
        model = quantize_model(SmallCNN(), step.config())
        history = fit(model, loader().dataset, epochs=step.epochs, lr=1e-3, batch_size=8, progress=False)
        return model, history.epochs, {"source": "here"}

    row = pact_row(step, train, accuracy_on(loader(seed=2)), tmp_path, "noise", {"name": "smallcnn", "num_classes": 10})
    assert row.model == "PACT W4A4" and row.precision == Precision(4, 4, 8) and row.file_kind == "bit-packed"
    assert (tmp_path / "pact_w4a4" / "pact_w4a4.qsal").stat().st_size == row.file_bytes and row["source"] == "here"
    assert row["step"]["epochs"] == 1 and len(row["history"]) == 1 and 0 <= row.accuracy <= 1


def test_checkpoints_float_finished_and_shipped(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN()
    spec = {"model": "smallcnn", "num_classes": 10, "in_channels": 1, "image_size": 28, "dataset": "mnist"}
    fit(model, loader().dataset, epochs=1, lr=1e-3, batch_size=8, progress=False, out=tmp_path / "run",
        model_spec=spec, config={"dataset": "mnist", "quant": None})
    path = tmp_path / "run" / "checkpoint.pt"
    assert float_checkpoint(path, "smallcnn", "mnist")[1]["model_spec"] == spec
    with pytest.raises(ValueError, match="holds a smallcnn for mnist; the study needs a float resnet20 for mnist"):
        float_checkpoint(path, "resnet20", "mnist")
    assert finished_run(path, dataset="mnist", quant=None) and not finished_run(path, dataset="cifar10")
    assert finished_run(tmp_path / "nothing.pt") is None
    shipped = ship_checkpoint(tmp_path / "run", tmp_path / "shipped", "python train.py", lambda m: {"answer": 42})
    assert shipped["answer"] == 42 and shipped["epochs"] == 1 and shipped["parameters"] > 0
    metrics = json.loads((tmp_path / "shipped" / "metrics.json").read_text())
    assert metrics["shipped"]["file_bytes"] == (tmp_path / "shipped" / "checkpoint.pt").stat().st_size
    assert (tmp_path / "shipped" / "COMMAND").read_text() == "python train.py\n"
