import time

import pytest
import torch
from torch import nn

from qsal_lab.edge import file_size_bytes, measure_latency


def test_latency_of_a_known_sleep():
    calls = []

    def sleepy(x):
        calls.append(x)
        time.sleep(0.004)

    stats = measure_latency(sleepy, "example", warmup=2, repeats=10)
    assert set(stats) == {"median_ms", "p90_ms", "mean_ms", "repeats"}
    assert stats["repeats"] == 10 and len(calls) == 12 and calls[0] == "example"
    assert 4.0 <= stats["median_ms"] <= stats["p90_ms"] < 100  # sleep(4 ms) never takes less than 4 ms
    assert stats["mean_ms"] >= 4.0


def test_torch_module_runs_in_eval_without_autograd_and_mode_is_restored():
    seen = {}

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            seen["training"], seen["grad"] = self.training, torch.is_grad_enabled()
            return self.fc(x)

    model = Probe().train()
    stats = measure_latency(model, torch.randn(4, 3), warmup=1, repeats=3)
    assert seen == {"training": False, "grad": False}
    assert model.training  # restored
    assert 0 < stats["median_ms"] < 1000


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="callable"):
        measure_latency(42, None)
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_latency(print, None, repeats=0)
    with pytest.raises(ValueError, match="warmup >= 0"):
        measure_latency(print, None, warmup=-1)


def test_file_size_bytes(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x" * 1234)
    assert file_size_bytes(path) == 1234 and file_size_bytes(str(path)) == 1234
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        file_size_bytes(tmp_path / "missing.onnx")
