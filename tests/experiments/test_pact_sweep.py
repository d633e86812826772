"""qsal_lab.experiments.pact_sweep: recipes, rows, tables, the ONNX Runtime rows and the FP-vs-QAT step timer, on tiny
inputs (MNIST only for the loaders)."""
import copy
from dataclasses import asdict

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qsal_lab.experiments.pact_sweep import (CALIBRATION_BATCH, CALIBRATION_IMAGES, bit_sweep, format_onnx_table,
                                             format_precision_table, format_table, mnist_batches, mnist_loaders,
                                             onnx_rows, qat_recipe, train_step_seconds)
from qsal_lab.experiments.study import FineTune, Precision, Row, accuracy_on, against, find_row, float_row, ptq_row
from qsal_lab.models import SmallCNN, count_parameters
from qsal_lab.quant import QATConfig, quantize_model
from qsal_lab.quant.packing import save_packed, state_dict_bytes


def test_book_recipes_give_more_training_to_fewer_bits():
    images = {b: qat_recipe(b, "book").epochs * qat_recipe(b, "book").train_subset for b in (8, 4, 3, 2)}
    assert images[8] < images[4] <= images[3] < images[2]
    assert [qat_recipe(b, "book").pact_alpha for b in (8, 4, 3, 2)] == [8.0, 4.0, 3.0, 2.0]


def test_recipe_config_and_fallback_for_unlisted_widths():
    step = qat_recipe(2, "ci")
    assert isinstance(step, FineTune) and step.model == "PACT W2A2"
    config = step.config()
    assert isinstance(config, QATConfig)
    assert (config.w_bits, config.a_bits, config.pact_alpha, config.weight_quant) == (2, 2, 2.0, "dorefa")
    assert qat_recipe(6, "book") == qat_recipe(4, "book")  # 5..7 bits use the 4-bit schedule


@pytest.mark.parametrize("bits, message", [(32, "32 bits is the float model"), (9, "invalid bit width 9"),
                                           (1, "invalid bit width 1")])
def test_recipe_rejects_bad_bit_widths(bits, message):
    with pytest.raises(ValueError, match=message):
        qat_recipe(bits, "book")


def test_recipe_rejects_an_unknown_budget():
    with pytest.raises(ValueError, match="unknown budget 'huge'"):
        qat_recipe(4, "huge")


def tiny_loader(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)),
                      batch_size=8)


