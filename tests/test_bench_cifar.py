"""bench/cifar_resnet20.py at the ci budget on a small stand-in: it runs end to end, names the data it ran on and
reports every row and every target. Only the report's completeness is tested, not whether targets are met."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "cifar_resnet20.py"
ROWS = ["FP32", "PTQ int8 (ORT)", "PTQ W8A8", "PTQ W4A4", "PTQ W2A2", "PACT W4A4", "PACT W2A2", "SGT + PACT W4A4"]
TARGETS = {"pact_w4a4_drop": 1.0, "pact_w2a2_drop": 3.0, "pact_vs_ptq_w2a2": 10.0, "int8_vs_fp32_speedup": 2.0,
           "int8_vs_eager_speedup": 8.0}


@pytest.mark.slow
def test_cifar_benchmark_reports_every_row_and_target_on_the_standin_at_ci(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "QSAL_STANDIN": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(BENCH), "--budget", "ci", "--results", str(results), "--work-dir",
                          str(tmp_path / "work"), "--quiet", "--train-qat"], cwd=ROOT, capture_output=True, text=True,
                         timeout=1200, env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    report = json.loads((results / "cifar_resnet20.json").read_text())
    assert report["budget"] == "ci" and report["data"]["standin"] and report["data"]["key"] == "cifar10-standin-v3"
    rows = report["study"]["rows"]
    assert [r["model"] for r in rows] == ROWS and all(r["data"] == report["data"]["dataset"] for r in rows)
    targets = {t["key"]: t for t in report["targets"]}
    assert {k: t["target"] for k, t in targets.items()} == TARGETS
    for t in targets.values():
        assert isinstance(t["value"], float) and t["met"] in (True, False) and (t["met"] or t["why"]), t["key"]
    md = (results / "cifar_resnet20.md").read_text()
    assert md.startswith("# ResNet-20 on CIFAR-10 stand-in (synthetic) v3") and "not CIFAR-10" in md
    assert "ci budget" in md
    for t in targets.values():
        line = next(l for l in md.splitlines() if l.startswith(f"| {t['figure']} |"))
        assert "| met |" in line or "| **MISSED** |" in line, line
    for method in ROWS:
        assert f"| {method} |" in md


def test_cifar_benchmark_rejects_a_missing_checkpoint(tmp_path):
    run = subprocess.run([sys.executable, str(BENCH), "--float-checkpoint", str(tmp_path / "nope.pt")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "does not exist; omit it to use the default" in run.stderr.strip().splitlines()[-1]
