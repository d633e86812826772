"""qsal_lab.edge.bench: latency statistics, interleaving, the Timer cross-check, memory in a fresh process."""
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.benchmark import Timer

from qsal_lab.edge import (EAGER, ORT_FP32, ORT_INT8, benchmark, compare_backends, format_table, interleave,
                           peak_rss, prepare_backends)
from qsal_lab.models import build_model

from .conftest import tiny_onnx

X = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_a_known_sleep_and_the_query_count():
    calls = []

    def sleepy(x):
        calls.append(x.shape)
        time.sleep(0.002)

    row = benchmark(sleepy, X, min_queries=20, min_seconds=0, warmup=3, rounds=4, batch_sizes=(), rss=False,
                    budget="book")
    assert row["queries"] == 20 and len(calls) == 3 + 20  # warm-up calls are made but not timed
    assert set(calls) == {(1, 1, 8, 8)}  # latency is measured at batch 1
    assert 2.0 <= row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["p50_ms"] < 100 and row["kind"] == "callable" and row["file_bytes"] is None
    assert row["timed_seconds"] >= 20 * 0.002
    assert row["cpu_ms_per_query"] < 0.5 * row["p50_ms"]  # sleeping costs wall time, not CPU time


def test_min_seconds_keeps_it_going_past_min_queries():
    row = benchmark(lambda x: None, X, min_queries=8, min_seconds=0.05, rounds=2, batch_sizes=(), rss=False,
                    budget="book")
    assert row["queries"] > 8 and row["timed_seconds"] < 0.05  # wall time counts; the calls themselves are tiny


def test_interleaving_rotates_the_first_backend_every_round():
    seen = []
    queries = {name: (lambda name=name: seen.append(name)) for name in "abc"}
    times, order = interleave(queries, min_queries=8, min_seconds=0, rounds=4, warmup=1)
    assert order == list("abc" "bca" "cab" "abc")
    assert seen[:3] == list("abc")  # one warm-up call each, then blocks of 2 in `order`
    assert seen[3:] == [name for name in order for _ in range(2)]
    assert {name: len(t) for name, t in times.items()} == {"a": 8, "b": 8, "c": 8}


def test_the_ci_budget_caps_queries_and_seconds():
    capped = benchmark(lambda x: None, X, min_queries=10_000, min_seconds=60, batch_sizes=(), rss=False, budget="ci")
    assert capped["settings"]["capped_by_budget"] and capped["settings"]["min_queries"] == 32
    assert capped["settings"]["min_seconds"] <= 0.05 and capped["queries"] >= 32
    book = benchmark(lambda x: None, X, min_queries=16, min_seconds=0, batch_sizes=(), rss=False, budget="book")
    assert not book["settings"]["capped_by_budget"] and book["queries"] == 16


def test_median_agrees_with_torch_utils_benchmark_timer():
    """The same callable timed by torch's own benchmark tool: medians within 2x either way (a sanity
    check of the method, not a speed target). Timer times single calls here (timeit(1), repeated), as
    ours does: blocked_autorange's medians are of block *means*, which a loaded machine inflates."""
    model = build_model("smallcnn").eval()
    x = torch.randn(1, 1, 28, 28)

    def infer(batch):
        with torch.inference_mode():
            return model(batch)

    ours = benchmark(infer, x, min_queries=200, min_seconds=0.3, batch_sizes=(), rss=False, budget="book")["p50_ms"]
    timer = Timer("infer(x)", globals={"infer": infer, "x": x}, num_threads=1)
    theirs = 1e3 * float(np.median([timer.timeit(1).median for _ in range(200)]))
    assert 0.5 <= ours / theirs <= 2.0, (ours, theirs)


