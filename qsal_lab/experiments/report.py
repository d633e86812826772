"""How the book and the benchmarks say and write their results.

One convention everywhere: the **drop** is float accuracy minus quantized accuracy, in percentage
points (pt). A positive drop is a loss, a negative one a gain; in words, "0.06 pt below float" or
"0.02 pt above float", never a bare signed number. Tables are Markdown pipe tables (`markdown_table`);
a benchmark writes JSON + Markdown (`write_results`) and marks each target met or missed (`meets`).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..files import atomic_write_text


def drop_pt(float_accuracy: float, accuracy: float) -> float:
    """Float minus quantized accuracy in percentage points (accuracies as fractions): positive = worse."""
    return 100.0 * (float(float_accuracy) - float(accuracy))


def describe_drop(drop: float, digits: int = 2, reference: str = "float") -> str:
    """A drop in words: 0.06 -> '0.06 pt below float', -0.02 -> '0.02 pt above float', 0 -> 'same as float'."""
    if round(drop, digits) == 0:
        return f"same as {reference}"
    return f"{abs(drop):.{digits}f} pt {'below' if drop > 0 else 'above'} {reference}"


def markdown_table(header: list[str], rows: list[list], numbers_right: bool = False) -> str:
    """A Markdown pipe table (renders as a table in the book and in GitHub's Markdown); with numbers_right,
    every column but the first is right-aligned."""
    cells = [[str(c).replace("|", "\\|") for c in row] for row in [header] + rows]
    rule = "|---|" + ("---:|" if numbers_right else "---|") * (len(header) - 1)
    return "\n".join(["| " + " | ".join(cells[0]) + " |", rule] + ["| " + " | ".join(row) + " |" for row in cells[1:]])


def load_average(stage: str) -> dict:
    """The machine's 1- and 5-minute load averages, keyed by stage ('start', 'end'): a benchmark records
    them beside its timings, which a shared machine slows down."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {f"loadavg_1min_{stage}": load[0], f"loadavg_5min_{stage}": load[1]}


def jsonable(value):
    """What json cannot write, as it can: a study's rows as dicts, numpy numbers and arrays, NaN (as null),
    anything else as text."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def write_results(results_dir, name: str, result: dict, markdown: str, default=jsonable):
    """Write a benchmark's `<name>.json` and `<name>.md` (atomically: a run killed halfway leaves the last
    complete report) and say where. `default` turns what json cannot write (paths, numpy numbers) into text."""
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
