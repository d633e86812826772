"""Edge deployment: measure a model the way a device would run it, and ship it to one.

- `latency`: quick latency (`measure_latency`) and file size (`file_size_bytes`), used from chapter 3 on.
- `runner`: the standalone `run.py` of a deployment bundle (numpy, onnxruntime and pillow only).
"""
from .latency import file_size_bytes, measure_latency

__all__ = ["file_size_bytes", "measure_latency"]
