"""Benchmark: every way this project quantizes SmallCNN on MNIST, measured in one run (`make bench`).

    python bench/quant_mnist.py                   # budget from QSAL_BUDGET, default book (minutes on 2 cores)
    python bench/quant_mnist.py --budget ci       # a fast smoke run: the numbers mean nothing
    python bench/quant_mnist.py --fp-checkpoint qsal_lab/pretrained/mnist_smallcnn/checkpoint.pt

One run, one budget, one test set:
  1. FP32: train SmallCNN with the budget's recipe (or load --fp-checkpoint);
  2. the cost of QAT: float and QAT training steps timed side by side on the same batches,
     interleaved and repeated (qsal_lab.experiments.pact_sweep.train_step_seconds);
  3. PACT QAT at W/A = 8, 4, 3, 2 bits and PTQ W4A4 for contrast (qsal_lab.experiments.pact_sweep.bit_sweep,
     the same code chapter 4 runs): test accuracy, before fine-tuning too, deployed size, bit-packed file size;
  4. ONNX Runtime (pact_sweep.onnx_rows, as chapter 4): the float model, its int8 PTQ (export_onnx +
     quantize_onnx: QDQ, per-channel int8 weights) and the PACT W8A8 and W4A4 models exported with their
     learned clipping levels (export_qat_onnx): accuracy, agreement with the fake-quant model, file size,
     latency at batch 1 on one thread, and which operators run on integers.
Accuracy against FP32 is the drop (float minus quantized, positive = worse), said in words.
Every figure is compared with its target and reported as met or MISSED in
bench/results/quant_mnist.json and bench/results/quant_mnist.md. Nothing is asserted: wall-clock
numbers depend on the machine and its load (which is recorded next to them).
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
QAT_BITS = (8, 4, 3, 2)
PTQ_BITS = (4,)
ONNX_QAT_BITS = (8, 4)  # the PACT models exported to ONNX Runtime
TIMING_BITS = 4  # the QAT config whose training step is timed (the cost barely depends on the bit width)

# (key, what is measured, target value, how it compares, unit)
TARGETS = [
    ("ptq_int8_drop_pt", "PTQ int8 (ORT) accuracy drop vs FP32", 0.3, "≤", "pt"),
    ("pact_w4a4_drop_pt", "PACT W4A4 accuracy drop vs FP32", 0.3, "≤", "pt"),
    ("pact_w2a2_drop_pt", "PACT W2A2 accuracy drop vs FP32", 1.0, "≤", "pt"),
    ("int8_onnx_vs_fp32_onnx", "int8 ONNX file / fp32 ONNX file", 0.27, "≤", "×"),
    ("packed_w4_vs_fp32", "packed PACT W4A4 file / fp32 state_dict file", 0.14, "≤", "×"),
    ("qat_vs_fp_epoch_time", "QAT epoch time / FP epoch time", 1.3, "≤", "×"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=("ci", "book", "full"), default=None,
                   help="compute budget (default: $QSAL_BUDGET, else book)")
    p.add_argument("--fp-checkpoint", type=Path, default=None,
                   help="reuse this float SmallCNN checkpoint instead of training one in the run")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results",
                   help="folder for quant_mnist.json and quant_mnist.md (default: bench/results)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="folder for checkpoints, ONNX and packed files (default: runs/bench_quant_mnist_<budget>)")
    p.add_argument("--timing-batches", type=int, default=None, help="batches per timed block (default: by budget)")
    p.add_argument("--timing-rounds", type=int, default=None, help="timed blocks per model (default: by budget)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    for name in ("timing_batches", "timing_rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.fp_checkpoint is not None and not args.fp_checkpoint.exists():
        p.error(f"--fp-checkpoint {args.fp_checkpoint} does not exist; omit it to train the float model in the run")
    return args


def train_or_load_fp(args, budget, work, progress):
    """(checkpoint path, model, seconds per full training epoch or None)."""
    from qsal_lab.train import load_checkpoint, train_model

    if args.fp_checkpoint is not None:
        model, _ = load_checkpoint(args.fp_checkpoint)
        return args.fp_checkpoint, model, None
    out = work / "fp32"
    model, history = train_model("mnist", "smallcnn", budget=budget, out=out, resume=False, progress=progress)
    return out / "checkpoint.pt", model.cpu().eval(), sum(history["seconds"]) / len(history.epochs)


def time_training(model, budget, batches, rounds):
    """FP vs QAT training steps on the same batches; per-epoch estimates for a full MNIST epoch."""
    from qsal_lab.budget import recipe
    from qsal_lab.data import load_dataset, make_loader
    from qsal_lab.experiments.pact_sweep import qat_recipe, train_step_seconds

    batch_size = recipe("smallcnn", budget).batch_size
    ds = load_dataset("mnist", "train", subset=batches * batch_size, seed=1)
    data = list(make_loader(ds, batch_size=batch_size, train=True, seed=1))
    config = qat_recipe(TIMING_BITS, budget).config(TIMING_BITS)
    t = train_step_seconds(model, config, data, rounds=rounds)
    steps_per_epoch = -(-60000 // batch_size)
    return {**t, "batches": len(data), "rounds": rounds, "batch_size": batch_size, "threads": torch.get_num_threads(),
            "qat_config": f"W{TIMING_BITS}A{TIMING_BITS} {config.weight_quant}",
            "fp_epoch_s_estimate": t["fp_step_s"] * steps_per_epoch,
            "qat_epoch_s_estimate": t["qat_step_s"] * steps_per_epoch}


def check_targets(values: dict) -> list[dict]:
    out = []
    for key, what, target, op, unit in TARGETS:
        value = values[key]
        out.append({"key": key, "figure": what, "value": value, "target": target, "op": op, "unit": unit,
                    "met": bool(value <= target)})
    return out


def _fmt(value, unit):
    from qsal_lab.experiments.report import describe_drop

    return describe_drop(value, reference="FP32") if unit == "pt" else f"{value:.3f}×"


def _fmt_target(tg):
    return f"at most {tg['target']} pt below FP32" if tg["unit"] == "pt" else f"{tg['op']} {tg['target']:.3f}×"


def markdown(result: dict) -> str:
    from qsal_lab.experiments.pact_sweep import format_onnx_table, format_precision_table, format_table

    m, t = result["machine"], result["timing"]
    lines = [f"# Quantizing SmallCNN on MNIST: benchmark ({result['budget']} budget)", "",
             f"Run {result['finished']}, {result['seconds_total']:.0f} s in all on {m['cpus']} CPU(s), "
             f"torch {m['torch']} with {t['threads']} thread(s); load average (1 min) "
             f"{m['loadavg_1min_start']:.2f} at the start, {m['loadavg_1min_end']:.2f} at the end "
             f"(the machine may be shared: timings are indicative).", ""]
    if result["budget"] == "ci":
        lines += ["**ci budget: a smoke run on tiny subsets; these numbers are not meaningful.**", ""]
    lines += [f"Float model: {result['fp_source']}. Test set: {result['test_images']:,} MNIST test images.", "",
              "## Targets", "", "| figure | value | target | status |", "|---|---|---|---|"]
    for tg in result["targets"]:
        lines.append(f"| {tg['figure']} | {_fmt(tg['value'], tg['unit'])} | {_fmt_target(tg)} "
                     f"| {'met' if tg['met'] else '**MISSED**'} |")
    lines += ["", "Accuracy drop = FP32 accuracy minus the quantized model's, in points (pt); positive = worse.", "",
              "## Every model (PyTorch, fake-quant)", "", format_table(result["rows"]), "",
              "Sizes: 'size' counts weights at their bit width plus scales (all else float32); 'packed file' is "
              "`save_packed`'s file, compared with `torch.save` of the float state_dict. 'Before fine-tuning': "
              "the float model right after `quantize_model`.", "",
              "## In ONNX Runtime (int8 QDQ files, one thread)", "", format_onnx_table(result["onnx_rows"]), "",
              "PTQ int8: ONNX Runtime's `quantize_static` (QDQ, per-channel int8 weights, min-max calibration). "
              "PACT QAT: `export_qat_onnx`, activation scales = learned alpha / (2^bits - 1). What ONNX Runtime "
              "runs after fusing:", "", format_precision_table(result["onnx_rows"]), "",
              "## Training cost", "",
              f"FP and QAT ({t['qat_config']}) training steps, {t['batches']} batches of {t['batch_size']} each, "
              f"{t['rounds']} interleaved rounds per model (median):", "",
              "| | seconds per step | estimated seconds per 60k-image epoch |", "|---|---|---|",
              f"| FP32 | {t['fp_step_s']:.4f} | {t['fp_epoch_s_estimate']:.1f} |",
              f"| PACT QAT | {t['qat_step_s']:.4f} | {t['qat_epoch_s_estimate']:.1f} |",
              f"| ratio | {t['ratio']:.2f}× | |", ""]
    if result.get("fp_epoch_s_measured"):
        lines.append(f"The FP32 training in this run took {result['fp_epoch_s_measured']:.1f} s per epoch "
                     f"(including its data loading).")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    from qsal_lab.budget import current_budget, pick
    from qsal_lab.experiments.report import load_average, write_results
    from qsal_lab.experiments.pact_sweep import bit_sweep, find_row, mnist_loaders, onnx_rows

    budget = current_budget(args.budget)
    progress = not args.quiet
    work = args.work_dir or ROOT / "runs" / f"bench_quant_mnist_{budget}"
    work.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    result = {"benchmark": "quant_mnist", "budget": budget, "started": started.isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                          "torch": torch.__version__, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                          **load_average("start")}}

    print(f"[bench] budget {budget}: FP32 model", flush=True)
    fp_ckpt, fp_model, fp_epoch_s = train_or_load_fp(args, budget, work, progress)
    result["fp_source"] = f"loaded from {args.fp_checkpoint}" if args.fp_checkpoint else f"trained in this run ({budget} recipe)"
    result["fp_checkpoint"], result["fp_epoch_s_measured"] = str(fp_ckpt), fp_epoch_s

    print("[bench] FP vs QAT training step time", flush=True)  # early, before the sweep heats things up
    result["timing"] = time_training(fp_model, budget, args.timing_batches or pick(ci=3, book=40, full=80, budget=budget),
                                     args.timing_rounds or pick(ci=2, book=3, full=5, budget=budget))

    test_loader, calib_loader = mnist_loaders(budget)
    result["test_images"] = len(test_loader.dataset)
    print(f"[bench] PACT QAT at W/A = {QAT_BITS}, PTQ at {PTQ_BITS}", flush=True)
    rows = bit_sweep(fp_ckpt, bits=QAT_BITS, ptq_bits=PTQ_BITS, out=work / "sweep", budget=budget, progress=progress)
    print(f"[bench] ONNX Runtime: FP32, PTQ int8, PACT at W/A = {ONNX_QAT_BITS}", flush=True)
    onnx = onnx_rows(rows, fp_model, calib_loader, test_loader, out=work / "onnx", bits=ONNX_QAT_BITS)
    for row in rows:  # the alpha history is in the run folders; keep the JSON readable
        if "history" in row:
            history = row.pop("history")
            row["epoch_accuracy"] = [e.get("test_accuracy") for e in history]
            row["alphas"] = [e.get("alphas") for e in history]
            row["epoch_seconds"] = [e.get("seconds") for e in history]
    result["rows"], result["onnx_rows"] = rows, onnx
    fp32_onnx, int8_onnx = find_row(onnx, "FP32 (ORT)", 32), find_row(onnx, "PTQ int8 (ORT)", 8)

    result["targets"] = check_targets({
        "ptq_int8_drop_pt": int8_onnx["drop_pt"],
        "pact_w4a4_drop_pt": find_row(rows, "PACT QAT", 4)["drop_pt"],
        "pact_w2a2_drop_pt": find_row(rows, "PACT QAT", 2)["drop_pt"],
        "int8_onnx_vs_fp32_onnx": int8_onnx["file_bytes"] / fp32_onnx["file_bytes"],
        "packed_w4_vs_fp32": find_row(rows, "PACT QAT", 4)["file_vs_fp32"],
        "qat_vs_fp_epoch_time": result["timing"]["ratio"],
    })
    result["machine"].update(load_average("end"))
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["seconds_total"] = time.perf_counter() - t0

    md = markdown(result)
    print(md)
    write_results(args.results, "quant_mnist", result, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
