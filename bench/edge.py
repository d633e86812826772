"""Benchmark: the book's three models on a CPU, eager PyTorch fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8.

    python bench/edge.py                       # budget from QSAL_BUDGET, default book (a few minutes)
    python bench/edge.py --budget ci           # a fast smoke run: the numbers mean nothing
    python bench/edge.py --checkpoint resnet20=runs/cifar_resnet20 --checkpoint resnet18=runs/pneu

One run, for SmallCNN (MNIST, 1x28x28), ResNet-20 (CIFAR-10, 3x32x32) and ResNet-18 (PneumoniaMNIST,
1x28x28), each at batch 1 with 1 thread (qsal_lab.edge.compare_backends):
  1. export to ONNX (BN folded) and quantize with ONNX Runtime (static, QDQ, per-channel int8 weights),
     calibrated on the model's own training data;
  2. single-stream latency of the three backends interleaved in rounds: warm-up, then at least 1,024
     queries and 10 s each, whichever ends later (mean, p50, p90, p99); throughput at batch 64; the peak
     RSS of a fresh process per backend; file sizes;
  3. test accuracy of each backend when the weights are trained (a shipped checkpoint, or --checkpoint);
     untrained weights are timed all the same (speed does not depend on the weights' values), and say so;
  4. a Pareto figure of accuracy against latency and size for the models with accuracy;
  5. the emulated Raspberry Pi runs' agreement with x86 (max logit difference per emulated CPU), read from
     bench/results/pi_emulation.json that tests/edge/test_pi_emulation.py writes, or "not run".
Targets are marked met or MISSED in bench/results/edge.json and edge.md. Nothing is asserted: timings
depend on the machine and its load (recorded next to them); ratios measured together are what carry over.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
EMULATION_RESULTS = ROOT / "bench" / "results" / "pi_emulation.json"  # written by tests/edge/test_pi_emulation.py
MODELS = {  # model: (dataset, display name)
    "smallcnn": ("mnist", "SmallCNN"),
    "resnet20": ("cifar10", "ResNet-20"),
    "resnet18": ("pneumoniamnist", "ResNet-18"),
}
THROUGHPUT_BATCH = 64
WARMUP, ROUNDS = 20, 32  # 32 rounds: blocks of ~0.3 s at the book budget, so load changes hit every backend

# (key, what is measured, target value, unit): every target is "at least"
TARGETS = [
    ("resnet20_int8_vs_fp32", "ResNet-20: ORT int8 speed-up over ORT fp32 (p50, batch 1, 1 thread)", 2.0, "×"),
    ("resnet18_int8_vs_fp32", "ResNet-18: ORT int8 speed-up over ORT fp32 (p50, batch 1, 1 thread)", 3.0, "×"),
    ("resnet20_int8_vs_eager", "ResNet-20: ORT int8 speed-up over eager PyTorch fp32 (p50, batch 1, 1 thread)", 8.0, "×"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=("ci", "book", "full"), default=None,
                   help="compute budget (default: $QSAL_BUDGET, else book)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
                   help="trained weights for a model (smallcnn, resnet20, resnet18); default: the shipped "
                        "checkpoint if there is one, else untrained weights (timed, no accuracy)")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results",
                   help="folder for edge.json, edge.md and edge_pareto.png (default: bench/results)")
    p.add_argument("--work-dir", type=Path, default=None, help="folder for the ONNX files (default: runs/bench_edge_<budget>)")
    p.add_argument("--emulation", type=Path, default=EMULATION_RESULTS,
                   help=f"the emulated-Pi result file to report (default: {EMULATION_RESULTS.relative_to(ROOT)})")
    p.add_argument("--models", default=",".join(MODELS), help=f"which models, comma-separated (default: {','.join(MODELS)})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        p.error(f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODELS)}")
    checkpoints = {}
    for item in args.checkpoint:
        model, sep, path = item.partition("=")
        if not sep or model not in MODELS:
            p.error(f"--checkpoint takes MODEL=PATH with MODEL one of {', '.join(MODELS)}, got {item!r}")
        if not Path(path).exists():
            p.error(f"--checkpoint {item}: {path} does not exist")
        checkpoints[model] = Path(path)
    args.checkpoint = checkpoints
    return args


def weights(name: str, dataset: str, checkpoints: dict):
    """(model, source, trained): --checkpoint, else a shipped checkpoint, else seeded untrained weights."""
    from qsal_lab import pretrained
    from qsal_lab.data import dataset_info
    from qsal_lab.models import build_model
    from qsal_lab.train import load_checkpoint

    path = checkpoints.get(name)
    if path is None:
        shipped = f"{dataset}_{name}"  # e.g. mnist_smallcnn: the plain float model, not a variant of it
        path = pretrained.pretrained_dir(shipped) if shipped in pretrained.available() else None
    if path is not None:
        model, ckpt = load_checkpoint(path)
        if ckpt["model_spec"]["model"] != name:
            raise SystemExit(f"bench/edge.py: error: {path} holds a {ckpt['model_spec']['model']}, not a {name}")
        return model, str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path), True
    info = dataset_info(dataset)
    torch.manual_seed(0)
    return build_model(name, info.num_classes, info.in_channels, info.image_size).eval(), "untrained (seed 0)", False


def data(dataset: str, budget: str):
    """(calibration loader, test loader, display name); CIFAR-10 falls back to its labelled stand-in offline."""
    from qsal_lab.budget import pick
    from qsal_lab.data import check_files, load_dataset, make_loader

    n_calib = pick(ci=64, book=512, full=1024, budget=budget)
    n_test = pick(ci=128, book=None, full=None, budget=budget)
    if dataset == "cifar10" and set(check_files("cifar10").values()) != {"ok"}:
        # Offline: the synthetic stand-in, made at the sizes needed (not 50 000 images); its name says
        # "stand-in" on every line of the report.
        from qsal_lab.data import ImageDataset, dataset_info, make_standin

        info = dataset_info("cifar10-standin")
        calib = ImageDataset(*make_standin("train", n_calib), info, "train")
        test = ImageDataset(*make_standin("test", n_test or 2000), info, "test")
    else:
        calib = load_dataset(dataset, "train", subset=n_calib, seed=1)
        test = load_dataset(dataset, "test", subset=n_test, seed=0)
    return make_loader(calib, batch_size=64), make_loader(test, batch_size=256), test.info.display_name


def bench_model(name: str, args, budget: str, work: Path) -> dict:
    from qsal_lab.budget import pick
    from qsal_lab.edge import EAGER, ORT_FP32, ORT_INT8, compare_backends, prepare_backends
    from qsal_lab.models import count_parameters
    from qsal_lab.quant.int8 import OnnxClassifier
    from qsal_lab.train import evaluate

    dataset, display = MODELS[name]
    model, source, trained = weights(name, dataset, args.checkpoint)
    calib, test, dataset_name = data(dataset, budget)
    spec_shape = (1, *next(iter(test))[0].shape[1:])
    backends = prepare_backends(model, work, calib, input_shape=spec_shape, num_batches=len(calib),
                                metadata={"model": name, "dataset": dataset}, stem=name)
    example = next(iter(test))[0][:THROUGHPUT_BATCH]  # real test images: batch 1 = the first
    result = compare_backends(backends, example, threads=1, min_queries=pick(ci=32, book=1024, full=2048, budget=budget),
                              min_seconds=pick(ci=0.05, book=10.0, full=20.0, budget=budget), warmup=WARMUP, rounds=ROUNDS,
                              batch_sizes=(THROUGHPUT_BATCH,), throughput_seconds=pick(ci=0.05, book=3.0, full=5.0, budget=budget),
                              rss=True, budget=budget, progress=not args.quiet)
    rows = {r["backend"]: r for r in result["rows"]}
    if trained:
        runners = {EAGER: model, ORT_FP32: OnnxClassifier(backends[ORT_FP32]), ORT_INT8: OnnxClassifier(backends[ORT_INT8])}
        for backend, fn in runners.items():
            rows[backend]["accuracy"] = evaluate(fn, test, device="cpu")["accuracy"]
    for row in rows.values():
        row.update(model=display, dataset=dataset_name)
        row.setdefault("accuracy", None)

    def ratio(slow, fast, key="p50_ms"):
        return rows[slow][key] / rows[fast][key]

    return {"model": name, "name": display, "dataset": dataset_name, "input_shape": list(spec_shape[1:]),
            "parameters": count_parameters(model), "weights": source, "trained": trained,
            "test_images": len(test.dataset), "calibration_images": len(calib.dataset),
            "rows": result["rows"], "order": result["order"], "settings": result["settings"],
            "speedups": {"int8_vs_fp32_p50": ratio(ORT_FP32, ORT_INT8), "int8_vs_fp32_p90": ratio(ORT_FP32, ORT_INT8, "p90_ms"),
                         "int8_vs_eager_p50": ratio(EAGER, ORT_INT8), "int8_vs_eager_p90": ratio(EAGER, ORT_INT8, "p90_ms"),
                         "ort_fp32_vs_eager_p50": ratio(EAGER, ORT_FP32),
                         "int8_vs_fp32_cpu": ratio(ORT_FP32, ORT_INT8, "cpu_ms_per_query"),
                         "int8_vs_eager_cpu": ratio(EAGER, ORT_INT8, "cpu_ms_per_query"),
                         "int8_vs_fp32_throughput": rows[ORT_INT8]["throughput"][0]["images_per_s"]
                         / rows[ORT_FP32]["throughput"][0]["images_per_s"]}}


def ort_call_overhead(shape, work: Path, budget: str) -> dict:
    """Latency of an ONNX model that only copies its input (Identity) of this shape: what ONNX Runtime
    costs per call before any arithmetic, the floor under every ORT latency above."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from qsal_lab.budget import pick
    from qsal_lab.edge import benchmark

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *shape])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", *shape])])
    path = work / "identity.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    row = benchmark(path, np.zeros((1, *shape), np.float32), min_queries=pick(ci=32, book=1024, full=2048, budget=budget),
                    min_seconds=pick(ci=0.05, book=2.0, full=5.0, budget=budget), batch_sizes=(), rss=False, budget=budget)
    return {"input_shape": list(shape), "p50_ms": row["p50_ms"], "p90_ms": row["p90_ms"], "queries": row["queries"]}


