"""The notebooks: book/ and solutions/ run clean under nbval, exercises fail exactly in their
check cells, exercises/ matches solutions/, and no notebook carries stale outputs.

Every notebook found is a test case of its own, so a new chapter is picked up without
editing this file; `pytest tests/test_notebooks.py -k 03_ptq` runs one chapter.
Conventions: tools/nbtools.py.
"""

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CELL_TIMEOUT = 900  # seconds per cell, at the ci budget a cell takes seconds

_spec = importlib.util.spec_from_file_location("nbtools", ROOT / "tools" / "nbtools.py")
nbtools = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbtools)


def notebooks(*folders):
    return sorted(p for folder in folders for p in (ROOT / folder).glob("*.ipynb"))


def cases(paths, what):
    """pytest parameters, one per notebook; a single skipped case while there are none yet."""
    if not paths:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {what} notebooks yet"))]
    return [pytest.param(p, id=str(p.relative_to(ROOT))) for p in paths]


def budget():
    return os.environ.get("QSAL_BUDGET", "ci")


def tail(text, limit=20000):
    return text if len(text) <= limit else "...\n" + text[-limit:]


# ----------------------------------------------------------------------------
# (a) book and solution notebooks run, and NBVAL_CHECK_OUTPUT cells print what they stored

@pytest.mark.slow
@pytest.mark.parametrize("path", cases(notebooks("book", "solutions"), "book or solution"))
def test_notebook_runs_under_nbval(path):
    # nbval in its own pytest process: its per-cell items and kernel stay out of this session
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
           f"--nbval-cell-timeout={CELL_TIMEOUT}", "-p", "no:cacheprovider", "-q", "--color=no", str(path)]
    run = subprocess.run(cmd, cwd=ROOT, env=nbtools.kernel_env(budget()),
                         capture_output=True, text=True)
    returncode = run.returncode
    assert returncode == 0, f"{' '.join(cmd)} failed:\n{tail(run.stdout + run.stderr)}"


# ----------------------------------------------------------------------------
# (b) an untouched exercise raises in its check cells, and only there

def error_text(cell):
    """'Name: message' of the first error a code cell raised, or None."""
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            return f"{output.ename}: {output.evalue}"
    return None


def check_cells(nb):
    """{cell index: expected error text} for the cells tagged `check`."""
    return {i: cell.metadata.get("qsal", {}).get("expect")
            for i, cell in enumerate(nb.cells) if nbtools.CHECK_TAG in cell.metadata.get("tags", [])}


@pytest.mark.slow
@pytest.mark.parametrize("path", cases(notebooks("exercises"), "exercise"))
def test_exercise_fails_exactly_in_its_check_cells(path):
    nb = nbtools.read(path)
    assert not nbtools.check_cell_problems(nb, path), nbtools.check_cell_problems(nb, path)
    solution = ROOT / "solutions" / path.name
    assert solution.exists(), f"{path} has no solution notebook {solution}"
    expected = check_cells(nb)
    assert check_cells(nbtools.read(solution)) == expected, \
        f"check cells of {path} and {solution} differ: run `make exercises`"

    ran = nbtools.execute(nb, cwd=path.parent, timeout=CELL_TIMEOUT, allow_errors=True, budget=budget())
    raised = {i: error_text(cell) for i, cell in enumerate(ran.cells) if error_text(cell)}
    unexpected = {i: err for i, err in raised.items() if i not in expected}
    silent = [i for i in expected if i not in raised]
    assert not unexpected, f"{path}: cells that are not check cells raised: {unexpected}"
    assert not silent, f"{path}: check cells {silent} passed on the untouched exercise"
    for i, expect in expected.items():
        assert expect in raised[i], f"{path}, cell {i}: expected an error containing {expect!r}, got {raised[i]!r}"


# ----------------------------------------------------------------------------
# (c) exercises/ is what `make exercises` writes

def test_exercises_match_solutions():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "nbtools.py"), "check-exercises"],
                         cwd=ROOT, capture_output=True, text=True)
    returncode = run.returncode
    assert returncode == 0, run.stdout + run.stderr


# ----------------------------------------------------------------------------
# (d) every notebook runs on the python3 kernel and carries no stale outputs

@pytest.mark.parametrize("path", cases(notebooks("book", "exercises", "solutions"), "committed"))
def test_notebook_is_clean(path):
    nb = nbtools.read(path)
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    assert kernel == "python3", f"{path}: kernelspec is {kernel!r}; set it to python3"
    assert not nbtools.strip_outputs(copy.deepcopy(nb)), \
        f"{path} has stored outputs: run `python tools/nbtools.py strip-outputs {path.relative_to(ROOT)}`"
    assert not nbtools.check_cell_problems(nb, path), nbtools.check_cell_problems(nb, path)


