"""qsal_lab.experiments.benchmark: targets met or missed, the machine record and one runner end to end."""
import argparse
import json

import pytest

from qsal_lab.experiments.benchmark import Benchmark, Target, existing_path, machine, positive_int


def test_targets_say_their_value_goal_and_status():
    drop = Target("d", "PACT W4A4 drop", "≤", 0.3, reference="FP32")
    assert drop.show(0.061) == "0.06 pt below FP32" and drop.goal() == "at most 0.3 pt below FP32"
    ratio = Target("r", "int8 / fp32", "≤", 0.27, "×")
    assert ratio.show(0.2581) == "0.258×" and ratio.goal() == "≤ 0.27×" and ratio.show(None) == "—"
    assert ratio.check(0.2)["met"] is True and ratio.check(0.3)["met"] is False
    assert ratio.check(None) == {**ratio.check(None), "met": None, "why": "not measured", "value": None}
    assert Target("a", "area", "<", 0.0).check(0.0)["met"] is False


def test_argument_types_and_machine(tmp_path):
    assert positive_int("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="must be a positive integer, got 0"):
        positive_int("0")
    with pytest.raises(argparse.ArgumentTypeError, match="does not exist; train one"):
        existing_path("train one")(str(tmp_path / "nope"))
    m = machine("start")
    assert m["cpus"] >= 1 and m["cpu"] and "loadavg_1min_start" in m and m["torch_threads"] >= 1


def test_a_benchmark_runs_and_writes_json_and_markdown(tmp_path, capsys):
    targets = (Target("small", "the small figure", "≤", 1.0), Target("big", "the big figure", "≥", 5.0, "×"),
               Target("none", "not measured here", "≤", 1.0))
    bench = Benchmark(str(tmp_path / "bench" / "demo.py"), "Demo.\n\nMore.", targets,
                      run=lambda args: {"seen": args.budget}, values=lambda r: {"small": 0.5, "big": 2.0},
                      report=lambda r: "## Body", title=lambda r: f"Demo on {r['seen']}",
                      why=lambda key, r: f"{key} missed", preface=lambda r: "Made from nothing.")
    assert bench.main(["--budget", "ci", "--results", str(tmp_path / "out"), "--quiet"]) == 0
    result = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert result["benchmark"] == "demo" and result["budget"] == "ci" and "loadavg_1min_end" in result["machine"]
    assert [t["met"] for t in result["targets"]] == [True, False, None]
    assert result["targets"][1]["why"] == "big missed" and result["targets"][2]["why"] == "not measured"
    md = (tmp_path / "out" / "demo.md").read_text()
    assert md.startswith("# Demo on ci (ci budget)") and "ci budget: a smoke run" in md and "Made from nothing." in md
    assert "| the big figure | 2.000× | ≥ 5× | **MISSED** | big missed |" in md and md.rstrip().endswith("## Body")
    assert (tmp_path / "runs" / "bench_demo_ci").is_dir() and "demo.json" in capsys.readouterr().out