def test_float_and_ptq_rows(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    fp = float_row(model, accuracy_on(tiny_loader()), "noise")
    assert fp.model == "FP32" and fp["w_bits"] == 32 and 0.0 <= fp.accuracy <= 1.0 and fp.data == "noise"
    assert fp.size_bytes == 4 * count_parameters(model)
    assert fp.file_bytes == state_dict_bytes(model)
    row = ptq_row(model, 4, tiny_loader(seed=1), accuracy_on(tiny_loader()), tmp_path, "noise")
    assert (row.model, row.precision, row["observer"]) == ("PTQ W4A4", Precision(4, 4, 8), "mse")
    assert (tmp_path / "ptq_w4a4.qsal").stat().st_size == row.file_bytes
    # classifier.2 (3136 x 128) dominates: at 4 bits the model is a bit over an eighth of float32
    assert 0.12 < row.size_bytes / fp.size_bytes < 0.14


ROWS = against([Row("FP32", "MNIST", accuracy=0.995, size_bytes=2048, file_bytes=4096),
                Row("PACT W4A4", "MNIST", Precision(4, 4, 8), accuracy=0.9931, size_bytes=256, file_bytes=512,
                    metrics={"accuracy_before": 0.1135}),
                Row("PTQ W2A2", "MNIST", Precision(2, 2, 8), accuracy=0.9952, size_bytes=128, file_bytes=256)],
               Row("FP32", "MNIST", accuracy=0.995, size_bytes=2048, file_bytes=4096))


def test_format_table_says_the_drop_in_words():
    lines = format_table(ROWS).splitlines()
    assert lines[0] == ("| model | W/A bits | test accuracy | before fine-tuning | vs FP32 | size (KiB) | size vs FP32 "
                        "| packed file (KiB) | file vs FP32 |")
    assert lines[1] == "|" + "---|" * 9
    assert lines[2] == "| FP32 | 32/32 | 99.50% | – | – | 2.0 | 1.000× | 4.0 | 1.000× |"
    assert lines[3] == "| PACT W4A4 | 4/4 | 99.31% | 11.35% | 0.19 pt below FP32 | 0.2 | 0.125× | 0.5 | 0.125× |"
    assert lines[4] == "| PTQ W2A2 | 2/2 | 99.52% | – | 0.02 pt above FP32 | 0.1 | 0.062× | 0.2 | 0.062× |"


def test_mnist_loaders_are_chapter_3s(mnist_root):
    from qsal_lab.budget import recipe
    from qsal_lab.data import load_dataset

    test_loader, calib_loader = mnist_loaders("ci", root=mnist_root)
    assert len(test_loader.dataset) == recipe("smallcnn", "ci").test_subset and test_loader.batch_size == 500
    assert (len(calib_loader.dataset), calib_loader.batch_size, len(calib_loader)) == (1024, 128, 8)
    assert (CALIBRATION_IMAGES, CALIBRATION_BATCH) == (1024, 128)
    # chapter 3: load_dataset("mnist", "train", subset=1024, seed=0) in unshuffled batches of 128, the same every time
    chapter3 = load_dataset("mnist", "train", root=mnist_root, subset=1024, seed=0)
    first, again = next(iter(calib_loader)), next(iter(calib_loader))
    assert torch.equal(first[0], again[0])
    assert torch.equal(first[0], torch.stack([chapter3[i][0] for i in range(128)]))
    batches = mnist_batches(2, "ci")
    assert len(batches) == 2 and len(batches[0][1]) == recipe("smallcnn", "ci").batch_size


def test_onnx_rows_run_every_model_in_onnx_runtime(tmp_path):
    torch.manual_seed(0)
    fp_model = SmallCNN().eval()
    calib, test = tiny_loader(n=16, seed=1), tiny_loader(n=16, seed=2)
    qat = quantize_model(SmallCNN(), QATConfig(w_bits=4, a_bits=4, pact_alpha=4.0)).eval()
    config = QATConfig(w_bits=4, a_bits=4, pact_alpha=4.0)
    qat.load_state_dict(quantize_model(copy.deepcopy(fp_model), config).state_dict())
    save_packed(qat, tmp_path / "w4.qsal", build={"name": "smallcnn", "num_classes": 10})
    rows = [float_row(fp_model, accuracy_on(test), "noise"),
            Row("PACT W4A4", "noise", Precision(4, 4, 8), notes={"packed_path": str(tmp_path / "w4.qsal")})]
    result = onnx_rows(rows, fp_model, calib, test, out=tmp_path / "onnx", bits=(4,), repeats=2)
    assert [(r.model, str(r.precision)) for r in result] == [("FP32 (ORT)", "32/32"), ("PTQ int8 (ORT)", "8/8"),
                                                             ("PACT W4A4 (ORT)", "4/4")]
    for r in result:
        assert 0 <= r.accuracy <= 1 and 0 <= r["agreement"] <= 1 and r.latency_ms > 0
        assert r.file_bytes == (tmp_path / "onnx" / r["path"].split("/")[-1]).stat().st_size
    fp32, int8, pact = result
    assert fp32["agreement"] == 1.0 and fp32["ort_ops"]["integer"] == "none"
    assert "QLinearConv x3" in int8["ort_ops"]["integer"] and "QLinearConv x3" in pact["ort_ops"]["integer"]
    assert pact["ort_ops"]["float32"] == "none" and pact.file_bytes < 0.3 * fp32.file_bytes
    assert find_row(result, "PTQ int8 (ORT)")["reference"] == "fake-quant PTQ W8A8 (min-max)"
    table = format_onnx_table(result).splitlines()
    assert table[0].startswith("| model | W/A bits | test accuracy | vs FP32 (PyTorch) | same class as |")
    assert table[4].startswith("| PACT W4A4 (ORT) | 4/4 |") and "with fake-quant PACT W4A4" in table[4]
    precision = format_precision_table(result).splitlines()
    assert precision[3].startswith("| PTQ int8 (ORT) | QLinearConv x3")
    assert precision[4].startswith("| PACT W4A4 (ORT) | QLinearConv x3")


def test_train_step_seconds_times_both_models_and_leaves_the_input_alone():
    torch.manual_seed(0)
    model = SmallCNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = list(tiny_loader(n=8, seed=2))
    t = train_step_seconds(model, QATConfig(w_bits=4, a_bits=4), batches, rounds=2)
    assert t["fp_step_s"] > 0 and t["qat_step_s"] > 0 and len(t["fp_rounds"]) == len(t["qat_rounds"]) == 2
    assert t["ratio"] == t["qat_step_s"] / t["fp_step_s"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the float model was trained"


@pytest.mark.parametrize("batches, rounds, message", [([], 1, "at least one"), (None, 0, "rounds must be a positive")])
def test_train_step_seconds_rejects_bad_input(batches, rounds, message):
    batches = list(tiny_loader(n=8)) if batches is None else batches
    with pytest.raises(ValueError, match=message):
        train_step_seconds(SmallCNN(), QATConfig(), batches, rounds=rounds)


def test_bit_sweep_wants_a_float_mnist_smallcnn(tmp_path):
    spec = {"model": "smallcnn", "num_classes": 10, "in_channels": 1, "image_size": 28, "dataset": "mnist"}
    quantized = quantize_model(SmallCNN(), QATConfig(w_bits=4, a_bits=4))
    torch.save({"model": quantized.state_dict(), "model_spec": {**spec, "quant": asdict(quantized.qsal_config)}},
               tmp_path / "q.pt")
    with pytest.raises(ValueError, match=r"holds a smallcnn for mnist \(quantized\); the study needs a float smallcnn"):
        bit_sweep(tmp_path / "q.pt", budget="ci")
    torch.save({"model": SmallCNN(in_channels=3).state_dict(), "model_spec": {**spec, "in_channels": 3,
                                                                                "dataset": "cifar10"}},
               tmp_path / "c.pt")
    with pytest.raises(ValueError, match="holds a smallcnn for cifar10; the study needs a float smallcnn for mnist"):
        bit_sweep(tmp_path / "c.pt", budget="ci")