# ----------------------------------------------------------------------------
# the tools themselves, on hand-written cells

SOLUTION_CELL = """def double(x):
    # TODO: return twice x
    ### BEGIN SOLUTION
    y = 2 * x
    return y
    ### END SOLUTION
"""


def test_exercise_source_keeps_todo_and_leaves_a_function_returning_none():
    source = nbtools.exercise_source(SOLUTION_CELL)
    assert source == "def double(x):\n    # TODO: return twice x\n    ...\n"
    scope = {}
    exec(source, scope)
    assert scope["double"](3) is None


def test_exercise_source_leaves_cells_without_markers_alone():
    assert nbtools.exercise_source("x = 1\n\n# TODO: nothing here") == "x = 1\n\n# TODO: nothing here"


@pytest.mark.parametrize("source, complaint", [
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "TODO"),
    ("# TODO: x\n### BEGIN SOLUTION\nx = 1", "never closed"),
    ("x = 1\n### END SOLUTION", "without"),
    ("# TODO: x\n### BEGIN SOLUTION\n# TODO: y\n### BEGIN SOLUTION\n### END SOLUTION", "inside"),
])
def test_exercise_source_rejects_broken_markers(source, complaint):
    with pytest.raises(ValueError, match=complaint):
        nbtools.exercise_source(source, where="x.ipynb, cell 0")


def small_notebook():
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(SOLUTION_CELL),
                nbformat.v4.new_code_cell("assert double(2) == 4, 'double(2) should be 4'",
                                          metadata={"tags": ["check"], "qsal": {"expect": "should be 4"}}),
                nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(1)")]
    for cell in nb.cells:
        cell.outputs = [nbformat.v4.new_output("stream", text="1\n")]
        cell.execution_count = 1
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_make_exercise_clears_outputs_and_keeps_tags():
    solution = small_notebook()
    exercise = nbtools.make_exercise(solution)
    assert [c.outputs for c in exercise.cells] == [[], [], []]
    assert [c.execution_count for c in exercise.cells] == [None, None, None]
    assert exercise.cells[1].metadata == solution.cells[1].metadata
    assert "widgets" not in exercise.metadata
    assert solution.cells[0].outputs, "make_exercise must not change its input"


def test_make_exercise_rejects_check_cell_without_expect():
    nb = small_notebook()
    del nb.cells[1].metadata["qsal"]
    with pytest.raises(ValueError, match="expect"):
        nbtools.make_exercise(nb, where="x.ipynb")


def test_strip_outputs_keeps_only_nbval_check_output_cells():
    nb = small_notebook()
    assert nbtools.strip_outputs(nb)
    assert [len(c.outputs) for c in nb.cells] == [0, 0, 1]
    assert "widgets" not in nb.metadata
    assert not nbtools.strip_outputs(nb)


@pytest.mark.parametrize("source, tags", [
    ("# NBVAL_CHECK_OUTPUT\nprint(1)", []), ("print(1)\n  ##  NBVAL_CHECK_OUTPUT ", []),
    ("print(1)  # NBVAL_CHECK_OUTPUT", []), ("# NBVAL_CHECK_OUTPUT please", []),
    ("print(1)", ["nbval-check-output"]), ("print(1)", []),
])
def test_keeps_output_agrees_with_nbval(source, tags):
    from nbval.plugin import find_comment_markers, metadata_tags

    nbval_checks = (dict(find_comment_markers(source)).get("check", False)
                    or any(metadata_tags.get(tag) == "check" for tag in tags))
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": tags})
    assert nbtools.keeps_output(cell) == nbval_checks


def test_check_exercises_finds_stale_missing_and_orphaned_exercises(tmp_path):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    nbtools.write(small_notebook(), solutions / "a.ipynb")
    nbtools.write(small_notebook(), solutions / "b.ipynb")
    assert nbtools.stale_exercises(solutions, exercises) == [f"{exercises / 'a.ipynb'} is missing",
                                                             f"{exercises / 'b.ipynb'} is missing"]
    nbtools.make_exercises(solutions, exercises)
    assert nbtools.stale_exercises(solutions, exercises) == []
    nbtools.write(small_notebook(), exercises / "a.ipynb")  # the solution, committed as exercise
    nbtools.write(small_notebook(), exercises / "c.ipynb")
    assert nbtools.stale_exercises(solutions, exercises) == [
        f"{exercises / 'a.ipynb'} differs from what {solutions / 'a.ipynb'} gives",
        f"{exercises / 'c.ipynb'} has no solution {solutions / 'c.ipynb'}"]
