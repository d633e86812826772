"""`qsal grade`: run learners' exercise notebooks headless and report every check.

    qsal grade submissions/                 # one folder per learner (or one learner's folder)
    qsal grade alice/03_ptq.ipynb --timeout 300 --csv > gradebook.csv

Each notebook runs top to bottom in a fresh python3 kernel (nbclient, the runner the tests and the book
use), from its own folder, at QSAL_BUDGET=ci unless told otherwise, with a time limit for the whole
notebook. Its check cells (tagged `check`, with metadata qsal.expect; tools/nbtools.py) decide the grade:

    passed   the cell ran without an error
    failed   it raised CheckFailed: the check's own message says what is wrong
    error    it raised something else (named, with the cell), e.g. NameError after a broken cell
    timeout  the notebook ran out of time before or in this cell
    crashed  the kernel died before or in this cell
    missing  the handed-out exercise has this check, the learner's notebook no longer does

With the handed-out exercises at hand (--reference, by default a clone's exercises/), each check cell is
run as handed out, whatever the learner did to it, and a deleted one counts as missing.

A notebook that is not one of ours (no check cells), cannot be read, loops or kills its kernel is
reported as such; nothing a learner hands in stops the run. Grading runs the learners' code: run it
in a container or a throw-away account.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

CHECK_TAG = "check"
CHECK_NAME = re.compile(r"\b(check_\w+)\s*\(")
EXERCISE_NAME = re.compile(r"\d\d_[A-Za-z0-9_]+")  # 03_ptq, also in "03_ptq-Copy1" or "03_ptq (2)"
STATUSES = ("passed", "failed", "error", "timeout", "crashed", "missing")
# the exercises as handed out, when qsal_lab runs from a clone of the repository (pip install -e)
REPOSITORY_EXERCISES = Path(__file__).resolve().parent.parent / "exercises"


@dataclass
class CheckResult:
    cell: int          # index of the check cell in the notebook
    check: str         # the check it calls, e.g. check_accuracy (or "cell 7")
    status: str        # one of STATUSES
    message: str = ""  # the check's message, or the error and where it happened


@dataclass
class NotebookResult:
    learner: str
    exercise: str      # the file name without .ipynb, e.g. 03_ptq
    path: str
    status: str        # graded | not ours | unreadable | timeout | crashed | error
    message: str = ""
    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(c.status == "passed" for c in self.checks)

    @property
    def total(self) -> int:
        return len(self.checks)

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "total": self.total}


# ----------------------------------------------------------------------------
# which notebooks, for which learner

def _notebooks_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.ipynb") if p.is_file() and not p.name.startswith("."))


def find_submissions(paths) -> list[tuple[str, Path]]:
    """(learner, notebook) pairs. A notebook is graded for the folder it sits in; a folder holds one
    learner's notebooks, or one sub-folder per learner (or both)."""
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: give exercise notebooks or folders of them")
        if path.is_file():
            if path.suffix != ".ipynb":
                raise ValueError(f"{path} is not a notebook (.ipynb): give exercise notebooks or folders of them")
            found.append((path.resolve().parent.name, path))
            continue
        found += [(path.resolve().name, nb) for nb in _notebooks_in(path)]
        for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found += [(sub.name, nb) for nb in _notebooks_in(sub)]
    return found


def check_cells(nb) -> dict[int, str]:
    """{cell index: check name} for our check cells: code cells tagged `check` with qsal.expect."""
    cells = {}
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {})
        if cell.cell_type == "code" and CHECK_TAG in meta.get("tags", []) and meta.get("qsal", {}).get("expect"):
            name = CHECK_NAME.search(cell.source)
            cells[i] = name.group(1) if name else f"cell {i}"
    return cells


