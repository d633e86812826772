"""Benchmarking a model the way a device runs it: single-stream latency, throughput, peak memory, size.

    row = benchmark("model_int8.onnx", example)               # a torch module, an .onnx file or any callable
    backends = prepare_backends(model, "runs/edge", calib_loader)   # eager fp32, ORT fp32, ORT int8 (QDQ)
    result = compare_backends(backends, example)               # all of them, interleaved, in one run
    print(format_table(result["rows"]))

Latency follows single-stream practice (MLPerf Inference and MLPerf Tiny): one query of batch 1
at a time, the next sent when the previous one returns; `warmup` untimed queries first (first calls
allocate memory and pick kernels); then at least `min_queries` queries and `min_seconds` seconds,
whichever ends later. Reported: mean, p50, p90 (MLPerf's single-stream figure) and p99. Only the
call sits between the two clock reads (time.perf_counter_ns).

Backends compared in one run are interleaved: the timed queries of each are split into `rounds`
blocks and every round runs one block of each backend, the first backend rotating from round to
round, so that drift (CPU frequency, heat, other programs) falls on all of them alike.

Peak memory is the peak resident set size of a *fresh* process that imports only what the backend
needs (onnxruntime, or torch), loads the model and runs it: the footprint a device sees. On Linux it
is VmHWM (/proc/self/status): `ru_maxrss` survives exec there, so a child of this (big) process would
report our size instead of its own; elsewhere it is `resource.getrusage` `ru_maxrss`.

Budgets: `ci` caps queries, seconds and repeats so tests run in a moment; those numbers mean nothing.
"""
from __future__ import annotations

import inspect
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..budget import current_budget, pick
from ..machine import torch_threads
from ..quant.int8 import OnnxClassifier, export_onnx, quantize_onnx
from .latency import file_size_bytes
from .runner import latency_stats, peak_rss_mb, time_queries

EAGER, ORT_FP32, ORT_INT8 = "eager PyTorch fp32", "ONNX Runtime fp32", "ONNX Runtime int8"
CI_CAPS = {"min_queries": 32, "min_seconds": 0.05, "throughput_seconds": 0.05, "rss_queries": 5}


# ----------------------------------------------------------------------------- one call per backend

class _Backend:
    """One way of running a model: `query(x)` returns a zero-argument call that runs it on x."""

    def __init__(self, model, threads: int):
        self.model, self.file_bytes = model, None
        if isinstance(model, (str, Path, OnnxClassifier)):
            onnx = OnnxClassifier(model.path if isinstance(model, OnnxClassifier) else model, threads=threads)
            self.kind, self.path, self.file_bytes = "onnxruntime", onnx.path, file_size_bytes(onnx.path)
            self.session, self.input_name = onnx.session, onnx.input_name
        elif isinstance(model, nn.Module):
            self.kind = "torch"
            buffer = io.BytesIO()
            torch.save(model.state_dict(), buffer)  # what would be shipped: the weights
            self.file_bytes = buffer.getbuffer().nbytes
        elif callable(model):
            self.kind = "callable"
        else:
            raise TypeError(f"benchmark a torch module, an .onnx path, an OnnxClassifier or a callable; "
                            f"got {type(model).__name__}")

    def query(self, x: np.ndarray):
        if self.kind == "onnxruntime":
            feed = {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}
            run, session = None, self.session
            return lambda: session.run(run, feed)
        tensor, model = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.model
        return lambda: model(tensor)


def _as_batch(example) -> np.ndarray:
    x = example.detach().cpu().numpy() if isinstance(example, torch.Tensor) else np.asarray(example)
    if x.ndim < 2 or x.shape[0] < 1 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"example must be a float batch (N, C, H, W) with N >= 1, got {x.shape} {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _resize_batch(x: np.ndarray, batch: int) -> np.ndarray:
    """`batch` rows, repeating the example's rows as needed."""
    return np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))


# ----------------------------------------------------------------------------- interleaved timing

