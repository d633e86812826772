"""Benchmark: ResNet-20 on CIFAR-10 (or, offline, the labelled stand-in) in one run, every row against its target.

    python bench/cifar_resnet20.py                  # book: the shipped checkpoints where they fit the data (minutes)
    python bench/cifar_resnet20.py --train-qat      # book, with the PACT rows fine-tuned in this run
    python bench/cifar_resnet20.py --budget ci      # a fast smoke run: the numbers mean nothing
    QSAL_STANDIN=1 python bench/cifar_resnet20.py   # offline: the synthetic stand-in, labelled on every line

The rows come from qsal_lab.experiments.cifar.run_study, the code chapter 8 runs: FP32, PTQ int8 in ONNX Runtime,
fake-quant PTQ W8A8/W4A4/W2A2, PACT W4A4 and W2A2, SGT + PACT W4A4, all scored on the same test images. Latency is
batch 1 on one thread, eager PyTorch and ONNX Runtime fp32/int8 measured interleaved in this run. Every target is
reported as met or MISSED in bench/results/cifar_resnet20.json and .md, which name the data they ran on; nothing is
asserted (latency depends on the machine and its load, which is recorded).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

# (key, what is measured, target, comparison)
TARGETS = [
    ("pact_w4a4_drop", "PACT W4A4 drop vs float (pt)", 1.0, "≤"),
    ("pact_w2a2_drop", "PACT W2A2 drop vs float (pt)", 3.0, "≤"),
    ("pact_vs_ptq_w2a2", "PACT W2A2 ahead of PTQ W2A2 (pt)", 10.0, ">"),
    ("int8_vs_fp32_speedup", "ORT int8 vs ORT fp32 speed-up (batch 1, 1 thread)", 2.0, "≥"),
    ("int8_vs_eager_speedup", "ORT int8 vs eager PyTorch speed-up (batch 1, 1 thread)", 8.0, "≥"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=("ci", "book", "full"), default=None,
                   help="compute budget (default: $QSAL_BUDGET, else book)")
    p.add_argument("--float-checkpoint", type=Path, default=None,
                   help="use this float checkpoint (default: the shipped one for the stand-in, else trained in the run)")
    p.add_argument("--train-qat", action="store_true",
                   help="fine-tune the PACT rows in the run even where shipped checkpoints fit")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results",
                   help="folder for cifar_resnet20.json and .md (default: bench/results)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="folder for checkpoints and ONNX files (default: runs/bench_cifar_<budget>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.float_checkpoint is not None and not args.float_checkpoint.exists():
        p.error(f"--float-checkpoint {args.float_checkpoint} does not exist; omit it to use the default")
    return args


def values_of(rows: list[dict]) -> dict:
    by = {r["method"]: r for r in rows}
    ort = by.get("PTQ int8 (ORT)", {})

    def drop(method):
        return by[method]["drop_pt"] if method in by else None
    ahead = by["PTQ W2A2"]["drop_pt"] - by["PACT W2A2"]["drop_pt"] if {"PTQ W2A2", "PACT W2A2"} <= set(by) else None
    return {"pact_w4a4_drop": drop("PACT W4A4"), "pact_w2a2_drop": drop("PACT W2A2"), "pact_vs_ptq_w2a2": ahead,
            "int8_vs_fp32_speedup": ort.get("speedup_vs_fp32"), "int8_vs_eager_speedup": ort.get("speedup_vs_eager")}


def why_missed(key: str, rows: list[dict]) -> str:
    by = {r["method"]: r for r in rows}
    fp = by.get("FP32", {})
    if key in ("pact_w4a4_drop", "pact_w2a2_drop", "pact_vs_ptq_w2a2"):
        method = "PACT W4A4" if key == "pact_w4a4_drop" else "PACT W2A2"
        r = by.get(method, {})
        text = (f"{method} {r.get('accuracy', float('nan')):.2%} vs float {fp.get('accuracy', float('nan')):.2%} "
                f"({r.get('source', '?')}; {r.get('step', {}).get('epochs', '?')} epochs on "
                f"{r.get('step', {}).get('train_subset') or 'all'} training images)")
        if key == "pact_vs_ptq_w2a2":
            text += f"; PTQ W2A2 {by.get('PTQ W2A2', {}).get('accuracy', float('nan')):.2%}"
        return text
    ort = by.get("PTQ int8 (ORT)", {})
    return (f"eager {ort.get('eager_latency_ms', float('nan')):.3f} ms, ORT fp32 {ort.get('fp32_latency_ms', float('nan')):.3f} ms, "
            f"ORT int8 {ort.get('latency_ms', float('nan')):.3f} ms; ONNX Runtime runs "
            f"{ort.get('ort_ops', {}).get('integer', '?')} on integers and {ort.get('ort_ops', {}).get('float32', '?')} "
            f"in float32; machine load recorded above")


def check_targets(values: dict, rows: list[dict]) -> list[dict]:
    from qsal_lab.experiments.report import meets

    out = []
    for key, what, target, op in TARGETS:
        value = values.get(key)
        met = None if value is None else meets(value, target, op)
        out.append({"key": key, "figure": what, "value": value, "target": target, "op": op, "met": met,
                    "why": "" if met else (why_missed(key, rows) if value is not None else "not measured")})
    return out


def markdown(result: dict) -> str:
    from qsal_lab.experiments.cifar import banner, format_table
    from qsal_lab.data import dataset_info

    m, s = result["machine"], result["study"]
    info = dataset_info(s["key"])
    lines = [f"# ResNet-20 on {s['dataset']}: benchmark ({result['budget']} budget)", ""]
    if s["standin"]:
        lines += [banner(info), ""]
    lines += [f"Run {result['finished']}, {result['seconds_total']:.0f} s in all on {m['cpus']} CPU(s), torch "
              f"{m['torch']}; load average (1 min) {m['loadavg_1min_start']:.2f} at the start, {m['loadavg_1min_end']:.2f} at "
              f"the end (the machine may be shared: latencies are indicative, ratios measured interleaved).", ""]
    if result["budget"] == "ci":
        lines += ["**ci budget: a smoke run on tiny subsets; these numbers are not meaningful.**", ""]
    sel = s["selection"]
    lines += [f"Data: **{s['dataset']}** ({s['test_n']} test images). Float model: {s['float_source']}. PACT's "
              f"optimizer and alpha learning-rate scale: {sel['chosen']} ({sel['criterion']}; {sel['source']}).", "",
              "## Targets", "", "| figure | value | target | status | why (if missed) |", "|---|---|---|---|---|"]
    for t in result["targets"]:
        value = "—" if t["value"] is None else f"{t['value']:.2f}"
        status = "not measured" if t["met"] is None else ("met" if t["met"] else "**MISSED**")
        lines.append(f"| {t['figure']} | {value} | {t['op']} {t['target']} | {status} | {t['why']} |")
    lines += ["", f"## Rows ({s['dataset']})", "", format_table(s["rows"]), "",
              "Sources: " + "; ".join(f"{r['method']}: {r['source']}" for r in s["rows"] if r.get("source"))]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    from qsal_lab.budget import current_budget
    from qsal_lab.experiments.report import load_average, write_results
    from qsal_lab.experiments.cifar import run_study

    budget = current_budget(args.budget)
    work = args.work_dir or ROOT / "runs" / f"bench_cifar_{budget}"
    args.results.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    result = {"benchmark": "cifar_resnet20", "budget": budget, "started": started.isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                          "torch": torch.__version__, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                          "QSAL_STANDIN": os.environ.get("QSAL_STANDIN"), **load_average("start")}}
    study = run_study(work, budget=budget, float_checkpoint=args.float_checkpoint, use_shipped=not args.train_qat,
                      progress=not args.quiet)
    result["data"] = {"dataset": study["dataset"], "key": study["key"], "standin": study["standin"],
                      "version": study["version"]}
    result["targets"] = check_targets(values_of(study["rows"]), study["rows"])
    result["study"] = study
    result["machine"].update(load_average("end"))
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["seconds_total"] = time.perf_counter() - t0
    md = markdown(result)
    print(md)
    write_results(args.results, "cifar_resnet20", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
