"""Edge deployment: measure a model the way a device runs it, and ship it to one.

- `latency`: quick latency (`measure_latency`) and file size (`file_size_bytes`), used from chapter 3 on.
- `bench`: the benchmark: single-stream latency (mean, p50, p90, p99), throughput, peak memory in a fresh
  process, file size; eager PyTorch, ONNX Runtime fp32 and int8 interleaved in one run (`compare_backends`).
- `pareto`: accuracy against latency and size, with the Pareto front.
- `deploy`: the deployment bundle for a Raspberry Pi (`build_bundle`).
- `runner`: the bundle's standalone `run.py` (numpy, onnxruntime and pillow only; imports no qsal_lab).
"""
from .bench import (EAGER, ORT_FP32, ORT_INT8, benchmark, compare_backends, format_table, interleave, peak_rss,
                    prepare_backends)
from .deploy import build_bundle
from .latency import file_size_bytes, measure_latency
from .pareto import pareto_front, plot_pareto
from .runner import latency_stats

__all__ = ["EAGER", "ORT_FP32", "ORT_INT8", "benchmark", "build_bundle", "compare_backends", "file_size_bytes",
           "format_table", "interleave", "latency_stats", "measure_latency", "pareto_front", "peak_rss",
           "plot_pareto", "prepare_backends"]