def restore_checks(nb, reference) -> list[str]:
    """Give nb's check cells the source of the reference exercise's (matched by qsal.expect, in order) and
    return the names of the reference's checks that nb lacks."""
    def keyed(notebook):
        seen, keys = {}, []
        for i in check_cells(notebook):
            expect = notebook.cells[i].metadata["qsal"]["expect"]
            seen[expect] = seen.get(expect, -1) + 1
            keys.append(((expect, seen[expect]), i))
        return dict(keys)

    ours, theirs = keyed(reference), keyed(nb)
    for key, i in theirs.items():
        if key in ours:
            nb.cells[i].source = reference.cells[ours[key]].source
    return [check_cells(reference)[i] for key, i in ours.items() if key not in theirs]


# ----------------------------------------------------------------------------
# running one notebook

def kernel_env(budget: str = "ci") -> dict:
    """The kernel's environment: ours with QSAL_BUDGET set (QSAL_DATA passes through) and MPLBACKEND
    unset, so that ipykernel keeps its inline backend (as tools/nbtools.py's kernel_env)."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    env["QSAL_BUDGET"] = budget
    return env


def _first_error(cell):
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", "Error"), out.get("evalue", "")
    return None


def run_notebook(nb, cwd, timeout: float, budget: str = "ci", kernel_name: str = "python3"):
    """Execute nb in place, cell by cell, within `timeout` seconds in all. Errors stay in the outputs
    (allow_errors). Returns (stopped_at, reason): (None, "") when every cell ran, else the index of the
    cell where the run stopped and "timeout" or "crashed: ..."."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    client = NotebookClient(nb, timeout=max(1, int(timeout)), kernel_name=kernel_name, allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}})
    deadline = time.monotonic() + timeout
    index = 0
    try:
        # the kernel's own stderr (e.g. "[IPKernelApp] WARNING | ... TCP") says nothing about the learner's work
        with client.setup_kernel(env=kernel_env(budget), stderr=subprocess.DEVNULL):
            for index, cell in enumerate(nb.cells):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return index, "timeout"
                client.timeout = max(1, int(remaining))  # nbclient's timeout is per cell: what is left
                client.execute_cell(cell, index)
    except CellTimeoutError:
        return index, "timeout"
    except DeadKernelError as e:
        return index, f"crashed: {e}"
    return None, ""


def grade_results(nb, checks: dict[int, str], stopped_at, reason) -> list[CheckResult]:
    """One CheckResult per check cell, from the executed notebook's error outputs."""
    results, earlier = [], None  # earlier: the first error in a cell that is not a check cell
    for i, cell in enumerate(nb.cells):
        if stopped_at is not None and i >= stopped_at:
            if i in checks:
                what = "timeout" if reason == "timeout" else "crashed"
                where = "in this cell" if i == stopped_at else f"in cell {stopped_at}, before this check"
                results.append(CheckResult(i, checks[i], what, f"{reason} {where}"))
            continue
        error = _first_error(cell)
        if i not in checks:
            if error and earlier is None:
                earlier = f"cell {i} raised {error[0]}: {error[1]}"
            continue
        after = f" (after {earlier})" if earlier else ""
        if error is None:
            results.append(CheckResult(i, checks[i], "passed"))
        elif error[0] == "CheckFailed":
            results.append(CheckResult(i, checks[i], "failed", error[1] + after))
        else:
            results.append(CheckResult(i, checks[i], "error", f"cell {i} raised {error[0]}: {error[1]}{after}"))
    return results


