"""qsal_lab.experiments.pact_sweep: recipes, rows, the table and the FP-vs-QAT step timer, on tiny inputs (no MNIST)."""
from dataclasses import asdict

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qsal_lab.models import SmallCNN, count_parameters
from qsal_lab.quant import QATConfig, quantize_model
from qsal_lab.quant.packing import state_dict_bytes
from qsal_lab.experiments.pact_sweep import (bit_sweep, find_row, float_row, format_table, ptq_row, qat_recipe,
                                  train_step_seconds)


def test_book_recipes_give_more_training_to_fewer_bits():
    images = {b: qat_recipe(b, "book").epochs * qat_recipe(b, "book").train_subset for b in (8, 4, 3, 2)}
    assert images[8] < images[4] <= images[3] < images[2]
    assert [qat_recipe(b, "book").pact_alpha for b in (8, 4, 3, 2)] == [8.0, 4.0, 3.0, 2.0]


def test_recipe_config_and_fallback_for_unlisted_widths():
    config = qat_recipe(2, "ci").config(2)
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
    fp = float_row(model, tiny_loader())
    assert fp["method"] == "FP32" and fp["w_bits"] == 32 and 0.0 <= fp["accuracy"] <= 1.0
    assert fp["size_bytes"] == 4 * count_parameters(model)
    assert fp["file_bytes"] == state_dict_bytes(model)
    row = ptq_row(model, 4, tiny_loader(seed=1), tiny_loader(), tmp_path)
    assert (row["method"], row["w_bits"], row["a_bits"], row["observer"]) == ("PTQ", 4, 4, "mse")
    assert (tmp_path / "ptq_w4a4.qsal").stat().st_size == row["file_bytes"]
    # classifier.2 (3136 x 128) dominates: at 4 bits the model is a bit over an eighth of float32
    assert 0.12 < row["size_bytes"] / fp["size_bytes"] < 0.14


ROWS = [
    {"method": "FP32", "w_bits": 32, "a_bits": 32, "accuracy": 0.995, "size_bytes": 2048, "file_bytes": 4096,
     "size_vs_fp32": 1.0, "file_vs_fp32": 1.0, "drop_pt": 0.0},
    {"method": "PACT QAT", "w_bits": 4, "a_bits": 4, "accuracy": 0.9931, "size_bytes": 256, "file_bytes": 512,
     "size_vs_fp32": 0.125, "file_vs_fp32": 0.125, "drop_pt": 0.19},
]


def test_find_row_and_its_error():
    assert find_row(ROWS, "PACT QAT", 4) is ROWS[1]
    with pytest.raises(KeyError, match="no PTQ row at 4 bits; the sweep has: FP32 W32A32, PACT QAT W4A4"):
        find_row(ROWS, "PTQ", 4)


def test_format_table():
    lines = format_table(ROWS).splitlines()
    assert lines[0].startswith("| method | W/A bits | test accuracy | drop vs FP32 (pt) |")
    assert lines[2] == "| FP32 | 32/32 | 99.50% | +0.00 | 2.0 | 1.000× | 4.0 | 1.000× |"
    assert lines[3] == "| PACT QAT | 4/4 | 99.31% | +0.19 | 0.2 | 0.125× | 0.5 | 0.125× |"


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
    with pytest.raises(ValueError, match="is already quantized; bit_sweep starts from a float checkpoint"):
        bit_sweep(tmp_path / "q.pt", budget="ci")
    torch.save({"model": SmallCNN(in_channels=3).state_dict(), "model_spec": {**spec, "in_channels": 3,
                                                                                "dataset": "cifar10"}},
               tmp_path / "c.pt")
    with pytest.raises(ValueError, match="holds a smallcnn for cifar10; bit_sweep needs a float SmallCNN trained on MNIST"):
        bit_sweep(tmp_path / "c.pt", budget="ci")
