"""The book's three models on a CPU, eager PyTorch fp32 vs ONNX Runtime fp32 vs int8 (bench/edge.py).

For SmallCNN (MNIST), ResNet-20 (CIFAR-10 or its labelled stand-in) and ResNet-18 (PneumoniaMNIST), each at batch 1
with 1 thread (`bench_model`, qsal_lab.edge.compare_backends): export and int8 quantization calibrated on the model's
own training data; single-stream latency of the three backends interleaved in rounds; throughput at batch
THROUGHPUT_BATCH; the peak RSS of a fresh process per backend; file sizes; test accuracy when the weights are trained
(untrained weights are timed all the same: speed does not depend on their values). `ort_call_overhead` is ONNX
Runtime's own cost per call, `emulation` what tests/edge/test_pi_emulation.py recorded of the emulated Raspberry Pi.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from .. import pretrained
from ..budget import pick
from ..data import ImageDataset, check_files, dataset_info, load_dataset, make_loader
from ..edge import EAGER, ORT_FP32, ORT_INT8, benchmark, compare_backends, format_table, plot_pareto, prepare_backends
from ..files import atomic_write
from ..models import build_model, count_parameters
from ..quant.int8 import OnnxClassifier
from ..standin import make_standin
from ..train import evaluate, load_checkpoint
from .study import table

MODELS = {  # model: (dataset, display name)
    "smallcnn": ("mnist", "SmallCNN"),
    "resnet20": ("cifar10", "ResNet-20"),
    "resnet18": ("pneumoniamnist", "ResNet-18"),
}
THROUGHPUT_BATCH = 64
WARMUP, ROUNDS = 20, 32  # 32 rounds: blocks of ~0.3 s at the book budget, so load changes hit every backend


def weights(name: str, checkpoint=None):
    """(model, source, trained): `checkpoint`, else a shipped checkpoint, else seeded untrained weights."""
    dataset = MODELS[name][0]
    shipped = f"{dataset}_{name}"  # e.g. mnist_smallcnn: the plain float model, not a variant of it
    source = str(checkpoint)
    if checkpoint is None and shipped in pretrained.available():
        checkpoint, source = pretrained.pretrained_dir(shipped), f"qsal_lab/pretrained/{shipped}"
    if checkpoint is not None:
        model, ckpt = load_checkpoint(checkpoint)
        if ckpt["model_spec"]["model"] != name:
            raise SystemExit(f"bench/edge.py: error: {source} holds a {ckpt['model_spec']['model']}, not a {name}")
        return model, source, True
    info = dataset_info(dataset)
    torch.manual_seed(0)
    return build_model(name, info.num_classes, info.in_channels, info.image_size).eval(), "untrained (seed 0)", False


def data(dataset: str, budget: str):
    """(calibration loader, test loader, display name); CIFAR-10 falls back to its labelled stand-in offline."""
    n_calib = pick(ci=64, book=512, full=1024, budget=budget)
    n_test = pick(ci=128, book=None, full=None, budget=budget)
    if dataset == "cifar10" and set(check_files("cifar10").values()) != {"ok"}:
        # made at the sizes needed, not 50 000 images; its name says "stand-in" on every line of the report
        info = dataset_info("cifar10-standin")
        calib = ImageDataset(*make_standin("train", n_calib), info, "train")
        test = ImageDataset(*make_standin("test", n_test or 2000), info, "test")
    else:
        calib = load_dataset(dataset, "train", subset=n_calib, seed=1)
        test = load_dataset(dataset, "test", subset=n_test, seed=0)
    return make_loader(calib, batch_size=64), make_loader(test, batch_size=256), test.info.display_name


def bench_model(name: str, budget: str, work: Path, checkpoint=None, progress: bool = True) -> dict:
    """One model's three backends compared (rows of compare_backends), with accuracy if trained, and speed-ups."""
    model, source, trained = weights(name, checkpoint)
    calib, test, dataset_name = data(MODELS[name][0], budget)
    shape = (1, *next(iter(test))[0].shape[1:])
    backends = prepare_backends(model, work, calib, input_shape=shape, num_batches=len(calib),
                                metadata={"model": name, "dataset": MODELS[name][0]}, stem=name)
    result = compare_backends(backends, next(iter(test))[0][:THROUGHPUT_BATCH], threads=1, warmup=WARMUP,
                              min_queries=pick(ci=32, book=1024, full=2048, budget=budget), rounds=ROUNDS,
                              min_seconds=pick(ci=0.05, book=10.0, full=20.0, budget=budget),
                              batch_sizes=(THROUGHPUT_BATCH,), rss=True, budget=budget, progress=progress,
                              throughput_seconds=pick(ci=0.05, book=3.0, full=5.0, budget=budget))
    rows = {r["backend"]: r for r in result["rows"]}
    runners = {EAGER: model, ORT_FP32: OnnxClassifier(backends[ORT_FP32]), ORT_INT8: OnnxClassifier(backends[ORT_INT8])}
    for backend, row in rows.items():
        row.update(model=MODELS[name][1], dataset=dataset_name,
                   accuracy=evaluate(runners[backend], test, device="cpu")["accuracy"] if trained else None)

    def ratio(slow, fast, key="p50_ms"):
        return rows[slow][key] / rows[fast][key]

    return {"model": name, "name": MODELS[name][1], "dataset": dataset_name, "input_shape": list(shape[1:]),
            "parameters": count_parameters(model), "weights": source, "trained": trained,
            "test_images": len(test.dataset), "calibration_images": len(calib.dataset),
            "rows": result["rows"], "order": result["order"], "settings": result["settings"],
            "speedups": {"int8_vs_fp32_p50": ratio(ORT_FP32, ORT_INT8), "int8_vs_eager_p50": ratio(EAGER, ORT_INT8),
                         "int8_vs_fp32_p90": ratio(ORT_FP32, ORT_INT8, "p90_ms"),
                         "int8_vs_eager_p90": ratio(EAGER, ORT_INT8, "p90_ms"),
                         "ort_fp32_vs_eager_p50": ratio(EAGER, ORT_FP32),
                         "int8_vs_fp32_cpu": ratio(ORT_FP32, ORT_INT8, "cpu_ms_per_query"),
                         "int8_vs_eager_cpu": ratio(EAGER, ORT_INT8, "cpu_ms_per_query"),
                         "int8_vs_fp32_throughput": rows[ORT_INT8]["throughput"][0]["images_per_s"]
                         / rows[ORT_FP32]["throughput"][0]["images_per_s"]}}


