"""How the book and the benchmarks say how far a quantized model is from its float model.

One convention everywhere: the **drop** is float accuracy minus quantized accuracy, in percentage
points (pt). A positive drop is a loss, a negative one a gain; in words, "0.06 pt below float" or
"0.02 pt above float", never a bare signed number.
"""
from __future__ import annotations


def drop_pt(float_accuracy: float, accuracy: float) -> float:
    """Float minus quantized accuracy in percentage points (accuracies as fractions): positive = worse."""
    return 100.0 * (float(float_accuracy) - float(accuracy))


def describe_drop(drop: float, digits: int = 2, reference: str = "float") -> str:
    """A drop in words: 0.06 -> '0.06 pt below float', -0.02 -> '0.02 pt above float', 0 -> 'same as float'."""
    if round(drop, digits) == 0:
        return f"same as {reference}"
    return f"{abs(drop):.{digits}f} pt {'below' if drop > 0 else 'above'} {reference}"


# --- what every benchmark (bench/*.py) records and writes -------------------------------------------

def load_average(stage: str) -> dict:
    """The machine's 1- and 5-minute load averages, keyed by stage ('start', 'end'): a benchmark records
    them beside its timings, which a shared machine slows down."""
    import os

    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {f"loadavg_1min_{stage}": load[0], f"loadavg_5min_{stage}": load[1]}


def write_results(results_dir, name: str, result: dict, markdown: str, default=str):
    """Write a benchmark's `<name>.json` and `<name>.md` (atomically: a run killed halfway leaves the last
    complete report) and say where. `default` turns what json cannot write (paths, numpy numbers) into text."""
    import json
    from pathlib import Path

    from ..files import atomic_write_text

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(result, indent=2, default=default) + "\n", results_dir / f"{name}.json")
    atomic_write_text(markdown, results_dir / f"{name}.md")
    print(f"[bench] wrote {results_dir / (name + '.json')} and {results_dir / (name + '.md')}")


def meets(value: float, target: float, op: str) -> bool:
    """Whether a benchmark figure meets its target; op is how the target reads: '≤', '≥', '<' or '>'."""
    comparisons = {"≤": value <= target, "≥": value >= target, "<": value < target, ">": value > target}
    if op not in comparisons:
        raise ValueError(f"unknown target comparison {op!r}; use one of {', '.join(comparisons)}")
    return bool(comparisons[op])