def interleave(queries: dict, min_queries: int, min_seconds: float, rounds: int = 8, warmup: int = 10,
               progress: bool = False, desc: str = "latency", cpu_ns: dict | None = None):
    """Time zero-argument calls in interleaved rounds: ({name: [ns per call]}, [names in the order run]).

    Every call gets `warmup` untimed calls first, then `rounds` blocks of at least
    ceil(min_queries / rounds) calls and min_seconds / rounds seconds; round r starts with the
    r-th name (rotating), so no backend always runs first or right after a particular other one.
    `progress` shows a bar over the blocks (on stderr; it updates between blocks, never inside one).
    `cpu_ns`, if given a dict, receives each name's process CPU time over its blocks (read between blocks):
    unlike wall time it does not grow while other programs hold the CPU.
    """
    if not queries:
        raise ValueError("nothing to time: pass at least one backend")
    if rounds < 1 or min_queries < 1 or min_seconds < 0 or warmup < 0:
        raise ValueError(f"need rounds >= 1, min_queries >= 1, min_seconds >= 0, warmup >= 0; got rounds={rounds}, "
                         f"min_queries={min_queries}, min_seconds={min_seconds}, warmup={warmup}")
    names = list(queries)
    for name in names:
        for _ in range(warmup):
            queries[name]()
    times, order = {name: [] for name in names}, []
    per_block, block_seconds = math.ceil(min_queries / rounds), min_seconds / rounds
    with tqdm(total=rounds * len(names), desc=desc, disable=not progress, leave=False) as bar:
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                cpu_start = time.process_time_ns()
                times[name] += time_queries(queries[name], per_block, block_seconds)
                if cpu_ns is not None:
                    cpu_ns[name] = cpu_ns.get(name, 0) + time.process_time_ns() - cpu_start
                order.append(name)
                bar.update(1)
    return times, order


def _settings(min_queries, min_seconds, throughput_seconds, rss_queries, budget):
    budget = current_budget(budget)
    wanted = {"min_queries": min_queries, "min_seconds": min_seconds, "throughput_seconds": throughput_seconds,
              "rss_queries": rss_queries}
    caps = pick(ci=CI_CAPS, book={}, full={}, budget=budget)
    applied = {k: min(v, caps[k]) if k in caps else v for k, v in wanted.items()}
    if not (isinstance(applied["min_queries"], int) and applied["min_queries"] >= 1):
        raise ValueError(f"min_queries must be a positive integer, got {min_queries!r}")
    if not (applied["min_seconds"] >= 0 and applied["throughput_seconds"] >= 0):
        raise ValueError(f"min_seconds and throughput_seconds must be >= 0, got {min_seconds!r}, {throughput_seconds!r}")
    return {"budget": budget, **applied, "capped_by_budget": applied != wanted}


