"""Benchmark: every way this project quantizes SmallCNN on MNIST, measured in one run (`make bench`).

    python bench/quant_mnist.py                   # budget from QSAL_BUDGET, default book (minutes on 2 cores)
    python bench/quant_mnist.py --budget ci       # a fast smoke run: the numbers mean nothing
    python bench/quant_mnist.py --fp-checkpoint qsal_lab/pretrained/mnist_smallcnn/checkpoint.pt

qsal_lab.experiments.pact_sweep, the code chapter 4 runs, on one test set: the float model (trained in the run, or
--fp-checkpoint); float and QAT training steps timed side by side; PACT QAT at W/A = 8, 4, 3, 2 bits and PTQ W4A4;
in ONNX Runtime the float model, its int8 PTQ and PACT W8A8 and W4A4 with their learned clipping levels.
"""
import sys

from qsal_lab.budget import pick
from qsal_lab.experiments import pact_sweep as sweep
from qsal_lab.experiments.benchmark import Benchmark, Target, existing_path, positive_int
from qsal_lab.experiments.report import markdown_table
from qsal_lab.experiments.study import find_row, float_checkpoint
from qsal_lab.train import train_model

TARGETS = (
    Target("ptq_int8_drop_pt", "PTQ int8 (ORT) accuracy drop vs FP32", "≤", 0.3, reference="FP32"),
    Target("pact_w4a4_drop_pt", "PACT W4A4 accuracy drop vs FP32", "≤", 0.3, reference="FP32"),
    Target("pact_w2a2_drop_pt", "PACT W2A2 accuracy drop vs FP32", "≤", 1.0, reference="FP32"),
    Target("int8_onnx_vs_fp32_onnx", "int8 ONNX file / fp32 ONNX file", "≤", 0.27, "×"),
    Target("packed_w4_vs_fp32", "packed PACT W4A4 file / fp32 state_dict file", "≤", 0.14, "×"),
    Target("qat_vs_fp_epoch_time", "QAT epoch time / FP epoch time", "≤", 1.3, "×", digits=2),
)


def arguments(p):
    p.add_argument("--fp-checkpoint", type=existing_path("omit it to train the float model in the run"),
                   help="reuse this float SmallCNN checkpoint instead of training one in the run")
    p.add_argument("--timing-batches", type=positive_int, help="batches per timed block (default: by budget)")
    p.add_argument("--timing-rounds", type=positive_int, help="timed blocks per model (default: by budget)")


def run(args) -> dict:
    budget, work = args.budget, args.work_dir
    if args.fp_checkpoint:
        checkpoint, source, epoch_s = args.fp_checkpoint, f"loaded from {args.fp_checkpoint}", None
        model = float_checkpoint(checkpoint, "smallcnn", "mnist")[0]
    else:
        model, history = train_model("mnist", "smallcnn", budget=budget, out=work / "fp32", resume=False,
                                     progress=args.progress)
        checkpoint, source = work / "fp32" / "checkpoint.pt", f"trained in this run ({budget} recipe)"
        epoch_s = sum(history["seconds"]) / len(history.epochs)
    timing = sweep.training_cost(model.cpu().eval(), budget,  # early, before the sweep heats the machine
                                 args.timing_batches or pick(ci=3, book=40, full=80, budget=budget),
                                 args.timing_rounds or pick(ci=2, book=3, full=5, budget=budget))
    test_loader, calib_loader = sweep.mnist_loaders(budget)
    rows = sweep.bit_sweep(checkpoint, bits=(8, 4, 3, 2), ptq_bits=(4,), out=work / "sweep", budget=budget,
                           progress=args.progress)
    onnx = sweep.onnx_rows(rows, model, calib_loader, test_loader, out=work / "onnx", bits=(8, 4))
    return {"fp_source": source, "fp_checkpoint": str(checkpoint), "fp_epoch_s_measured": epoch_s, "timing": timing,
            "test_images": len(test_loader.dataset), "rows": rows, "onnx_rows": onnx}


def values(result) -> dict:
    rows, onnx = result["rows"], result["onnx_rows"]
    fp32, int8, w4 = find_row(onnx, "FP32 (ORT)"), find_row(onnx, "PTQ int8 (ORT)"), find_row(rows, "PACT W4A4")
    return {"ptq_int8_drop_pt": int8.drop_pt, "pact_w4a4_drop_pt": w4.drop_pt,
            "pact_w2a2_drop_pt": find_row(rows, "PACT W2A2").drop_pt, "packed_w4_vs_fp32": w4["file_vs_fp32"],
            "int8_onnx_vs_fp32_onnx": int8.file_bytes / fp32.file_bytes,
            "qat_vs_fp_epoch_time": result["timing"]["ratio"]}


def report(result) -> str:
    t, measured = result["timing"], result["fp_epoch_s_measured"]
    return "\n".join([
        "Accuracy drop = FP32 accuracy minus the quantized model's, in points (pt); positive = worse.", "",
        "## Every model (PyTorch, fake-quant)", "", sweep.format_table(result["rows"]), "",
        "Sizes: 'size' counts weights at their bit width plus scales (all else float32); 'packed file' is "
        "`save_packed`'s file, compared with `torch.save` of the float state_dict. 'Before fine-tuning': the float "
        "model right after `quantize_model`.", "", "## In ONNX Runtime (int8 QDQ files, one thread)", "",
        sweep.format_onnx_table(result["onnx_rows"]), "", "PTQ int8: ONNX Runtime's `quantize_static` (QDQ, "
        "per-channel int8 weights, min-max calibration). PACT: `export_qat_onnx`, activation scales = learned alpha / "
        "(2^bits - 1). What ONNX Runtime runs after fusing:", "", sweep.format_precision_table(result["onnx_rows"]), "",
        "## Training cost", "", f"FP and QAT ({t['qat_config']}) training steps, {t['batches']} batches of "
        f"{t['batch_size']} each, {t['rounds']} interleaved rounds per model (median):", "",
        markdown_table(["", "seconds per step", "estimated seconds per 60k-image epoch"],
                       [["FP32", f"{t['fp_step_s']:.4f}", f"{t['fp_epoch_s_estimate']:.1f}"],
                        ["PACT QAT", f"{t['qat_step_s']:.4f}", f"{t['qat_epoch_s_estimate']:.1f}"],
                        ["ratio", f"{t['ratio']:.2f}×", ""]]), "",
        f"The FP32 training in this run took {measured:.1f} s per epoch (with its data loading)." if measured else ""])


BENCH = Benchmark(__file__, __doc__, TARGETS, run, values, report, title="Quantizing SmallCNN on MNIST: benchmark",
                  arguments=arguments, preface=lambda r: f"Float model: {r['fp_source']}. Test set: "
                                                        f"{r['test_images']:,} MNIST test images.")

if __name__ == "__main__":
    sys.exit(BENCH.main())
