"""qsal grade: tiny hand-made notebooks for each outcome, and chapter 2's exercise and solution."""
import csv
import io
import json

import nbformat
import pytest

from qsal_lab import cli, grade

ROOT = grade.Path(__file__).resolve().parent.parent

CHECKS = """class CheckFailed(AssertionError):
    pass

def check_double(fn):
    if fn(2) != 4:
        raise CheckFailed(f"double(2) returned {fn(2)!r}, expected 4")
    print("ok")
"""


def check_cell(source, expect="returned None"):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata.update(tags=["check"], qsal={"expect": expect})
    return cell


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(CHECKS), *cells]
    return nb


def write(folder, name, nb):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(nb, str(path))
    return path


def learner(folder, body):
    """A learner's 01_double.ipynb: their cell `body`, then one check cell."""
    return write(folder, "01_double.ipynb", notebook(nbformat.v4.new_code_cell(body), check_cell("check_double(double)")))


def test_pass_fail_and_error_per_learner(tmp_path):
    learner(tmp_path / "alice", "def double(x):\n    return 2 * x")
    learner(tmp_path / "bob", "def double(x):\n    ...")
    learner(tmp_path / "carol", "def double(x):\n    return 2 * x\nundefined_name")
    learner(tmp_path / "dave", "def double(x):\n    return 2 * y")
    results = {r.learner: r for r in grade.grade([tmp_path], timeout=60, progress=False)}
    assert sorted(results) == ["alice", "bob", "carol", "dave"]
    assert [(c.check, c.status) for c in results["alice"].checks] == [("check_double", "passed")]
    assert (results["alice"].passed, results["alice"].total) == (1, 1)
    bob = results["bob"].checks[0]
    assert (bob.status, bob.message) == ("failed", "double(2) returned None, expected 4")
    # an error before the check is named with its cell, after the check's own verdict
    carol = results["carol"].checks[0]
    assert carol.status == "passed"
    dave = results["dave"].checks[0]
    assert dave.status == "error" and "cell 2 raised NameError" in dave.message and "'y'" in dave.message

    table = grade.format_table(list(results.values()))
    assert "alice    01_double  1/1     all passed" in table
    assert "bob      01_double  0/1     1 failed" in table
    assert "bob/01_double, check_double (cell 2): failed: double(2) returned None, expected 4" in table


def test_error_in_a_cell_before_the_check_is_named(tmp_path):
    nb = notebook(nbformat.v4.new_code_cell("1 / 0"), check_cell("check_double(double)"))
    write(tmp_path / "erin", "02_broken.ipynb", nb)
    result = grade.grade_notebook(tmp_path / "erin" / "02_broken.ipynb", timeout=60)
    check = result.checks[0]
    assert check.status == "error" and "NameError" in check.message
    assert "after cell 1 raised ZeroDivisionError: division by zero" in check.message


def test_infinite_loop_times_out_and_the_run_goes_on(tmp_path):
    write(tmp_path / "frank", "01_double.ipynb",
          notebook(nbformat.v4.new_code_cell("def double(x):\n    return 2 * x"), check_cell("check_double(double)"),
                   nbformat.v4.new_code_cell("while True:\n    pass"), check_cell("check_double(double)")))
    learner(tmp_path / "gina", "def double(x):\n    return 2 * x")
    results = grade.grade([tmp_path], timeout=5, progress=False)
    frank, gina = results
    assert frank.status == "timeout" and "5 s in cell 3" in frank.message
    assert [c.status for c in frank.checks] == ["passed", "timeout"]
    assert "frank    01_double  1/2     1 timeout" in grade.format_table(results)
    assert gina.status == "graded" and gina.passed == 1


def test_crashed_kernel_is_reported(tmp_path):
    write(tmp_path / "hal", "01_double.ipynb",
          notebook(nbformat.v4.new_code_cell("import os\nos._exit(1)"), check_cell("check_double(double)")))
    result = grade.grade([tmp_path], timeout=60, progress=False)[0]
    assert result.status == "crashed"
    assert [c.status for c in result.checks] == ["crashed"]