def ort_call_overhead(shape, work: Path, budget: str) -> dict:
    """Latency of an ONNX model that only copies its input (Identity) of this shape: what ONNX Runtime
    costs per call before any arithmetic, the floor under every ORT latency."""
    value = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *shape]) for n in ("input", "output")]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity", value[:1], value[1:])
    path = Path(work) / "identity.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    row = benchmark(path, np.zeros((1, *shape), np.float32), batch_sizes=(), rss=False, budget=budget,
                    min_queries=pick(ci=32, book=1024, full=2048, budget=budget),
                    min_seconds=pick(ci=0.05, book=2.0, full=5.0, budget=budget))
    return {"input_shape": list(shape), "p50_ms": row["p50_ms"], "p90_ms": row["p90_ms"], "queries": row["queries"]}


def emulation(path: Path) -> dict:
    """The emulated Pi runs' agreement with x86, as tests/edge/test_pi_emulation.py recorded it, or 'not run'."""
    if not path.is_file():
        return {"status": "not run", "file": str(path),
                "how": "run `.venv/bin/pytest tests/edge/test_pi_emulation.py` as root with qemu-user-static, "
                       "binfmt-support and debootstrap installed; it writes this file"}
    try:
        found = json.loads(path.read_text())
        keys = ("max_abs_logit_diff", "max_abs_logit", "predictions_equal")
        cpus = {cpu: {"device": e.get("device"), "onnxruntime": e.get("onnxruntime"),
                      **{kind: {k: e[kind].get(k) for k in keys} for kind in ("fp32", "int8") if kind in e}}
                for cpu, e in found["cpus"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return {"status": f"unreadable ({type(e).__name__}: {e})", "file": str(path)}
    return {"status": "run", "file": str(path), "created": found.get("created"), "inputs": found.get("inputs"),
            "host": found.get("host"), "tolerance": found.get("tolerance"), "cpus": cpus, "note": found.get("note")}


def pareto_figure(models: list, path: Path):
    """Accuracy against p50 latency and file size for every backend of every trained model, or None."""
    points = [{**r, "label": f"{r['model']} {_short(r['backend'])}"}
              for m in models for r in m["rows"] if r.get("accuracy") is not None]
    if not points:
        return None
    fig = plot_pareto(points, title="accuracy against latency (batch 1, 1 thread) and size: trained models")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"), suffix=".png")
    return path


def _short(backend: str) -> str:
    return backend.replace("ONNX Runtime", "ORT").replace("eager PyTorch", "eager")


def _ms(v):
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _speedup(key: str, digits: int = 2):
    return lambda m: f"{m['speedups'][key]:.{digits}f}×"


def _accuracy(i: int):
    return lambda m: "-" if m["rows"][i]["accuracy"] is None else f"{m['rows'][i]['accuracy']:.2%}"


SPEEDUPS = [("model", lambda m: m["name"]), ("dataset", lambda m: m["dataset"]),
            ("input", lambda m: "x".join(map(str, m["input_shape"]))),
            ("parameters", lambda m: f"{m['parameters'] / 1e6:.2f} M"),
            ("int8 / fp32 ORT (p50)", _speedup("int8_vs_fp32_p50")), ("(p90)", _speedup("int8_vs_fp32_p90")),
            ("(CPU time)", _speedup("int8_vs_fp32_cpu")), ("int8 / eager (p50)", _speedup("int8_vs_eager_p50", 1)),
            ("(p90)", _speedup("int8_vs_eager_p90", 1)), ("(CPU time)", _speedup("int8_vs_eager_cpu", 1)),
            ("ORT fp32 / eager (p50)", _speedup("ort_fp32_vs_eager_p50", 1)),
            (f"int8 / fp32 throughput @ {THROUGHPUT_BATCH}", _speedup("int8_vs_fp32_throughput"))]
ACCURACY = {"model": lambda m: f"{m['name']} on {m['dataset']}", "weights": lambda m: m["weights"],
            "test images": lambda m: m["test_images"] if m["trained"] else "not measured",
            "eager fp32": _accuracy(0), "ORT fp32": _accuracy(1), "ORT int8": _accuracy(2)}


def format_report(result: dict) -> str:
    """The benchmark's Markdown after its targets: settings, speed-ups, every backend, accuracy, the emulated Pi."""
    s, models = result["settings"], result["models"]
    lines = [f"Not a Raspberry Pi: only `run.py --bench` on the device is. Single stream, batch 1, {s['threads']} "
             f"thread: {s['warmup']} warm-up queries, then at least {s['min_queries']:,} queries and "
             f"{s['min_seconds']:g} s per backend, whichever ends later, in {s['rounds']} interleaved rounds (the "
             f"first backend rotating). Throughput: batch {THROUGHPUT_BATCH}. Peak RSS: a fresh process per backend "
             "that imports only onnxruntime (or torch), loads the model and runs it.", "",
             "## Speed-ups (same run, same machine)", "",
             "Speed-up = the slower backend's time / the faster one's. Wall-clock latency (p50, p90) is what a user "
             "waits; CPU time per query (mean, this process) is what the model costs: it leaves out the time other "
             "programs hold the CPU, which wall time on a shared machine includes.", "", table(models, SPEEDUPS)]
    small = next((m for m in models if m["model"] == "smallcnn"), None)
    if small:
        lines += ["", _smallcnn_note(small, result.get("ort_call_overhead"))]
    lines += ["", "## Every backend", "", format_table([r for m in models for r in m["rows"]], ratios_to=EAGER), "",
              "Sizes: ONNX files; eager = `torch.save` of the state_dict. Peak RSS of the torch process includes "
              "PyTorch itself (this build's libraries), which a device running ONNX Runtime does not load.", "",
              "## Accuracy", "", table(models, ACCURACY), "",
              "Untrained weights are timed like trained ones (the arithmetic does not depend on the values); they have "
              "no accuracy and are left out of the Pareto figure."]
    if result.get("pareto_figure"):
        lines += ["", f"Pareto figure: `{Path(result['pareto_figure']).name}` (accuracy against p50 latency and file "
                      "size)."]
    return "\n".join(lines + ["", "## Emulated Raspberry Pi: agreement with x86", "", _emulation(result["emulation"])])


def _smallcnn_note(small: dict, floor: dict | None) -> str:
    x, rows = small["speedups"], {r["backend"]: r for r in small["rows"]}
    fp32, int8 = rows[ORT_FP32], rows[ORT_INT8]
    verdict = ("int8 is slower than fp32 here" if x["int8_vs_fp32_p50"] < 1 else
               "int8 gains little over fp32" if x["int8_vs_fp32_p50"] < 1.5 else "int8 wins clearly")
    text = (f"SmallCNN (no target): {verdict} at batch 1 ({x['int8_vs_fp32_p50']:.2f}×, {_ms(fp32['p50_ms'])} "
            f"against {_ms(int8['p50_ms'])} ms p50).")
    if floor:
        text += (f" ONNX Runtime's own cost per call, measured with a model that only copies a "
                 f"{'x'.join(map(str, floor['input_shape']))} input, is {_ms(floor['p50_ms'])} ms p50: "
                 f"{floor['p50_ms'] / fp32['p50_ms']:.0%} of the fp32 query, a floor int8 cannot lower, and "
                 "the int8 graph adds quantize/dequantize steps of its own.")
    return text + (f" At batch {THROUGHPUT_BATCH} int8 runs {x['int8_vs_fp32_throughput']:.2f}× the fp32 throughput; "
                   f"its file is {int8['file_bytes'] / fp32['file_bytes']:.2f}× the size.")


def _emulation(emu: dict) -> str:
    if emu["status"] != "run":
        return f"Not run: {emu.get('how', emu['status'])} (`{Path(emu['file']).name}`)."
    tol, nan = emu.get("tolerance") or {}, float("nan")

    def diff(kind):
        return lambda c: f"{c[1].get(kind, {}).get('max_abs_logit_diff', nan):.3g}"

    def same(c):
        return "yes" if all(c[1].get(k, {}).get("predictions_equal") for k in ("fp32", "int8")) else "**no**"

    return "\n".join([
        f"`run.py` on {emu['inputs']} MNIST test images (pretrained SmallCNN bundle), x86 against QEMU user-mode arm64 "
        f"({emu.get('created')}). Tolerances: fp32 {tol.get('fp32_max_abs_logit_diff', nan):.2g}, int8 "
        f"{tol.get('int8_max_abs_logit_diff', nan):.2g} (one output quantization step).", "",
        table(list(emu["cpus"].items()), {
            "emulated CPU": lambda c: c[0], "device": lambda c: c[1]["device"],
            "onnxruntime": lambda c: c[1]["onnxruntime"], "fp32 max logit diff": diff("fp32"),
            "int8 max logit diff": diff("int8"), "same predictions": same}),
        "", "Emulated timings are QEMU's, not a Pi's: this checks function only."])
