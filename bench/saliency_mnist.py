"""Benchmark: saliency of standard, SGT, PACT and SGT + PACT SmallCNNs on MNIST, measured in one run.

    python bench/saliency_mnist.py                 # budget from QSAL_BUDGET, default book (minutes on 2 cores)
    python bench/saliency_mnist.py --budget ci     # a fast smoke run: the numbers mean nothing

One run, one budget, the shipped models (qsal_lab/pretrained: each folder has the command that trained it):
  1. the cost of SGT: a standard, a naive SGT and a fused SGT training step on the same MNIST batches of 128,
     interleaved in rotating order (qsal_lab.saliency.train_step_seconds), timed in this process's CPU time
     (steadier than the wall clock on a shared machine with one torch thread);
  2. Standard, SGT, PACT W4A4 and W2A2, SGT + PACT W4A4 and W2A2 through qsal_lab.experiments.saliency_sweep
     (the code chapter 7 runs): test accuracy, faithfulness area of gradient saliency and IG maps (0-10 % of
     the pixels removed in 2 % steps; the 0-90 % grid too) next to random removal, Gini index, and agreement
     with the maps of the model's own float model (Spearman, top-10 % IoU, SSIM).
Every target is reported as met or MISSED in bench/results/saliency_mnist.json and .md, with the machine
load recorded next to the timings. Nothing is asserted.
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
BITS = (4, 2)
METHODS = ("saliency", "ig")

# (key, what is measured, target, unit); every target is "value <= target"
TARGETS = [
    ("sgt_drop_pt", "SGT accuracy drop vs Standard", 0.5, "pt"),
    ("sgt_pact_w4a4_drop_pt", "SGT + PACT W4A4 accuracy drop vs SGT float", 0.5, "pt"),
    ("sgt_pact_w2a2_drop_pt", "SGT + PACT W2A2 accuracy drop vs SGT float", 1.5, "pt"),
    ("fused_step_ratio", "fused SGT step / standard step (CPU time)", 2.1, "×"),
    ("sgt_minus_standard_area_saliency", "SGT area − Standard area, saliency (0-10 %)", 0.0, "area"),
    ("sgt_minus_standard_area_ig", "SGT area − Standard area, IG (0-10 %)", 0.0, "area"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=("ci", "book", "full"), default=None,
                   help="compute budget (default: $QSAL_BUDGET, else book)")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results",
                   help="folder for saliency_mnist.json and saliency_mnist.md (default: bench/results)")
    p.add_argument("--images", type=int, default=None, help="test digits for the maps (default: by budget)")
    p.add_argument("--timing-batches", type=int, default=None, help="batches per timed block (default: by budget)")
    p.add_argument("--timing-rounds", type=int, default=None, help="timed blocks per step variant (default: by budget)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    for name in ("images", "timing_batches", "timing_rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    return args


def load() -> dict:
    la = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {"loadavg_1min": la[0], "loadavg_5min": la[1]}


def time_steps(model, batches: int, rounds: int, budget: str) -> dict:
    from qsal_lab.budget import recipe
    from qsal_lab.data import load_dataset, make_loader
    from qsal_lab.saliency import SGTConfig, train_step_seconds

    batch_size = recipe("smallcnn", budget).batch_size
    ds = load_dataset("mnist", "train", subset=batches * batch_size, seed=1)
    data = list(make_loader(ds, batch_size=batch_size, train=True, seed=1))
    before = load()
    t = train_step_seconds(model, SGTConfig(), data, rounds=rounds, clock=time.process_time)
    steps = -(-60000 // batch_size)
    return {**{k: v for k, v in t.items() if k != "rounds"}, "rounds_s": t["rounds"], "batches": len(data),
            "rounds": rounds, "batch_size": batch_size, "clock": "time.process_time (CPU time of this process)",
            "threads": torch.get_num_threads(), "load_before": before, "load_after": load(),
            **{f"{k}_epoch_s_estimate": t[f"{k}_s"] * steps for k in ("standard", "naive", "fused")}}


def values_for_targets(rows, timing) -> dict:
    from qsal_lab.experiments.saliency_sweep import find_row

    std, sgt = find_row(rows, "Standard"), find_row(rows, "SGT")
    return {"sgt_drop_pt": 100 * (std["accuracy"] - sgt["accuracy"]),
            "sgt_pact_w4a4_drop_pt": find_row(rows, "SGT + PACT W4A4")["drop_pt"],
            "sgt_pact_w2a2_drop_pt": find_row(rows, "SGT + PACT W2A2")["drop_pt"],
            "fused_step_ratio": timing["fused_ratio"],
            "sgt_minus_standard_area_saliency": sgt["area"] - std["area"],
            "sgt_minus_standard_area_ig": find_row(rows, "SGT", "ig")["area"] - find_row(rows, "Standard", "ig")["area"]}


def check_targets(values: dict) -> list[dict]:
    return [{"key": key, "figure": figure, "value": float(values[key]), "target": target, "unit": unit,
             "met": bool(values[key] <= target if unit != "area" else values[key] < target)}
            for key, figure, target, unit in TARGETS]


def _fmt(value, unit, reference=""):
    from qsal_lab.experiments.report import describe_drop

    if unit == "pt":
        return describe_drop(value, reference=reference)
    return f"{value:.2f}×" if unit == "×" else f"{value:+.3f}"


def _fmt_target(t):
    if t["unit"] == "pt":
        return f"at most {t['target']} pt below"
    return f"≤ {t['target']}×" if t["unit"] == "×" else "< 0 (SGT's area below Standard's)"


def why_missed(t, rows) -> str:
    """One sentence on a missed target, from the numbers."""
    from qsal_lab.experiments.saliency_sweep import find_row

    if t["key"].startswith("sgt_minus_standard_area"):
        method = t["key"].rsplit("_", 1)[1]
        std, sgt = find_row(rows, "Standard", method), find_row(rows, "SGT", method)
        return (f"SGT's random-removal area is {sgt['random_area']:.3f} against Standard's {std['random_area']:.3f}: the "
                f"SGT model tolerates noise everywhere, so its raw area is higher; its gap to random removal is "
                f"{sgt['gap']:+.3f} against {std['gap']:+.3f} (0-10 %) and {sgt['gap_coarse']:+.3f} against "
                f"{std['gap_coarse']:+.3f} (0-90 %).")
    if t["key"] == "fused_step_ratio":
        return ("the fused step also sorts every image's saliency, draws the noise, computes the KL and a first backward "
                "to the input; the ratio moves with the machine's load (recorded above).")
    return "the shipped model's recipe (its COMMAND) trades this much accuracy; see its metrics.json."


def markdown(result: dict) -> str:
    from qsal_lab.experiments.saliency_sweep import format_table, summary_table

    m, t = result["machine"], result["timing"]
    lines = [f"# Saliency of SmallCNN on MNIST: standard, SGT, PACT and SGT + PACT ({result['budget']} budget)", "",
             f"Run {result['finished']}, {result['seconds_total']:.0f} s in all on {m['cpus']} CPU(s), torch "
             f"{m['torch']} with {t['threads']} thread(s); load average (1 min) {m['start']['loadavg_1min']:.2f} at "
             f"the start, {m['end']['loadavg_1min']:.2f} at the end (the machine may be shared: timings are indicative).",
             ""]
    if result["budget"] == "ci":
        lines += ["**ci budget: a smoke run on tiny subsets; these numbers are not meaningful.**", ""]
    lines += [f"Models: the shipped checkpoints in `qsal_lab/pretrained/` ({', '.join(result['models'])}). Accuracy on "
              f"{result['test_images']:,} MNIST test images; maps on {result['map_images']} of them.", "",
              "## Targets", "", "| figure | value | target | status |", "|---|---|---|---|"]
    refs = {"sgt_drop_pt": "Standard", "sgt_pact_w4a4_drop_pt": "SGT float", "sgt_pact_w2a2_drop_pt": "SGT float"}
    for tg in result["targets"]:
        lines.append(f"| {tg['figure']} | {_fmt(tg['value'], tg['unit'], refs.get(tg['key'], ''))} | {_fmt_target(tg)} "
                     f"| {'met' if tg['met'] else '**MISSED**'} |")
    missed = [tg for tg in result["targets"] if not tg["met"]]
    if missed:
        lines += ["", "Missed, and why:", ""] + [f"- {tg['figure']}: {tg['why']}" for tg in missed]
    lines += ["", "Accuracy drop = the float model's accuracy minus this one's, in points (pt); positive = worse. "
              "Faithfulness area: accuracy as each image's most salient pixels are replaced by noise, normalised "
              "area under the curve; lower = more faithful; random − area: how much more salient removal hurts "
              "than random removal.", "", "## Every model", "", summary_table(result["rows"]), ""]
    for method in METHODS:
        lines += [f"### {method}, 0-10 % removed", "", format_table(result["rows"], methods=(method,)), "",
                  f"### {method}, 0-90 % removed (the SGT paper's grid)", "",
                  format_table(result["rows"], methods=(method,), coarse=True), ""]
    lines += ["## Training step cost", "",
              f"{t['batches']} batches of {t['batch_size']}, {t['rounds']} interleaved rounds per step (median), "
              f"{t['clock']}; load average {t['load_before']['loadavg_1min']:.2f} before, "
              f"{t['load_after']['loadavg_1min']:.2f} after:", "",
              "| step | CPU seconds per step | × standard | estimated CPU seconds per 60k-image epoch |",
              "|---|---|---|---|"]
    for k in ("standard", "naive", "fused"):
        ratio = "1.00×" if k == "standard" else f"{t[f'{k}_ratio']:.2f}×"
        lines.append(f"| {k} | {t[f'{k}_s']:.4f} | {ratio} | {t[f'{k}_epoch_s_estimate']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    from qsal_lab.budget import current_budget, pick
    from qsal_lab.experiments.pact_sweep import mnist_loaders
    from qsal_lab.experiments.report import write_results
    from qsal_lab.experiments.saliency_sweep import load_shipped, saliency_images, saliency_rows

    budget = current_budget(args.budget)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    result = {"benchmark": "saliency_mnist", "budget": budget, "started": started.isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                          "torch": torch.__version__, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                          "start": load()}}
    models = load_shipped(bits=BITS)
    result["models"] = [m.source for m in models.values()]
    print("[bench] standard vs naive vs fused SGT training steps", flush=True)
    result["timing"] = time_steps(models["Standard"].model, args.timing_batches or pick(ci=2, book=20, full=40, budget=budget),
                                  args.timing_rounds or pick(ci=1, book=3, full=5, budget=budget), budget)
    test_loader, _ = mnist_loaders(budget)
    x, y = saliency_images(args.images or pick(ci=32, book=500, full=2000, budget=budget))
    result["test_images"], result["map_images"] = len(test_loader.dataset), len(x)
    print(f"[bench] {len(models)} models: accuracy, faithfulness, Gini, agreement", flush=True)
    rows = saliency_rows(models, x, y, test_loader, methods=METHODS, progress=not args.quiet)
    result["rows"] = rows
    result["targets"] = check_targets(values_for_targets(rows, result["timing"]))
    for tg in result["targets"]:
        if not tg["met"]:
            tg["why"] = why_missed(tg, rows)
            if tg["key"].startswith("sgt_minus_standard_area"):
                tg["why"] += f" The SGT model: `{models['SGT'].info['command']}`."
    result["machine"]["end"] = load()
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["seconds_total"] = time.perf_counter() - t0
    write_results(args.results, "saliency_mnist", result, markdown(result), default=float)
    for tg in result["targets"]:
        print(f"  {tg['figure']}: {tg['value']:.3f} (target {tg['target']}) {'met' if tg['met'] else 'MISSED'}")
    print(f"[bench] wrote {args.results / 'saliency_mnist.json'} and .md in {result['seconds_total']:.0f} s")


if __name__ == "__main__":
    main()
