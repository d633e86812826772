"""bench/quant_mnist.py at the ci budget: it runs end to end and reports every figure with its target.

Only the report's completeness is tested, not whether the targets are met: ci numbers come from
tiny subsets and mean nothing (the book-budget run is what `make bench` shows).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "quant_mnist.py"

MODELS = [("FP32", 32), ("PACT W8A8", 8), ("PACT W4A4", 4), ("PACT W3A3", 3), ("PACT W2A2", 2), ("PTQ W4A4", 4)]
ONNX_MODELS = [("FP32 (ORT)", 32), ("PTQ int8 (ORT)", 8), ("PACT W8A8 (ORT)", 8), ("PACT W4A4 (ORT)", 4)]
DROP_IN_WORDS = re.compile(r"^(\d+\.\d\d pt (below|above) FP32|same as FP32)$")
TARGETS = {  # key: (figure, target)
    "ptq_int8_drop_pt": ("PTQ int8 (ORT) accuracy drop vs FP32", 0.3),
    "pact_w4a4_drop_pt": ("PACT W4A4 accuracy drop vs FP32", 0.3),
    "pact_w2a2_drop_pt": ("PACT W2A2 accuracy drop vs FP32", 1.0),
    "int8_onnx_vs_fp32_onnx": ("int8 ONNX file / fp32 ONNX file", 0.27),
    "packed_w4_vs_fp32": ("packed PACT W4A4 file / fp32 state_dict file", 0.14),
    "qat_vs_fp_epoch_time": ("QAT epoch time / FP epoch time", 1.3),
}


@pytest.mark.slow
def test_benchmark_reports_every_model_and_target_at_ci_budget(tmp_path, mnist_root):
    results = tmp_path / "results"
    run = subprocess.run([sys.executable, str(BENCH), "--budget", "ci", "--results", str(results),
                          "--work-dir", str(tmp_path / "work"), "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]

    report = json.loads((results / "quant_mnist.json").read_text())
    assert report["budget"] == "ci"
    rows = {(r["model"], r["w_bits"]): r for r in report["rows"]}
    assert sorted(rows) == sorted(MODELS)
    for key, row in rows.items():
        assert 0.0 <= row["accuracy"] <= 1.0 and row["data"] == "MNIST", key
        assert row["file_bytes"] > 0 and row["size_bytes"] > 0, key
    assert rows[("FP32", 32)]["file_vs_fp32"] == 1.0
    # 4-bit weights are about an eighth of float32 ones, whatever the budget
    assert 0.1 < rows[("PACT W4A4", 4)]["size_vs_fp32"] < rows[("PACT W8A8", 8)]["size_vs_fp32"] < 0.3
    assert all(epoch["alphas"] for epoch in rows[("PACT W2A2", 2)]["history"])
    assert all(0.0 <= rows[(f"PACT W{b}A{b}", b)]["accuracy_before"] <= 1.0 for b in (8, 4, 3, 2))

    deployed = {(r["model"], r["w_bits"]): r for r in report["onnx_rows"]}
    assert list(deployed) == ONNX_MODELS
    for key, row in deployed.items():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["agreement"] <= 1.0, key
        assert row["file_bytes"] > 0 and row["latency_ms"] > 0, key
    for key in ONNX_MODELS[1:]:  # every int8 model runs its convolutions as integer kernels
        assert "QLinearConv x3" in deployed[key]["ort_ops"]["integer"], deployed[key]
    assert deployed[("PACT W4A4 (ORT)", 4)]["ort_ops"]["float32"] == "none"

    targets = {t["key"]: t for t in report["targets"]}
    assert set(targets) == set(TARGETS)
    for key, (figure, target) in TARGETS.items():
        t = targets[key]
        assert t["figure"] == figure and t["target"] == target and isinstance(t["value"], float)
        assert t["met"] == (t["value"] <= target) and t["op"] == "≤"
    timing = report["timing"]
    assert timing["fp_step_s"] > 0 and timing["qat_step_s"] > 0
    assert abs(timing["ratio"] - timing["qat_step_s"] / timing["fp_step_s"]) < 1e-9

    md = (results / "quant_mnist.md").read_text()
    assert "ci budget" in md
    for figure, _ in TARGETS.values():
        line = next((l for l in md.splitlines() if l.startswith(f"| {figure} |")), None)
        assert line is not None, f"no row for {figure!r} in quant_mnist.md"
        assert line.split(" | ")[3] in ("met", "**MISSED**"), line
        if "drop" in figure:  # said in words, with the target: "0.06 pt below FP32 | at most 0.3 pt below FP32"
            value, target = line.split(" | ")[1:3]
            assert DROP_IN_WORDS.match(value), line
            assert re.fullmatch(r"at most \d+(\.\d+)? pt below FP32", target), line
    for model, bits in MODELS + ONNX_MODELS:
        assert f"| {model} | {'32/32' if bits == 32 else f'{bits}/{bits}'} |" in md, (model, bits)
    assert "## In ONNX Runtime" in md


def test_benchmark_rejects_a_missing_checkpoint(tmp_path):
    run = subprocess.run([sys.executable, str(BENCH), "--fp-checkpoint", str(tmp_path / "nope.pt"),
                          "--results", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "does not exist; omit it to train the float model in the run" in run.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args, message", [(["--checkpoint", "resnet99=x"], "takes MODEL=PATH with MODEL one of"),
                                           (["--models", "smallcnn,vgg"], "unknown model(s) vgg; choose from")])
def test_edge_benchmark_rejects_bad_arguments(args, message):
    run = subprocess.run([sys.executable, str(EDGE), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and message in run.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- bench/edge.py

EDGE = ROOT / "bench" / "edge.py"
EDGE_BACKENDS = ["eager PyTorch fp32", "ONNX Runtime fp32", "ONNX Runtime int8"]
EDGE_TARGETS = {"resnet20_int8_vs_fp32": 2.0, "resnet18_int8_vs_fp32": 3.0, "resnet20_int8_vs_eager": 8.0}


@pytest.mark.slow
def test_edge_benchmark_reports_every_model_backend_and_target_at_ci_budget(tmp_path, mnist_root):
    results = tmp_path / "results"
    run = subprocess.run([sys.executable, str(EDGE), "--budget", "ci", "--results", str(results), "--work-dir",
                          str(tmp_path / "work"), "--emulation", str(tmp_path / "no_emulation.json"), "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    report = json.loads((results / "edge.json").read_text())
    assert report["budget"] == "ci" and report["settings"]["capped_by_budget"]
    assert [m["model"] for m in report["models"]] == ["smallcnn", "resnet20", "resnet18"]
    for model in report["models"]:
        assert [r["backend"] for r in model["rows"]] == EDGE_BACKENDS, model["model"]
        for row in model["rows"]:
            assert row["threads"] == 1 and row["batch"] == 1 and row["queries"] >= 32
            assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
            assert row["peak_rss_mb"] > 0 and row["file_bytes"] > 0
            assert row["throughput"][0]["batch"] == 64 and row["throughput"][0]["images_per_s"] > 0
        rows = {r["backend"]: r for r in model["rows"]}
        fp32, int8 = rows["ONNX Runtime fp32"], rows["ONNX Runtime int8"]
        assert model["speedups"]["int8_vs_fp32_p50"] == fp32["p50_ms"] / int8["p50_ms"]
    smallcnn = report["models"][0]
    assert smallcnn["trained"] and all(0.9 < r["accuracy"] <= 1 for r in smallcnn["rows"])  # the shipped checkpoint
    assert (results / "edge_pareto.png").stat().st_size > 0 and report["ort_call_overhead"]["p50_ms"] > 0
    targets = {t["key"]: t for t in report["targets"]}
    assert {k: t["target"] for k, t in targets.items()} == EDGE_TARGETS
    assert all(t["met"] == (t["value"] >= t["target"]) for t in targets.values())
    assert report["emulation"]["status"] == "not run"
    md = (results / "edge.md").read_text()
    assert "ci budget" in md and "Not run:" in md and "SmallCNN (no target)" in md
    for t in targets.values():
        line = next(l for l in md.splitlines() if l.startswith(f"| {t['figure']} |"))
        assert line.split(" | ")[3] in ("met", "**MISSED**"), line


def test_edge_benchmark_reads_the_emulation_results(tmp_path):
    from qsal_lab.experiments import backends as edge

    assert edge.emulation(tmp_path / "missing.json")["status"] == "not run"
    (tmp_path / "broken.json").write_text("{")
    assert edge.emulation(tmp_path / "broken.json")["status"].startswith("unreadable")
    entry = {"device": "Raspberry Pi 4 (BCM2711), emulated", "onnxruntime": "1.0",
             "fp32": {"max_abs_logit_diff": 1e-5, "max_abs_logit": 20.0, "predictions_equal": True},
             "int8": {"max_abs_logit_diff": 0.0, "max_abs_logit": 20.0, "predictions_equal": True}}
    (tmp_path / "emu.json").write_text(json.dumps({"inputs": 64, "cpus": {"cortex-a72": entry}}))
    found = edge.emulation(tmp_path / "emu.json")
    assert found["status"] == "run" and found["cpus"]["cortex-a72"]["fp32"]["max_abs_logit_diff"] == 1e-5


SALIENCY_BENCH = ROOT / "bench" / "saliency_mnist.py"
SALIENCY_MODELS = ["Standard", "PACT W4A4", "PACT W2A2", "SGT", "SGT + PACT W4A4", "SGT + PACT W2A2"]
SALIENCY_TARGETS = {"sgt_drop_pt": 0.5, "sgt_pact_w4a4_drop_pt": 0.5, "sgt_pact_w2a2_drop_pt": 1.5,
                    "fused_step_ratio": 2.1, "sgt_minus_standard_area_saliency": 0.0,
                    "sgt_minus_standard_area_ig": 0.0}


@pytest.mark.slow
def test_saliency_benchmark_reports_every_model_and_target_at_ci_budget(tmp_path, mnist_root):
    results = tmp_path / "results"
    run = subprocess.run([sys.executable, str(SALIENCY_BENCH), "--budget", "ci", "--results", str(results), "--quiet"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    report = json.loads((results / "saliency_mnist.json").read_text())
    assert report["budget"] == "ci"
    assert sorted({r["model"] for r in report["rows"]}) == sorted(SALIENCY_MODELS)
    assert {(r["model"], r["method"]) for r in report["rows"]} == {(m, k) for m in SALIENCY_MODELS
                                                                   for k in ("saliency", "ig")}
    for r in report["rows"]:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["area"] <= 1 and 0 <= r["gini"] <= 1
        assert (r["spearman"] is None) == (r["w_bits"] == 32)
    targets = {t["key"]: t for t in report["targets"]}
    assert {k: t["target"] for k, t in targets.items()} == SALIENCY_TARGETS
    for t in targets.values():
        assert t["met"] == (t["value"] < t["target"] if t["op"] == "<" else t["value"] <= t["target"])
        assert t["met"] or t["why"]
    assert targets["sgt_minus_standard_area_ig"]["op"] == "<"
    timing = report["timing"]
    assert abs(timing["fused_ratio"] - timing["fused_s"] / timing["standard_s"]) < 1e-9
    assert report["machine"]["loadavg_1min_start"] is not None and timing["loadavg_1min_before"] is not None
    md = (results / "saliency_mnist.md").read_text()
    assert "ci budget" in md and "load average" in md
    for figure in (t["figure"] for t in report["targets"]):
        line = next((l for l in md.splitlines() if l.startswith(f"| {figure} |")), None)
        assert line is not None and line.split(" | ")[3] in ("met", "**MISSED**"), figure
