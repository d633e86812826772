"""Benchmark: ResNet-20 on CIFAR-10 (or, offline, the labelled stand-in) in one run, every row against its target.

    python bench/cifar_resnet20.py                  # book: the shipped checkpoints where they fit the data (minutes)
    python bench/cifar_resnet20.py --train-qat      # book, with the PACT rows fine-tuned in this run
    python bench/cifar_resnet20.py --budget ci      # a fast smoke run: the numbers mean nothing
    QSAL_STANDIN=1 python bench/cifar_resnet20.py   # offline: the synthetic stand-in, labelled on every line

qsal_lab.experiments.cifar.run_study, the code chapter 8 runs: FP32, PTQ int8 in ONNX Runtime, fake-quant PTQ
W8A8/W4A4/W2A2, PACT W4A4 and W2A2, SGT + PACT W4A4 on the same test images; eager PyTorch and ONNX Runtime fp32/int8
timed interleaved at batch 1 on one thread. The results name the data they ran on.
"""
import sys

from qsal_lab.data import dataset_info
from qsal_lab.experiments import cifar
from qsal_lab.experiments.benchmark import Benchmark, Target, existing_path

TARGETS = (
    Target("pact_w4a4_drop", "PACT W4A4 accuracy drop vs FP32", "≤", 1.0, reference="FP32"),
    Target("pact_w2a2_drop", "PACT W2A2 accuracy drop vs FP32", "≤", 3.0, reference="FP32"),
    Target("pact_vs_ptq_w2a2", "PACT W2A2 ahead of PTQ W2A2", ">", 10.0, " pt", digits=2),
    Target("int8_vs_fp32_speedup", "ORT int8 vs ORT fp32 speed-up (batch 1, 1 thread)", "≥", 2.0, "×", digits=2),
    Target("int8_vs_eager_speedup", "ORT int8 vs eager PyTorch speed-up (batch 1, 1 thread)", "≥", 8.0, "×", digits=2),
)


def arguments(p):
    p.add_argument("--float-checkpoint", type=existing_path("omit it to use the default"), help="use this float "
                   "checkpoint (default: the shipped one for the stand-in, else trained in the run)")
    p.add_argument("--train-qat", action="store_true",
                   help="fine-tune the PACT rows in the run even where shipped checkpoints fit")


def run(args) -> dict:
    study = cifar.run_study(args.work_dir, budget=args.budget, float_checkpoint=args.float_checkpoint,
                            use_shipped=not args.train_qat, progress=args.progress)
    return {"data": {k: study[k] for k in ("dataset", "key", "standin", "version")}, "study": study}


def values(result) -> dict:
    by = {r.model: r for r in result["study"]["rows"]}
    drop = {model: by[model].drop_pt if model in by else None for model in ("PACT W4A4", "PACT W2A2", "PTQ W2A2")}
    ort = by.get("PTQ int8 (ORT)", {})
    return {"pact_w4a4_drop": drop["PACT W4A4"], "pact_w2a2_drop": drop["PACT W2A2"],
            "pact_vs_ptq_w2a2": None if None in drop.values() else drop["PTQ W2A2"] - drop["PACT W2A2"],
            "int8_vs_fp32_speedup": ort.get("speedup_vs_fp32"), "int8_vs_eager_speedup": ort.get("speedup_vs_eager")}


def why(key, result) -> str:
    by = {r.model: r for r in result["study"]["rows"]}
    if key.startswith("pact_"):
        r = by["PACT W4A4" if key == "pact_w4a4_drop" else "PACT W2A2"]
        text = (f"{r.model} {r.accuracy:.2%} vs float {by['FP32'].accuracy:.2%} ({r['source']}; {r['step']['epochs']} "
                f"epochs on {r['step']['train_subset'] or 'all'} training images)")
        return text + (f"; PTQ W2A2 {by['PTQ W2A2'].accuracy:.2%}" if key == "pact_vs_ptq_w2a2" else "")
    ort = by["PTQ int8 (ORT)"]
    return (f"eager {ort['eager_latency_ms']:.3f} ms, ORT fp32 {ort['fp32_latency_ms']:.3f} ms, ORT int8 "
            f"{ort.latency_ms:.3f} ms; ONNX Runtime runs {ort['ort_ops']['integer']} on integers and "
            f"{ort['ort_ops']['float32']} in float32; machine load recorded above")


def preface(result) -> str:
    s = result["study"]
    sel = s["selection"]
    return "\n\n".join(([cifar.banner(dataset_info(s["key"]))] if s["standin"] else []) + [
        f"Data: **{s['dataset']}** ({s['test_n']} test images). Float model: {s['float_source']}. PACT's optimizer and "
        f"alpha learning-rate scale: {sel['chosen']} ({sel['criterion']}; {sel['source']})."])


def report(result) -> str:
    rows = result["study"]["rows"]
    return "\n".join([f"## Rows ({result['study']['dataset']})", "", cifar.format_table(rows), "",
                      "Sources: " + "; ".join(f"{r.model}: {r['source']}" for r in rows if r.get("source"))])


BENCH = Benchmark(__file__, __doc__, TARGETS, run, values, report, arguments=arguments, why=why, preface=preface,
                  title=lambda r: f"ResNet-20 on {r['study']['dataset']}: benchmark")

if __name__ == "__main__":
    sys.exit(BENCH.main())
