"""Quick latency and file size: the chapters' first measurements (`qsal_lab.edge.bench` is the full benchmark).

Two rules for reading the numbers:
- Compare variants (fp32 vs int8, torch vs ONNX Runtime) only when measured side by side in
  one run on one idle machine. Absolute milliseconds drift with CPU frequency, thermal state
  and whatever else is running; ratios measured together are what carry over.
- A timing taken on a laptop, a CI runner or an emulator (e.g. QEMU pretending to be an ARM
  board) is not a device timing. Only a run on the Raspberry Pi itself tells you Pi latency.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def measure_latency(fn, example, warmup: int = 5, repeats: int = 30) -> dict:
    """Wall-clock latency of fn(example) in milliseconds: median, 90th percentile and mean.

    `fn` is a torch module (run in eval mode without autograd, its mode restored afterwards)
    or any callable such as an OnnxClassifier. The `warmup` calls are not timed: first calls
    pay for memory allocation and kernel selection. The median resists the odd slow call.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (a model or OnnxClassifier), got {type(fn).__name__}")
    if not isinstance(warmup, int) or warmup < 0 or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1 (integers), got warmup={warmup!r}, repeats={repeats!r}")
    was_training = isinstance(fn, nn.Module) and fn.training
    if isinstance(fn, nn.Module):
        fn.eval()
    on_gpu = isinstance(example, torch.Tensor) and example.is_cuda  # GPU calls return before finishing
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                fn(example)
                if on_gpu:
                    torch.cuda.synchronize()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000)
    finally:
        if was_training:
            fn.train()
    times = np.array(times)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(times.mean()), "repeats": repeats}


def file_size_bytes(path) -> int:
    """Size of a model file on disk (what has to be shipped to the device)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    return os.path.getsize(path)