def grade_notebook(path, learner: str = "", timeout: float = 600, budget: str = "ci",
                   reference=None) -> NotebookResult:
    """Run one exercise notebook and grade its check cells. Never raises for what a learner hands in.
    `reference`: the handed-out exercise of the same name (a path), whose check cells are the ones run."""
    import nbformat

    path = Path(path)
    name = EXERCISE_NAME.match(path.stem)
    result = NotebookResult(learner or path.resolve().parent.name, name.group(0) if name else path.stem, str(path),
                            "graded")
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as e:  # not JSON, not a notebook, unreadable file
        result.status, result.message = "unreadable", f"cannot read it as a notebook: {type(e).__name__}: {e}"
        return result
    missing = []
    if reference is not None and Path(reference).is_file():
        missing = restore_checks(nb, nbformat.read(str(reference), as_version=4))
    checks = check_cells(nb)
    missing = [CheckResult(-1, name, "missing", "this check cell was deleted (or its 'check' tag removed); "
                                                "restore it from the handed-out exercise") for name in missing]
    if not checks and missing:
        result.checks, result.message = missing, "every check cell was deleted"
        return result
    if not checks:
        result.status = "not ours"
        result.message = "no check cells (cells tagged 'check' with qsal.expect): not a qsal-lab exercise"
        return result
    start = time.monotonic()
    try:
        stopped_at, reason = run_notebook(nb, path.parent, timeout, budget)
    except Exception as e:  # e.g. the kernel would not start
        result.status, result.message = "error", f"could not run it: {type(e).__name__}: {e}"
        result.checks = [CheckResult(i, name, "error", "the notebook did not run") for i, name in checks.items()]
        return result
    result.seconds = round(time.monotonic() - start, 1)
    result.checks = grade_results(nb, checks, stopped_at, reason) + missing
    if stopped_at is not None:
        result.status = "timeout" if reason == "timeout" else "crashed"
        result.message = (f"stopped after {timeout:g} s in cell {stopped_at}" if reason == "timeout"
                          else f"{reason} (cell {stopped_at})")
    return result


def grade(paths, timeout: float = 600, budget: str = "ci", progress: bool = True,
          reference_dir=REPOSITORY_EXERCISES) -> list[NotebookResult]:
    """Grade every notebook under `paths` (see find_submissions), one after the other, each against the
    exercise of the same name in `reference_dir` when there is one (None: the notebooks' own checks)."""
    from tqdm.auto import tqdm

    submissions = find_submissions(paths)
    if not submissions:
        raise ValueError(f"no notebooks (.ipynb) in {', '.join(map(str, paths))}")
    results = []
    bar = tqdm(submissions, desc="grading", unit="notebook", disable=not progress)
    for learner, path in bar:
        bar.set_postfix_str(f"{learner}/{path.name}")
        name = EXERCISE_NAME.match(path.stem)
        reference = Path(reference_dir) / f"{name.group(0)}.ipynb" if reference_dir and name else None
        results.append(grade_notebook(path, learner, timeout=timeout, budget=budget, reference=reference))
    return results


# ----------------------------------------------------------------------------
# reports

def format_table(results: list[NotebookResult]) -> str:
    """A table per learner and exercise (passed/total), then one line per check that did not pass."""
    rows = [("learner", "exercise", "passed", "status")]
    for r in results:
        rows.append((r.learner, r.exercise, f"{r.passed}/{r.total}" if r.checks else "-", _summary(r)))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    details = []
    for r in results:
        if r.message:
            details.append(f"{r.learner}/{r.exercise}: {r.message}")
        for c in r.checks:
            if c.status != "passed":
                details.append(f"{r.learner}/{r.exercise}, {c.check} (cell {c.cell}): {c.status}: {c.message}")
    return "\n".join(lines + ([""] + details if details else []))


def _summary(r: NotebookResult) -> str:
    """'all passed', or how many checks ended how ('3 failed, 1 error'), or the notebook's status."""
    if not r.checks or r.status == "error":
        return r.status
    counts = [(status, sum(c.status == status for c in r.checks)) for status in STATUSES[1:]]
    return ", ".join(f"{n} {status}" for status, n in counts if n) or "all passed"


def to_json(results: list[NotebookResult]) -> str:
    return json.dumps([r.as_dict() for r in results], indent=1)


CSV_FIELDS = ("learner", "exercise", "check", "cell", "status", "message", "path")


def to_csv(results: list[NotebookResult]) -> str:
    """One row per check (a notebook without checks: one row with its status), for a gradebook."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        for c in r.checks or [None]:
            writer.writerow({"learner": r.learner, "exercise": r.exercise, "path": r.path,
                             "check": c.check if c else "", "cell": c.cell if c else "",
                             "status": c.status if c else r.status,
                             "message": c.message if c else r.message})
    return out.getvalue()
