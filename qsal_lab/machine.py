"""The machine a number was measured on: its CPU, and torch's thread count for a block of code."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

# int8 dot-product instructions that int8 kernels can use: x86 VNNI, ARM's dot product and int8 matmul
INT8_FLAGS = ("asimddp", "i8mm")


def cpu_description(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """(the CPU's model name, its int8 dot-product instruction flags, sorted)."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return "unknown CPU (no /proc/cpuinfo)", []

    def field(*keys):
        return next((line.split(":", 1)[1].strip() for line in lines
                     if ":" in line and line.split(":")[0].strip() in keys), "")

    flags = field("flags", "Features").split()
    name = field("model name", "Model") or "unknown CPU"
    return name, sorted(f for f in flags if "vnni" in f or f in INT8_FLAGS)


@contextmanager
def torch_threads(n: int | None):
    """Run the block with `n` torch intra-op threads (None: leave the count as it is), then restore
    the previous count, also when the block raises."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be a positive integer or None, got {n!r}")
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