def test_three_backends_interleaved_in_one_run(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).train()
    from qsal_lab.quant.int8 import quantize_onnx
    fp32 = tiny_onnx(tmp_path / "fp32.onnx")
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", [(X, None)], num_batches=1)
    backends = {EAGER: model, ORT_FP32: fp32, ORT_INT8: int8}
    threads = torch.get_num_threads()
    result = compare_backends(backends, X, min_queries=16, min_seconds=0, rounds=2, batch_sizes=(4, 8), rss=False,
                              throughput_seconds=0.01, budget="book")
    assert model.training and torch.get_num_threads() == threads  # both restored
    assert result["order"] == [EAGER, ORT_FP32, ORT_INT8, ORT_FP32, ORT_INT8, EAGER]
    rows = {r["backend"]: r for r in result["rows"]}
    assert [rows[b]["kind"] for b in backends] == ["torch", "onnxruntime", "onnxruntime"]
    for row in rows.values():
        assert row["queries"] == 16 and row["threads"] == 1 and row["file_bytes"] > 0
        assert [t["batch"] for t in row["throughput"]] == [4, 8]
        assert all(t["images_per_s"] > 0 and t["batches"] >= 4 for t in row["throughput"])
    table = format_table(result["rows"], ratios_to=EAGER)
    lines = table.splitlines()
    assert len(lines) == 2 + 3 and lines[0].count("|") == lines[2].count("|")
    assert "img/s @ batch 4" in lines[0] and "img/s @ batch 8" in lines[0] and "p50 speed-up" in lines[0]
    assert lines[2].startswith(f"| {EAGER} | 1 |") and "| 1.00× |" in lines[2]


@pytest.mark.slow
def test_prepare_backends_exports_and_quantizes(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3)).eval()
    calib = [(torch.randn(8, 1, 8, 8), torch.zeros(8)) for _ in range(2)]
    backends = prepare_backends(model, tmp_path, calib, num_batches=2, stem="tiny")
    assert list(backends) == [EAGER, ORT_FP32, ORT_INT8] and backends[EAGER] is model
    assert backends[ORT_FP32] == tmp_path / "tiny_fp32.onnx" and backends[ORT_INT8] == tmp_path / "tiny_int8.onnx"
    row = benchmark(backends[ORT_INT8], X, min_queries=8, min_seconds=0, batch_sizes=(), rss=False, budget="book")
    assert row["kind"] == "onnxruntime" and row["queries"] == 8


def test_peak_rss_is_measured_in_a_fresh_process(tmp_path):
    onnx_rss = peak_rss(tiny_onnx(tmp_path / "tiny.onnx"), X[:1], queries=3)
    assert 0 < onnx_rss["rss_after_import_mb"] <= onnx_rss["peak_rss_mb"]
    # this test process holds torch; a fresh process that imports only onnxruntime is far smaller
    from qsal_lab.edge.runner import peak_rss_mb
    assert onnx_rss["peak_rss_mb"] < peak_rss_mb()

    class Local(nn.Module):  # cannot be unpickled in another process
        def forward(self, x):
            return x

    assert peak_rss(Local(), X[:1])["peak_rss_mb"] is None and "rss_note" in peak_rss(Local(), X[:1])
    assert peak_rss(print, X[:1])["peak_rss_mb"] is None


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        benchmark(print, X, threads=0)
    with pytest.raises(ValueError, match="batch_sizes must be positive integers"):
        benchmark(print, X, batch_sizes=(0,))
    with pytest.raises(FileNotFoundError, match="no ONNX model at"):
        benchmark(tmp_path / "missing.onnx", X)
    with pytest.raises(TypeError, match="benchmark a torch module, an .onnx path"):
        benchmark(42, X)
    with pytest.raises(ValueError, match="example must be a float batch"):
        benchmark(print, np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(ValueError, match="nothing to time"):
        interleave({}, 1, 0)


@pytest.mark.slow
def test_peak_rss_of_a_torch_module_in_a_fresh_process():
    row = benchmark(build_model("smallcnn"), torch.randn(1, 1, 28, 28), min_queries=4, min_seconds=0,
                    batch_sizes=(), rss=True, budget="ci")
    assert 0 < row["rss_after_import_mb"] <= row["peak_rss_mb"] and row["rss_queries"] == 5  # ci caps 50 to 5