def compare_backends(backends: dict, example, threads: int = 1, min_queries: int = 1024, min_seconds: float = 10.0,
                     warmup: int = 10, rounds: int = 8, batch_sizes=(64,), throughput_seconds: float = 2.0,
                     rss: bool = True, rss_queries: int = 50, budget: str | None = None, progress: bool = False) -> dict:
    """Benchmark several backends of one model in one interleaved run.

    backends: {name: torch module | .onnx path | OnnxClassifier | callable}, e.g. from prepare_backends
    (torch modules and callables get a float32 CPU torch tensor, ONNX Runtime a float32 numpy array).
    example: a float batch (N, C, H, W); latency runs on its first row, throughput at each of
    `batch_sizes` on its rows repeated to that size (interleaved too, for `throughput_seconds` each).
    Returns {"rows": [one dict per backend], "order": names in the order their latency blocks ran,
    "threads", "settings"}; each row holds the latency statistics, "throughput" (a list of
    {"batch", "images_per_s", "p50_ms"}), "cpu_ms_per_query" (process CPU time, mean: robust to other load,
    wall-clock latency is not), "file_bytes" and "peak_rss_mb" (None when rss=False).
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {batch_sizes!r}")
    settings = _settings(min_queries, min_seconds, throughput_seconds, rss_queries, budget)
    x = _as_batch(example)
    with torch_threads(threads):
        runs = {name: _Backend(model, threads) for name, model in backends.items()}
        modes = {name: b.model.training for name, b in runs.items() if b.kind == "torch"}
        for name in modes:
            runs[name].model.eval()
        try:
            with torch.inference_mode():
                cpu_ns = {}
                times, order = interleave({n: b.query(x[:1]) for n, b in runs.items()}, settings["min_queries"],
                                          settings["min_seconds"], rounds=rounds, warmup=warmup, progress=progress,
                                          desc=f"latency, batch 1, {threads} thread(s)", cpu_ns=cpu_ns)
                throughput = {name: [] for name in runs}
                for batch in batch_sizes:
                    many = _resize_batch(x, batch)
                    batch_times, _ = interleave({n: b.query(many) for n, b in runs.items()}, 2,
                                                settings["throughput_seconds"], rounds=min(rounds, 4), warmup=2,
                                                progress=progress, desc=f"throughput, batch {batch}")
                    for name, ns in batch_times.items():
                        throughput[name].append({"batch": batch, "batches": len(ns),
                                                 "images_per_s": batch * len(ns) / (sum(ns) / 1e9),
                                                 "p50_ms": float(np.median(ns)) / 1e6})
        finally:
            for name, training in modes.items():
                runs[name].model.train(training)
    rows = []
    for name, b in runs.items():
        stats = latency_stats(times[name])
        row = {"backend": name, "kind": b.kind, "threads": threads, "batch": 1, **stats,
               "timed_seconds": sum(times[name]) / 1e9, "cpu_ms_per_query": cpu_ns[name] / len(times[name]) / 1e6,
               "throughput": throughput[name], "file_bytes": b.file_bytes}
        if rss:
            row.update(peak_rss(b.model, x[:1], threads=threads, queries=settings["rss_queries"]))
        else:
            row.update(peak_rss_mb=None, rss_after_import_mb=None)
        rows.append(row)
    return {"rows": rows, "order": order, "threads": threads, "rounds": rounds, "warmup": warmup,
            "input_shape": list(x.shape[1:]), "settings": settings}


def benchmark(model_or_path, example, threads: int = 1, min_queries: int = 1024, min_seconds: float = 10.0,
              budget: str | None = None, **options) -> dict:
    """One model measured: latency (mean, p50, p90, p99 at batch 1), throughput, peak RSS, file size.

    model_or_path: a torch module, an .onnx file (path or OnnxClassifier) or any callable taking
    `example`. Options as in compare_backends (warmup, rounds, batch_sizes, rss, ...). Returns
    compare_backends' one row, with its "settings" and "threads".
    """
    result = compare_backends({"model": model_or_path}, example, threads=threads, min_queries=min_queries,
                              min_seconds=min_seconds, budget=budget, **options)
    return {**result["rows"][0], "settings": result["settings"], "input_shape": result["input_shape"]}


def prepare_backends(model: nn.Module, out_dir, calib_loader, input_shape=None, num_batches: int = 8,
                     method: str = "minmax", metadata: dict | None = None, stem: str = "model") -> dict:
    """{EAGER: model, ORT_FP32: fp32 .onnx, ORT_INT8: int8 .onnx}: the three backends issue #12 compares.

    The fp32 file is export_onnx's (BN folded); the int8 one quantize_onnx's (static, QDQ, per-channel
    int8 weights, uint8 activations calibrated on `num_batches` batches of calib_loader).
    """
    out_dir = Path(out_dir)
    if input_shape is None:
        first = next(iter(calib_loader))
        first = first[0] if isinstance(first, (tuple, list)) else first
        input_shape = (1, *first.shape[1:])
    fp32 = export_onnx(model, out_dir / f"{stem}_fp32.onnx", input_shape=input_shape, metadata=metadata)
    int8 = quantize_onnx(fp32, out_dir / f"{stem}_int8.onnx", calib_loader, num_batches=num_batches, method=method)
    return {EAGER: model, ORT_FP32: fp32, ORT_INT8: int8}


# ----------------------------------------------------------------------------- memory in a fresh process

# runner.peak_rss_mb's source, not an import of qsal_lab: that would load torch into the process measured
_RSS_SCRIPT = "import json, resource, sys\n" + inspect.getsource(peak_rss_mb) + r"""
kind, model_path, input_path, threads, queries = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
import numpy as np
if kind == "onnxruntime":
    import onnxruntime as ort
    after_import = peak_rss_mb()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.load(input_path)}
    run = lambda: session.run(None, feed)