def test_not_ours_and_corrupt_notebooks_are_reported(tmp_path):
    folder = tmp_path / "ivy"
    write(folder, "01_notes.ipynb", notebook(nbformat.v4.new_code_cell("print('no checks here')")))
    (folder / "02_corrupt.ipynb").write_text('{"cells": [')
    learner(folder, "def double(x):\n    return 2 * x")
    results = {r.exercise: r for r in grade.grade([folder], timeout=60, progress=False)}
    assert results["01_notes"].status == "not ours" and not results["01_notes"].checks
    assert results["02_corrupt"].status == "unreadable" and "cannot read it" in results["02_corrupt"].message
    assert results["01_double"].passed == 1


def test_learner_folders_and_single_notebooks(tmp_path):
    path = learner(tmp_path / "class" / "jo", "def double(x):\n    return 2 * x")
    (tmp_path / "class" / "jo" / ".ipynb_checkpoints").mkdir()
    learner(tmp_path / "class" / "jo" / ".ipynb_checkpoints", "pass")
    assert grade.find_submissions([tmp_path / "class"]) == [("jo", path)]
    assert grade.find_submissions([path]) == [("jo", path)]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        grade.find_submissions([tmp_path / "nobody"])


def test_cli_json_csv_and_bad_input(tmp_path, capsys):
    learner(tmp_path / "kim", "def double(x):\n    ...")
    assert cli.main(["grade", str(tmp_path), "--timeout", "60", "--json"]) == 0
    record, = json.loads(capsys.readouterr().out)
    assert (record["learner"], record["exercise"], record["passed"], record["total"]) == ("kim", "01_double", 0, 1)
    assert record["checks"][0]["status"] == "failed"
    assert cli.main(["grade", str(tmp_path), "--timeout", "60", "--csv"]) == 0
    row, = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert (row["learner"], row["check"], row["status"]) == ("kim", "check_double", "failed")
    assert cli.main(["grade", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["grade", str(tmp_path), "--timeout", "0"]) == 2
    assert "--timeout" in capsys.readouterr().err


@pytest.mark.slow
def test_chapter_2_solution_passes_and_exercise_fails_as_intended(tmp_path):
    # the committed notebooks, copied so that the run leaves the repository alone
    name = "02_quantization_basics.ipynb"
    for who, folder in (("solved", "solutions"), ("untouched", "exercises")):
        (tmp_path / who).mkdir()
        (tmp_path / who / name).write_bytes((ROOT / folder / name).read_bytes())
    results = {r.learner: r for r in grade.grade([tmp_path], timeout=900, progress=False)}
    solved, untouched = results["solved"], results["untouched"]
    assert solved.status == "graded" and solved.total == 4 and solved.passed == 4, grade.format_table([solved])
    expected = {i: c.metadata["qsal"]["expect"] for i, c in
                enumerate(nbformat.read(str(ROOT / "exercises" / name), as_version=4).cells)
                if "check" in c.metadata.get("tags", [])}
    assert [c.cell for c in untouched.checks] == list(expected)
    for check in untouched.checks:
        assert check.status == "failed" and expected[check.cell] in check.message, check


def test_check_cells_run_as_handed_out_and_deleted_ones_are_missing(tmp_path, capsys):
    handed_out = write(tmp_path / "exercises", "01_double.ipynb",
                       notebook(nbformat.v4.new_code_cell("def double(x):\n    ..."),
                                check_cell("check_double(double)"), check_cell("check_double(double)")))
    # lee turned the first check into `pass` and deleted the second one
    lee = notebook(nbformat.v4.new_code_cell("def double(x):\n    ..."), check_cell("pass"))
    write(tmp_path / "class" / "lee", "01_double.ipynb", lee)
    result, = grade.grade([tmp_path / "class"], timeout=60, progress=False, reference_dir=handed_out.parent)
    assert [(c.check, c.status) for c in result.checks] == [("check_double", "failed"), ("check_double", "missing")]
    assert "deleted" in result.checks[1].message
    own, = grade.grade([tmp_path / "class"], timeout=60, progress=False, reference_dir=None)
    assert [c.status for c in own.checks] == ["passed"]  # what trusting the learner's cells would give
    assert cli.main(["grade", str(tmp_path / "class"), "--reference", str(handed_out.parent), "--csv"]) == 0
    assert [row["status"] for row in csv.DictReader(io.StringIO(capsys.readouterr().out))] == ["failed", "missing"]
    assert cli.main(["grade", str(tmp_path / "class"), "--reference", str(tmp_path / "nowhere")]) == 2
    assert "--reference" in capsys.readouterr().err
