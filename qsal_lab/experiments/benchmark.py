"""One runner for every benchmark in bench/: arguments, the machine and its load, the study, each target met or
MISSED, and the results as JSON + Markdown in bench/results/. A benchmark declares the rest:

    BENCH = Benchmark(__file__, __doc__, TARGETS, run=run, values=values, report=report, title="...")
    if __name__ == "__main__":
        sys.exit(BENCH.main())

run(args) -> dict runs the study (args: the common options --budget, --results, --work-dir, --quiet, set as
args.budget, args.results, args.work_dir, args.progress, and the benchmark's own); values(result) -> {target key:
value or None}; report(result) -> the Markdown after the targets table; why(key, result) -> one sentence on a
missed target, from the numbers. Nothing is asserted: timings depend on the machine and its load, recorded beside them.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import onnxruntime
import torch

from ..budget import current_budget
from ..machine import cpu_description
from .report import describe_drop, load_average, meets, write_results


@dataclass(frozen=True)
class Target:
    """A figure the benchmark promises, e.g. Target("pact_w4a4_drop_pt", "PACT W4A4 accuracy drop", "≤", 0.3,
    reference="FP32"): with a `reference`, the value is a drop in points against it, said in words."""
    key: str
    figure: str
    op: str
    target: float
    unit: str = ""
    digits: int = 3
    reference: str | None = None

    def show(self, value) -> str:
        if value is None:
            return "—"
        if self.reference:
            return describe_drop(value, reference=self.reference)
        return f"{value:.{self.digits}f}{self.unit}"

    def goal(self) -> str:
        if self.reference:
            return f"at most {self.target:g} pt below {self.reference}"
        return f"{self.op} {self.target:g}{self.unit}"

    def check(self, value) -> dict:
        met = None if value is None else meets(value, self.target, self.op)
        return {"key": self.key, "figure": self.figure, "value": None if value is None else float(value),
                "target": self.target, "op": self.op, "unit": self.unit, "met": met,
                "why": "not measured" if value is None else ""}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def existing_path(hint: str) -> Callable:
    """An argparse type: a path that must exist; `hint` says what to do instead."""
    def check(text: str) -> Path:
        if not Path(text).exists():
            raise argparse.ArgumentTypeError(f"{text} does not exist; {hint}")
        return Path(text)
    return check


def machine(stage: str = "start") -> dict:
    """What a timing was measured on: CPUs, the CPU's name and int8 dot-product flags, versions, thread counts."""
    name, int8_flags = cpu_description()
    return {"cpus": os.cpu_count(), "cpu": name, "int8_flags": int8_flags, "platform": platform.platform(),
            "python": sys.version.split()[0], "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "QSAL_STANDIN": os.environ.get("QSAL_STANDIN"), "nice": os.nice(0) if hasattr(os, "nice") else None,
            **load_average(stage)}


@dataclass
class Benchmark:
    script: str                     # the benchmark's __file__: bench/<name>.py writes bench/results/<name>.json, .md
    doc: str                        # the script's docstring: its --help
    targets: tuple
    run: Callable                   # args -> result (a dict)
    values: Callable                # result -> {target key: value or None}
    report: Callable                # result -> Markdown after the targets
    title: str | Callable           # the report's first line, or result -> it
    arguments: Callable | None = None  # parser -> None: the benchmark's own options
    why: Callable | None = None     # (key, result) -> why a target was missed
    preface: Callable | None = None  # result -> Markdown before the targets (what the run was made from)

    @property
    def name(self) -> str:
        return Path(self.script).stem

    def parse(self, argv=None) -> argparse.Namespace:
        home = Path(self.script).resolve().parent
        p = argparse.ArgumentParser(description=self.doc.split("\n\n")[0], epilog=self.doc,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--budget", choices=("ci", "book", "full"), default=None,
                       help="compute budget (default: $QSAL_BUDGET, else book)")
        p.add_argument("--results", type=Path, default=home / "results",
                       help=f"folder for {self.name}.json and {self.name}.md (default: bench/results)")
        p.add_argument("--work-dir", type=Path, default=None,
                       help=f"folder for checkpoints and model files (default: runs/bench_{self.name}_<budget>)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if self.arguments:
            self.arguments(p)
        args = p.parse_args(argv)
        args.budget = current_budget(args.budget)
        args.progress = not args.quiet
        args.work_dir = args.work_dir or home.parent / "runs" / f"bench_{self.name}_{args.budget}"
        args.work_dir.mkdir(parents=True, exist_ok=True)
        return args

    def main(self, argv=None) -> int:
        args = self.parse(argv)
        t0 = time.perf_counter()
        result = {"benchmark": self.name, "budget": args.budget,
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine("start")}
        result.update(self.run(args))
        values = self.values(result)
        result["targets"] = [t.check(values.get(t.key)) for t in self.targets]
        for t in result["targets"]:
            if t["met"] is False and self.why:
                t["why"] = self.why(t["key"], result)
        result["machine"].update(load_average("end"))
        result["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        result["seconds_total"] = time.perf_counter() - t0
        md = self.markdown(result)
        print(md)
        write_results(args.results, self.name, result, md)
        return 0

    def markdown(self, result: dict) -> str:
        m = result["machine"]
        title = self.title(result) if callable(self.title) else self.title
        nice = f", at nice {m['nice']}" if m.get("nice") else ""
        lines = [f"# {title} ({result['budget']} budget)", "",
                 f"Run {result['finished']}, {result['seconds_total']:.0f} s in all on {m['cpus']} CPU(s) "
                 f"({m['cpu']}), torch {m['torch']} with {m['torch_threads']} thread(s), onnxruntime "
                 f"{m['onnxruntime']}{nice}; load average (1 min) {m['loadavg_1min_start']:.2f} at the start, "
                 f"{m['loadavg_1min_end']:.2f} at the end (the machine may be shared: timings are indicative, ratios "
                 "measured side by side carry over).", ""]
        if result["budget"] == "ci":
            lines += ["**ci budget: a smoke run on tiny subsets; these numbers are not meaningful.**", ""]
        if self.preface:
            lines += [self.preface(result).rstrip(), ""]
        lines += ["## Targets", "", "| figure | value | target | status | why (if missed) |", "|---|---|---|---|---|"]
        for target, t in zip(self.targets, result["targets"]):
            status = "not measured" if t["met"] is None else "met" if t["met"] else "**MISSED**"
            lines.append(f"| {t['figure']} | {target.show(t['value'])} | {target.goal()} | {status} | {t['why']} |")
        return "\n".join(lines + ["", self.report(result).rstrip(), ""])
