"""Benchmark: the book's three models on a CPU, eager PyTorch fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8.

    python bench/edge.py                       # budget from QSAL_BUDGET, default book (a few minutes)
    python bench/edge.py --budget ci           # a fast smoke run: the numbers mean nothing
    python bench/edge.py --checkpoint resnet20=runs/cifar_resnet20 --checkpoint resnet18=runs/pneu

SmallCNN (MNIST), ResNet-20 (CIFAR-10) and ResNet-18 (PneumoniaMNIST) at batch 1 on 1 thread
(qsal_lab.experiments.backends): single-stream latency of the three backends interleaved, throughput, peak RSS, file
sizes, accuracy of trained weights, a Pareto figure, and the emulated Raspberry Pi's agreement with x86 as
tests/edge/test_pi_emulation.py recorded it in bench/results/pi_emulation.json (or "not run").
"""
import argparse
import sys
from pathlib import Path

from qsal_lab.experiments import backends
from qsal_lab.experiments.benchmark import Benchmark, Target

EMULATION = Path(__file__).resolve().parent / "results" / "pi_emulation.json"
AT = "(p50, batch 1, 1 thread)"
TARGETS = (Target("resnet20_int8_vs_fp32", f"ResNet-20: ORT int8 speed-up over ORT fp32 {AT}", "≥", 2.0, "×", 2),
           Target("resnet18_int8_vs_fp32", f"ResNet-18: ORT int8 speed-up over ORT fp32 {AT}", "≥", 3.0, "×", 2),
           Target("resnet20_int8_vs_eager", f"ResNet-20: ORT int8 speed-up over eager PyTorch fp32 {AT}", "≥", 8.0,
                  "×", 2))


def model_path(text: str) -> tuple:
    model, sep, path = text.partition("=")
    if not sep or model not in backends.MODELS:
        raise argparse.ArgumentTypeError(f"takes MODEL=PATH with MODEL one of {', '.join(backends.MODELS)}, "
                                         f"got {text!r}")
    if not Path(path).exists():
        raise argparse.ArgumentTypeError(f"{text}: {path} does not exist")
    return model, Path(path)


def model_list(text: str) -> list:
    models = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in models if m not in backends.MODELS]
    if unknown or not models:
        raise argparse.ArgumentTypeError(f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from "
                                         f"{', '.join(backends.MODELS)}")
    return models


def arguments(p):
    p.add_argument("--checkpoint", type=model_path, action="append", default=[], metavar="MODEL=PATH",
                   help="trained weights for a model; default: the shipped checkpoint if there is one, else untrained "
                        "weights (timed, no accuracy)")
    p.add_argument("--emulation", type=Path, default=EMULATION, help="the emulated-Pi result file to report")
    p.add_argument("--models", type=model_list, default=list(backends.MODELS), help="which models, comma-separated")


def run(args) -> dict:
    models, result = {}, {}
    for name in args.models:
        print(f"[bench] {backends.MODELS[name][1]}: export, quantize, time eager / ORT fp32 / ORT int8", flush=True)
        models[name] = backends.bench_model(name, args.budget, args.work_dir, dict(args.checkpoint).get(name),
                                            args.progress)
        if name == "smallcnn":
            shape = models[name]["input_shape"]
            result["ort_call_overhead"] = backends.ort_call_overhead(shape, args.work_dir, args.budget)
    settings = next(iter(models.values()))["settings"]
    figure = backends.pareto_figure(list(models.values()), args.results / "edge_pareto.png")
    return {**result, "models": list(models.values()), "emulation": backends.emulation(args.emulation),
            "settings": {"threads": 1, "batch": 1, "warmup": backends.WARMUP, "rounds": backends.ROUNDS, **settings},
            "pareto_figure": str(figure) if figure else None}


def values(result) -> dict:
    sp = {m["model"]: m["speedups"] for m in result["models"]}
    return {"resnet20_int8_vs_fp32": sp.get("resnet20", {}).get("int8_vs_fp32_p50"),
            "resnet18_int8_vs_fp32": sp.get("resnet18", {}).get("int8_vs_fp32_p50"),
            "resnet20_int8_vs_eager": sp.get("resnet20", {}).get("int8_vs_eager_p50")}


BENCH = Benchmark(__file__, __doc__, TARGETS, run, values, backends.format_report,
                  title="Edge benchmark: eager PyTorch vs ONNX Runtime fp32 vs int8", arguments=arguments)

if __name__ == "__main__":
    sys.exit(BENCH.main())
