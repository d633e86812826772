"""Benchmark: the MedMNIST study on PneumoniaMNIST in one run, every row against its target.

    python bench/medical.py                   # book budget: the shipped float model, one seed (minutes on 2 cores)
    python bench/medical.py --budget full     # float models trained in the run, 3 seeds: mean and std
    python bench/medical.py --budget ci       # a fast smoke run: the numbers mean nothing

The rows come from qsal_lab.experiments.medical.run_study, the code chapter 9 runs: the float ResNet-18
(28x28 stem; imbalance handling chosen on the validation split), PTQ int8 in ONNX Runtime, PACT W8A8 and
W4A4, SGT + PACT W4A4. Each is scored on the test split at a decision threshold chosen on the validation
split (Youden's J), with bootstrap 95 % intervals; file sizes are the ONNX files and latency is ONNX
Runtime at batch 1 on 1 thread, all measured in this run. MedMNIST v2's ResNet-18 (28) row, AUC 0.944 and
ACC 0.854 (Yang et al. 2023, Table 3), is the floor, not the goal. Every target is reported as met or
MISSED, with the measured facts that explain a miss, in bench/results/medical.json and .md; nothing is
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
FLAG = "pneumoniamnist"
FLOOR = {"auc": 0.944, "acc": 0.854, "source": "MedMNIST v2, ResNet-18 (28), PneumoniaMNIST test (Yang et al. 2023)"}

# (key, what is measured, target, comparison)
TARGETS = [
    ("float_auc", "float AUC (test)", 0.97, "≥"),
    ("float_accuracy", "float accuracy at the validation-chosen threshold (test)", 0.89, "≥"),
    ("ptq_int8_auc_drop", "PTQ int8 (ORT) AUC drop vs float", 0.003, "≤"),
    ("pact_w4a4_auc_drop", "PACT W4A4 AUC drop vs float", 0.01, "≤"),
    ("sgt_pact_w4a4_auc_drop", "SGT + PACT W4A4 AUC drop vs float", 0.015, "≤"),
    ("int8_size_ratio", "int8 ONNX file / fp32 ONNX file", 0.26, "≤"),
    ("int8_latency_ratio", "int8 / fp32 latency in ONNX Runtime (batch 1, 1 thread)", 0.4, "≤"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=("ci", "book", "full"), default=None,
                   help="compute budget (default: $QSAL_BUDGET, else book)")
    p.add_argument("--float-checkpoint", type=Path, default=None,
                   help="use this float checkpoint (default at book: the shipped pretrained model; at ci and full the "
                        "float model is trained in the run)")
    p.add_argument("--train-float", action="store_true", help="train the float model in the run at the book budget too")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the budget's; full: 0 1 2)")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results",
                   help="folder for medical.json, medical.md and the figures (default: bench/results)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="folder for checkpoints and ONNX files (default: runs/bench_medical_<budget>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.float_checkpoint is not None and not args.float_checkpoint.exists():
        p.error(f"--float-checkpoint {args.float_checkpoint} does not exist; omit it to use the default")
    return args


def float_source(args, budget):
    """The float checkpoint to start from, or None to train it (with the imbalance choice) in the run."""
    if args.float_checkpoint is not None:
        return args.float_checkpoint
    if budget == "book" and not args.train_float:
        from qsal_lab.experiments.medical import PRETRAINED
        from qsal_lab.pretrained import pretrained_dir
        return pretrained_dir(PRETRAINED) / "checkpoint.pt"
    return None


def values_of(rows: list[dict], mean: bool) -> dict:
    """The figures the targets are about, from one seed's rows or the seeds' means."""
    suffix = "_mean" if mean else ""
    by = {r["method"]: r for r in rows}

    def get(method, key):
        r = by.get(method, {})
        return r.get(f"{key}{suffix}")

    fp, int8 = by.get("FP32", {}), by.get("PTQ int8", {})
    ratio = lambda key: (int8.get(f"{key}{suffix}") / fp.get(f"{key}{suffix}")  # noqa: E731
                         if int8.get(f"{key}{suffix}") and fp.get(f"{key}{suffix}") else None)
    return {"float_auc": get("FP32", "auc"), "float_accuracy": get("FP32", "accuracy"),
            "ptq_int8_auc_drop": get("PTQ int8", "auc_drop"), "pact_w4a4_auc_drop": get("PACT W4A4", "auc_drop"),
            "sgt_pact_w4a4_auc_drop": get("SGT + PACT W4A4", "auc_drop"),
            "int8_size_ratio": ratio("file_bytes"), "int8_latency_ratio": ratio("latency_ms")}


def why_missed(key: str, study: dict) -> str:
    """The measured facts behind a missed target (from seed 0's study)."""
    by = {r["method"]: r for r in study["rows"]}
    fp = by.get("FP32", {})
    if key in ("float_auc", "float_accuracy"):
        report = fp.get("report", {})
        val = report.get("val", {})
        share = lambda cm: sum(cm[0]) / sum(map(sum, cm)) if cm else float("nan")  # noqa: E731  negatives' share
        text = (f"at the threshold {fp.get('threshold', float('nan')):.3f} chosen on validation (sensitivity "
                f"{val.get('sensitivity', float('nan')):.3f}, specificity {val.get('specificity', float('nan')):.3f} "
                f"there), test sensitivity is {fp.get('sensitivity', float('nan')):.3f} and specificity "
                f"{fp.get('specificity', float('nan')):.3f}; normal images are {share(val.get('confusion')):.1%} of "
                f"validation and {share(report.get('confusion')):.1%} of test")
        if fp.get("specificity", 1) < val.get("specificity", 0) - 0.05:
            text += (" (MedMNIST carves PneumoniaMNIST's validation split out of the source's training set and takes "
                     "the source's test set as test: the operating point does not carry over unchanged)")
        return text
    if key.endswith("auc_drop"):
        method = {"ptq_int8_auc_drop": "PTQ int8", "pact_w4a4_auc_drop": "PACT W4A4",
                  "sgt_pact_w4a4_auc_drop": "SGT + PACT W4A4"}[key]
        r = by.get(method, {})
        if "skipped" in r:
            return f"not run: {r['skipped']}"
        extra = f"; {r['epochs']} fine-tuning epoch(s) on {r.get('train_images') or 'all'} training images" \
            if "epochs" in r else ""
        return f"AUC {r.get('auc', float('nan')):.4f} vs float {fp.get('auc', float('nan')):.4f}{extra}"
    if key == "int8_latency_ratio":
        int8 = by.get("PTQ int8", {})
        return (f"fp32 {fp.get('latency_ms', float('nan')):.2f} ms, int8 {int8.get('latency_ms', float('nan')):.2f} ms; "
                f"ONNX Runtime runs {int8.get('ort_ops', {}).get('integer', '?')} on integers and "
                f"{int8.get('ort_ops', {}).get('float32', '?')} in float32")
    if key == "int8_size_ratio":
        return "weights are int8, but scales, zero points and biases (int32) stay"
    return ""


def check_targets(values: dict, study: dict) -> list[dict]:
    from qsal_lab.experiments.report import meets

    out = []
    for key, what, target, op in TARGETS:
        value = values.get(key)
        met = None if value is None else meets(value, target, op)
        out.append({"key": key, "figure": what, "value": value, "target": target, "op": op, "met": met,
                    "why": "" if met else (why_missed(key, study) if value is not None else "not measured")})
    return out


def markdown(result: dict) -> str:
    from qsal_lab.experiments.medical import format_aggregate, format_table

    m = result["machine"]
    lines = [f"# MedMNIST study on PneumoniaMNIST: benchmark ({result['budget']} budget)", "",
             f"Run {result['finished']}, {result['seconds_total']:.0f} s in all on {m['cpus']} CPU(s), torch "
             f"{m['torch']}; load average (1 min) {m['loadavg_1min_start']:.2f} at the start, {m['loadavg_1min_end']:.2f} at "
             f"the end (the machine may be shared: latencies are indicative, ratios measured side by side).", ""]
    if result["budget"] == "ci":
        lines += ["**ci budget: a smoke run on tiny subsets; these numbers are not meaningful.**", ""]
    s0 = result["studies"][0]
    sel = s0["selection"]
    lines += [f"Float model: {result['float_source']}; class imbalance handled by **{sel['chosen']}** "
              f"({sel['criterion']}). Thresholds: {s0['rows'][0].get('threshold_method', '?')} on the validation split "
              f"(n = {s0['rows'][0].get('val_n', '?')}); metrics on the test split (n = {s0['rows'][0].get('test_n', '?')}), "
              f"95 % stratified bootstrap intervals ({s0['recipe']['n_boot']} resamples). Seeds: {result['seeds']}.", "",
              f"Floor, not goal: {FLOOR['source']}: AUC {FLOOR['auc']}, ACC {FLOOR['acc']}.", "",
              "## Targets", "", "| figure | value | target | status | why (if missed) |", "|---|---|---|---|---|"]
    for t in result["targets"]:
        value = "—" if t["value"] is None else f"{t['value']:.4f}"
        status = "not measured" if t["met"] is None else ("met" if t["met"] else "**MISSED**")
        lines.append(f"| {t['figure']} | {value} | {t['op']} {t['target']} | {status} | {t['why']} |")
    if len(result["studies"]) > 1:
        lines += ["", f"## Mean ± standard deviation over {len(result['studies'])} seeds", "",
                  format_aggregate(result["aggregate"])]
    for s in result["studies"]:
        lines += ["", f"## Seed {s['seed']}", "", format_table(s["rows"])]
    lines += ["", "Figures: " + ", ".join(f"`{Path(f).name}`" for f in result["figures"])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    from qsal_lab.budget import current_budget
    from qsal_lab.experiments.report import load_average, write_results
    from qsal_lab.experiments.medical import (aggregate, medical_recipe, plot_pareto, plot_reliability_diagrams,
                                              public_rows, run_study)

    budget = current_budget(args.budget)
    seeds = tuple(args.seeds) if args.seeds else medical_recipe(budget).seeds
    work = args.work_dir or ROOT / "runs" / f"bench_medical_{budget}"
    args.results.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    result = {"benchmark": "medical", "budget": budget, "flag": FLAG, "seeds": list(seeds), "floor": FLOOR,
              "started": started.isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                          "torch": torch.__version__, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                          **load_average("start")}}
    source = float_source(args, budget)
    result["float_source"] = f"loaded from {source}" if source else f"trained in this run ({budget} recipe, both imbalance candidates)"
    studies = []
    for seed in seeds:
        print(f"[bench] {FLAG}, {budget} budget, seed {seed}", flush=True)
        studies.append(run_study(FLAG, out=work, budget=budget, float_checkpoint=source, seed=seed,
                                 progress=not args.quiet))
    agg = aggregate(studies)
    mean = len(studies) > 1
    result["targets"] = check_targets(values_of(agg if mean else studies[0]["rows"], mean), studies[0])
    result["aggregate"] = agg
    figures = []
    for fig, name in ((plot_pareto(studies[0]["rows"], title=f"PneumoniaMNIST test, seed {seeds[0]} ({budget})"),
                       "medical_pareto"), (plot_reliability_diagrams(studies[0]["rows"]), "medical_reliability")):
        path = args.results / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        figures.append(str(path))
    result["figures"] = figures
    result["studies"] = [{**{k: v for k, v in s.items() if k != "rows"}, "rows": public_rows(s["rows"])}
                         for s in studies]
    result["machine"].update(load_average("end"))
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["seconds_total"] = time.perf_counter() - t0
    md = markdown({**result, "studies": [{**s, "rows": s["rows"]} for s in studies]})
    from qsal_lab.experiments.medical import _jsonable
    print(md)
    write_results(args.results, "medical", result, md, default=_jsonable)
    return 0


if __name__ == "__main__":
    sys.exit(main())