else:
    import torch
    torch.set_num_threads(threads)
    after_import = peak_rss_mb()
    model = torch.load(model_path, weights_only=False).eval()
    x = torch.from_numpy(np.load(input_path))
    def run():
        with torch.inference_mode():
            model(x)
for _ in range(queries):
    run()
print(json.dumps({"rss_after_import_mb": after_import, "peak_rss_mb": peak_rss_mb()}))
"""


def peak_rss(model_or_path, example, threads: int = 1, queries: int = 50) -> dict:
    """{"peak_rss_mb", "rss_after_import_mb"} of a fresh Python process that loads the model and runs
    it `queries` times on `example` (peak resident set size; see the module docstring).

    An ONNX model's process imports only numpy and onnxruntime; a torch module's imports torch and
    unpickles the module (its class must be importable). For anything else, or when the process
    fails, both are None and "rss_note" says why.
    """
    x = _as_batch(example)
    with tempfile.TemporaryDirectory(prefix="qsal_rss_") as tmp:
        input_path = Path(tmp) / "input.npy"
        np.save(input_path, x)
        if isinstance(model_or_path, OnnxClassifier):
            model_or_path = model_or_path.path
        if isinstance(model_or_path, (str, Path)):
            kind, model_path = "onnxruntime", str(Path(model_or_path).resolve())
        elif isinstance(model_or_path, nn.Module):
            kind, model_path = "torch", str(Path(tmp) / "model.pt")
            try:
                torch.save(model_or_path, model_path)
            except Exception as e:  # noqa: BLE001 - e.g. a class defined inside a function
                return _no_rss(f"cannot pickle {type(model_or_path).__name__} for a fresh process ({e})")
        else:
            return _no_rss(f"peak memory is measured for torch modules and ONNX files, not {type(model_or_path).__name__}")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        run = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, kind, model_path, str(input_path), str(threads),
                              str(queries)], capture_output=True, text=True, env=env, timeout=600)
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return _no_rss(f"the measuring process failed: {last}")
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "rss_queries": queries}


def _no_rss(note: str) -> dict:
    return {"peak_rss_mb": None, "rss_after_import_mb": None, "rss_note": note}


# ----------------------------------------------------------------------------- tables

def format_table(rows, ratios_to: str | None = None) -> str:
    """A Markdown table, one line per row of compare_backends (plus a "model" column when rows have one).

    ratios_to: a backend name; adds "p50 speed-up" = that backend's p50 / this row's p50, per model.
    """
    rows = list(rows)
    with_model = any("model" in r for r in rows)
    batches = sorted({t["batch"] for r in rows for t in r.get("throughput", [])})
    head = (["model"] if with_model else []) + ["backend", "threads", "size (KiB)", "mean (ms)", "p50 (ms)",
                                                 "p90 (ms)", "p99 (ms)", "queries", "CPU ms/query"]
    head += (["p50 speed-up"] if ratios_to else []) + [f"img/s @ batch {b}" for b in batches] + ["peak RSS (MB)"]
    reference = {r.get("model"): r["p50_ms"] for r in rows if r["backend"] == ratios_to}
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["model"])] if with_model else []
        size = f"{r['file_bytes'] / 1024:.1f}" if r.get("file_bytes") else "-"
        cells += [r["backend"], str(r["threads"]), size] + [f"{r[k]:.3f}" for k in ("mean_ms", "p50_ms", "p90_ms",
                                                                                   "p99_ms")] + [str(r["queries"])]
        cells.append(f"{r['cpu_ms_per_query']:.3f}" if r.get("cpu_ms_per_query") else "-")
        if ratios_to:
            ref = reference.get(r.get("model"))
            cells.append(f"{ref / r['p50_ms']:.2f}×" if ref else "-")
        speeds = {t["batch"]: t["images_per_s"] for t in r.get("throughput", [])}
        cells += [f"{speeds[b]:,.0f}" if b in speeds else "-" for b in batches]
        cells.append(f"{r['peak_rss_mb']:.1f}" if r.get("peak_rss_mb") else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
