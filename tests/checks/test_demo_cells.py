"""Cells tagged `demo` (figures, long demonstrations) are skipped when `qsal grade` grades a notebook, so nothing the
checks need may come from them. Checked statically, without running anything: in every solution notebook, a cell
that is not `demo` reads no name that only a `demo` cell defines, and no check cell is a `demo` cell."""
import ast
import builtins
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO, CHECK = "demo", "check"
NOTEBOOKS = sorted((ROOT / "solutions").glob("*.ipynb"))


def bound_and_read(source: str) -> tuple[set[str], set[str]]:
    """(names a cell binds anywhere, names it reads that it does not bind itself). Conservative: a name bound
    anywhere in the cell (a local too) counts as bound, so only names that must come from other cells are read."""
    tree = ast.parse(source)
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound, read - bound - set(dir(builtins))


def tags(cell) -> list[str]:
    return cell.metadata.get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_graded_cell_reads_what_only_a_demo_cell_defines(path):
    nb = nbformat.read(str(path), as_version=4)
    graded, demo, problems = set(), {}, []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if DEMO in tags(cell) and CHECK in tags(cell):
            problems.append(f"cell {i} is tagged both {DEMO!r} and {CHECK!r}: a check cell is never skipped")
        bound, read = bound_and_read(cell.source)
        if DEMO in tags(cell):
            demo.update({name: i for name in bound})
            continue
        problems += [f"cell {i} reads {name!r}, which only the demo cell {demo[name]} defines"
                     for name in sorted(read) if name in demo and name not in graded]
        graded |= bound
    assert not problems, f"{path.name}: " + "; ".join(problems)


def test_the_analysis_sees_a_dependency_on_a_demo_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import torch\nx = torch.zeros(3)"),
                nbformat.v4.new_code_cell("fig = plot(x)\nlimit = 4", metadata={"tags": [DEMO]}),
                nbformat.v4.new_code_cell("def f(y):\n    return y + limit\ncheck_f(f)", metadata={"tags": [CHECK]})]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    with pytest.raises(AssertionError, match="cell 2 reads 'limit', which only the demo cell 1 defines"):
        test_no_graded_cell_reads_what_only_a_demo_cell_defines(path)


def test_the_long_demonstrations_are_tagged():
    """The cells the issue names as demonstrations carry the tag (so `qsal grade` skips them)."""
    expected = {"05_saliency_maps.ipynb": ["help(replace_pixels)"],
                "09_medical_imaging.ipynb": ["youden = clinical.choose_threshold"],
                "10_edge_benchmarking.ipynb": ["fake = FakeModel()", "blocks = {name: []"],
                "11_raspberry_pi.ipynb": ["bundle = build_bundle(", "result = agreement(outputs"]}
    for name, starts in expected.items():
        nb = nbformat.read(str(ROOT / "solutions" / name), as_version=4)
        for start in starts:
            cells = [c for c in nb.cells if c.cell_type == "code" and start in c.source]
            assert cells and all(DEMO in tags(c) for c in cells), f"{name}: the cell with {start!r} is not tagged {DEMO!r}"