def emulation(path: Path) -> dict:
    """The emulated Pi runs' agreement with x86, as tests/edge/test_pi_emulation.py recorded it, or 'not run'."""
    if not path.is_file():
        return {"status": "not run", "file": str(path),
                "how": "run `.venv/bin/pytest tests/edge/test_pi_emulation.py` as root with qemu-user-static, "
                       "binfmt-support and debootstrap installed; it writes this file"}
    try:
        found = json.loads(path.read_text())
        cpus = {cpu: {"device": entry.get("device"), "onnxruntime": entry.get("onnxruntime"),
                      **{kind: {k: entry[kind].get(k) for k in ("max_abs_logit_diff", "max_abs_logit", "predictions_equal")}
                         for kind in ("fp32", "int8") if kind in entry}}
                for cpu, entry in found["cpus"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return {"status": f"unreadable ({type(e).__name__}: {e})", "file": str(path)}
    return {"status": "run", "file": str(path), "created": found.get("created"), "inputs": found.get("inputs"),
            "host": found.get("host"), "tolerance": found.get("tolerance"), "cpus": cpus, "note": found.get("note")}


def check_targets(models: dict) -> list[dict]:
    values = {}
    if "resnet20" in models:
        values["resnet20_int8_vs_fp32"] = models["resnet20"]["speedups"]["int8_vs_fp32_p50"]
        values["resnet20_int8_vs_eager"] = models["resnet20"]["speedups"]["int8_vs_eager_p50"]
    if "resnet18" in models:
        values["resnet18_int8_vs_fp32"] = models["resnet18"]["speedups"]["int8_vs_fp32_p50"]
    return [{"key": key, "figure": what, "value": values[key], "target": target, "op": "≥", "unit": unit,
             "met": bool(values[key] >= target)} for key, what, target, unit in TARGETS if key in values]


def pareto_figure(models: list, path: Path):
    """Accuracy against p50 latency and file size for every backend of every trained model, or None."""
    import matplotlib

    matplotlib.use("Agg")
    from qsal_lab.edge import plot_pareto
    from qsal_lab.files import atomic_write

    points = [{**r, "label": f"{r['model']} {r['backend'].replace('ONNX Runtime', 'ORT').replace('eager PyTorch', 'eager')}"}
              for m in models for r in m["rows"] if r.get("accuracy") is not None]
    if not points:
        return None
    fig = plot_pareto(points, title="accuracy against latency (batch 1, 1 thread) and size: trained models")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"), suffix=".png")
    return path


def _fmt_ms(v):
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def markdown(result: dict) -> str:
    from qsal_lab.edge import format_table

    m, s = result["machine"], result["settings"]
    lines = [f"# Edge benchmark: eager PyTorch vs ONNX Runtime fp32 vs int8 ({result['budget']} budget)", "",
             f"Run {result['finished']}, {result['seconds_total']:.0f} s in all on {m['cpus']} CPU(s) "
             f"({m['processor'] or m['platform']}), torch {m['torch']}, onnxruntime {m['onnxruntime']}; load average "
             f"(1 min) {m['loadavg_1min_start']:.2f} at the start, {m['loadavg_1min_end']:.2f} at the end"
             + (f", run at nice {m['nice']}" if m.get("nice") else "") + ". The machine "
             "may be shared with other work: absolute milliseconds are indicative, the ratios (measured side by side, "
             "interleaved) are what carry over. This is not a Raspberry Pi: only `run.py --bench` on the device is.", ""]
    if result["budget"] == "ci":
        lines += ["**ci budget: a smoke run with a few queries; these numbers are not meaningful.**", ""]
    lines += [f"Single stream, batch 1, {s['threads']} thread: {s['warmup']} warm-up queries, then at least "
              f"{s['min_queries']:,} queries and {s['min_seconds']:g} s per backend, whichever ends later, in "
              f"{s['rounds']} interleaved rounds (the first backend rotating). Throughput: batch {THROUGHPUT_BATCH}. "
              "Peak RSS: a fresh process per backend that imports only onnxruntime (or torch), loads the model and "
              "runs it.", "", "## Targets", "", "| figure | value | target | status |", "|---|---|---|---|"]
    for t in result["targets"]:
        lines.append(f"| {t['figure']} | {t['value']:.2f}× | ≥ {t['target']:.1f}× | {'met' if t['met'] else '**MISSED**'} |")
    lines += ["", "## Speed-ups (same run, same machine)", "",
              "Speed-up = the slower backend's time / the faster one's. Wall-clock latency (p50, p90) is what a user "
              "waits; CPU time per query (mean, this process) is what the model costs: it leaves out the time other "
              "programs hold the CPU, which wall time on a shared machine includes.", "",
              "| model | dataset | input | parameters | int8 / fp32 ORT (p50) | (p90) | (CPU time) | int8 / eager (p50) "
              f"| (p90) | (CPU time) | ORT fp32 / eager (p50) | int8 / fp32 throughput @ {THROUGHPUT_BATCH} |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for mod in result["models"]:
        sp = mod["speedups"]
        lines.append(f"| {mod['name']} | {mod['dataset']} | {'x'.join(map(str, mod['input_shape']))} | "
                     f"{mod['parameters'] / 1e6:.2f} M | {sp['int8_vs_fp32_p50']:.2f}× | {sp['int8_vs_fp32_p90']:.2f}× | "
                     f"{sp['int8_vs_fp32_cpu']:.2f}× | {sp['int8_vs_eager_p50']:.1f}× | {sp['int8_vs_eager_p90']:.1f}× | "
                     f"{sp['int8_vs_eager_cpu']:.1f}× | {sp['ort_fp32_vs_eager_p50']:.1f}× | {sp['int8_vs_fp32_throughput']:.2f}× |")
    small = next((mod for mod in result["models"] if mod["model"] == "smallcnn"), None)
    if small:
        sp = small["speedups"]
        rows = {r["backend"]: r for r in small["rows"]}
        fp32, int8 = rows["ONNX Runtime fp32"], rows["ONNX Runtime int8"]
        verdict = ("int8 is slower than fp32 here" if sp["int8_vs_fp32_p50"] < 1 else
                   "int8 gains little over fp32" if sp["int8_vs_fp32_p50"] < 1.5 else "int8 wins clearly")
        floor = result.get("ort_call_overhead")
        lines += ["", f"SmallCNN (no target): {verdict} at batch 1 ({sp['int8_vs_fp32_p50']:.2f}×, "
                  f"{_fmt_ms(fp32['p50_ms'])} against {_fmt_ms(int8['p50_ms'])} ms p50)."]
        if floor:
            lines[-1] += (f" ONNX Runtime's own cost per call, measured with a model that only copies a "
                          f"{'x'.join(map(str, floor['input_shape']))} input, is {_fmt_ms(floor['p50_ms'])} ms p50: "
                          f"{floor['p50_ms'] / fp32['p50_ms']:.0%} of the fp32 query, a floor int8 cannot lower, and "
                          "the int8 graph adds quantize/dequantize steps of its own.")
        lines[-1] += (f" At batch {THROUGHPUT_BATCH} int8 runs {sp['int8_vs_fp32_throughput']:.2f}× the fp32 throughput; "
                      f"its file is {int8['file_bytes'] / fp32['file_bytes']:.2f}× the size.")
    lines += ["", "## Every backend", "",
              format_table([r for mod in result["models"] for r in mod["rows"]], ratios_to="eager PyTorch fp32"), "",
              "Sizes: ONNX files; eager = `torch.save` of the state_dict. Peak RSS of the torch process includes "
              "PyTorch itself (this build's libraries), which a device running ONNX Runtime does not load.", ""]
    lines += ["## Accuracy", "", "| model | weights | test images | eager fp32 | ORT fp32 | ORT int8 |", "|---|---|---|---|---|---|"]
    for mod in result["models"]:
        acc = [r.get("accuracy") for r in mod["rows"]]
        cells = [f"{a:.2%}" if a is not None else "-" for a in acc]
        lines.append(f"| {mod['name']} on {mod['dataset']} | {mod['weights']} | "
                     f"{mod['test_images'] if mod['trained'] else 'not measured'} | {' | '.join(cells)} |")
    lines += ["", "Untrained weights are timed like trained ones (the arithmetic does not depend on the values); they "
              "have no accuracy and are left out of the Pareto figure."]
    if result.get("pareto_figure"):
        lines += ["", f"Pareto figure: `{Path(result['pareto_figure']).name}` (accuracy against p50 latency and file size)."]
    lines += ["", "## Emulated Raspberry Pi: agreement with x86", ""]
    emu = result["emulation"]
    if emu["status"] != "run":
        lines.append(f"Not run: {emu.get('how', emu['status'])} (`{Path(emu['file']).name}`).")
    else:
        tol = emu.get("tolerance") or {}
        lines += [f"`run.py` on {emu['inputs']} MNIST test images (pretrained SmallCNN bundle), x86 against QEMU "
                  f"user-mode arm64 ({emu.get('created')}). Tolerances: fp32 {tol.get('fp32_max_abs_logit_diff', float('nan')):.2g}, "
                  f"int8 {tol.get('int8_max_abs_logit_diff', float('nan')):.2g} (one output quantization step).", "",
                  "| emulated CPU | device | onnxruntime | fp32 max logit diff | int8 max logit diff | same predictions |",
                  "|---|---|---|---|---|---|"]
        for cpu, e in emu["cpus"].items():
            same = all(e.get(k, {}).get("predictions_equal") for k in ("fp32", "int8"))
            lines.append(f"| {cpu} | {e['device']} | {e['onnxruntime']} | {e.get('fp32', {}).get('max_abs_logit_diff', float('nan')):.3g} | "
                         f"{e.get('int8', {}).get('max_abs_logit_diff', float('nan')):.3g} | {'yes' if same else '**no**'} |")
        lines += ["", "Emulated timings are QEMU's, not a Pi's: this checks function only."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    import onnxruntime

    from qsal_lab.budget import current_budget
    from qsal_lab.experiments.report import load_average, write_results

    budget = current_budget(args.budget)
    work = args.work_dir or ROOT / "runs" / f"bench_edge_{budget}"
    work.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    result = {"benchmark": "edge", "budget": budget, "started": started.isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": _cpu_name(),
                          "python": sys.version.split()[0], "torch": torch.__version__,
                          "onnxruntime": onnxruntime.__version__, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                          "nice": os.nice(0) if hasattr(os, "nice") else None,
                          **load_average("start")}}
    models = {}
    for name in args.models:
        print(f"[bench] {MODELS[name][1]}: export, quantize, time eager / ORT fp32 / ORT int8", flush=True)
        models[name] = bench_model(name, args, budget, work)
        if name == "smallcnn":
            result["ort_call_overhead"] = ort_call_overhead(models[name]["input_shape"], work, budget)
        sp = models[name]["speedups"]
        print(f"[bench] {MODELS[name][1]}: int8 {sp['int8_vs_fp32_p50']:.2f}x fp32 ORT, {sp['int8_vs_eager_p50']:.1f}x eager",
              flush=True)
    first = next(iter(models.values()))
    result["settings"] = {"threads": 1, "batch": 1, "warmup": WARMUP, "rounds": ROUNDS, **first["settings"]}
    result["models"] = list(models.values())
    result["targets"] = check_targets(models)
    result["emulation"] = emulation(args.emulation)
    args.results.mkdir(parents=True, exist_ok=True)
    figure = pareto_figure(result["models"], args.results / "edge_pareto.png")
    result["pareto_figure"] = str(figure) if figure else None
    result["machine"].update(load_average("end"))
    result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["seconds_total"] = time.perf_counter() - t0

    md = markdown(result)
    print(md)
    write_results(args.results, "edge", result, md)
    return 0


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


if __name__ == "__main__":
    sys.exit(main())
