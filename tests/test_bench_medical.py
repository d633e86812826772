"""bench/medical.py at the ci budget: it runs end to end and reports every row and every target.

Only the report's completeness is tested, not whether targets are met: ci numbers come from tiny subsets."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "medical.py"
ROWS = ["FP32", "PTQ int8", "PACT W8A8", "PACT W4A4", "SGT + PACT W4A4"]
TARGETS = {"float_auc": 0.97, "float_accuracy": 0.89, "ptq_int8_auc_drop": 0.003, "pact_w4a4_auc_drop": 0.01,
           "sgt_pact_w4a4_auc_drop": 0.015, "int8_size_ratio": 0.26, "int8_latency_ratio": 0.4}


@pytest.mark.slow
def test_medical_benchmark_reports_every_row_and_target_at_ci_budget(tmp_path, data_root):
    if not (data_root / "medmnist" / "pneumoniamnist.npz").exists():
        pytest.skip("no PneumoniaMNIST")
    results = tmp_path / "results"
    run = subprocess.run([sys.executable, str(BENCH), "--budget", "ci", "--results", str(results), "--work-dir",
                          str(tmp_path / "work"), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = json.loads((results / "medical.json").read_text())
    assert report["budget"] == "ci" and report["floor"]["auc"] == 0.944
    rows = report["studies"][0]["rows"]
    assert [r["model"] for r in rows] == ROWS
    for r in rows:
        assert 0 <= r["auc"] <= 1 and r["auc_ci"][0] <= r["auc"] <= r["auc_ci"][1] and r["latency_ms"] > 0, r["model"]
        assert "test_probs" not in r and r["clinical"]["auc"] == r["auc"]
    targets = {t["key"]: t for t in report["targets"]}
    assert {k: t["target"] for k, t in targets.items()} == TARGETS
    for t in targets.values():
        assert isinstance(t["value"], float) and t["met"] == (t["value"] >= t["target"] if t["op"] == "≥"
                                                              else t["value"] <= t["target"])
        assert t["met"] or t["why"], t["key"]  # a miss says why
    md = (results / "medical.md").read_text()
    assert "ci budget" in md and "MedMNIST v2, ResNet-18 (28)" in md
    for t in targets.values():
        line = next(l for l in md.splitlines() if l.startswith(f"| {t['figure']} |"))
        assert "| met |" in line or "| **MISSED** |" in line, line
    for method in ROWS:
        assert f"| {method} |" in md
    assert all(Path(f).exists() for f in report["figures"])


def test_medical_benchmark_rejects_a_missing_checkpoint(tmp_path):
    run = subprocess.run([sys.executable, str(BENCH), "--float-checkpoint", str(tmp_path / "nope.pt")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "does not exist; omit it to use the default" in run.stderr.strip().splitlines()[-1]
