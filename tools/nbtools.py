"""Notebook chores for the book: exercises from solutions, output stripping, output refresh.

    python tools/nbtools.py make-exercises          # solutions/X.ipynb -> exercises/X.ipynb
    python tools/nbtools.py check-exercises         # exit 1 if exercises/ is stale
    python tools/nbtools.py strip-outputs book/*.ipynb solutions/*.ipynb
    python tools/nbtools.py refresh book/03_ptq.ipynb   # re-run, keep NBVAL_CHECK_OUTPUT outputs
    python tools/nbtools.py launch-cells            # install cell + Colab badge in every chapter

Conventions (the tests in tests/test_notebooks.py rely on them):

* In a solution notebook the learner's part of a code cell sits between the lines
  `### BEGIN SOLUTION` and `### END SOLUTION`; the line right before BEGIN is a
  `# TODO: ...` comment that tells the learner what to write. The exercise keeps the
  TODO line and replaces the region by `...` at the same indentation, so the code still
  parses and a function whose body was the region returns None.
* A code cell that calls a check function carries the cell tag `check` and the metadata
  `"qsal": {"expect": "<text>"}`: in the untouched exercise that cell must raise an error
  whose `Name: message` contains <text>; in the solution it must pass.
* Every chapter's first code cell installs qsal_lab where it is missing (Colab): qsal-lab==<the
  book's version, qsal_lab.__version__> by name, else from the repository's address; and a
  markdown cell after its "## Try it yourself" section links the chapter's exercise with a
  Colab badge; solutions get the same install cell, and exercises inherit it. Both come from
  `launch-cells` and carry the metadata "qsal": {"launch": "install" | "badge"}; the
  repository's address in them comes from one setting, _config.yml's `repository:` (empty in
  the committed file; the publishing workflow writes it, then runs `launch-cells`).
* Stored outputs are only kept for cells with a line `# NBVAL_CHECK_OUTPUT` of its own
  (not after code: nbval would not see it there); `pytest --nbval-lax` compares exactly
  those cells against what they print now. `refresh` stores those outputs.
"""

import argparse
import copy
import os
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
TODO = "# TODO:"
CHECK_OUTPUT_MARKER = "NBVAL_CHECK_OUTPUT"
CHECK_TAG = "check"


# ----------------------------------------------------------------------------
# exercises from solutions

def exercise_source(source, where="cell"):
    """The learner's version of one code cell: each BEGIN..END region becomes `...`."""
    if BEGIN not in source and END not in source:
        return source
    out, inside = [], False
    for lineno, line in enumerate(source.splitlines(), start=1):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{where}, line {lineno}: '{BEGIN}' inside another solution region; "
                                 f"close the first one with '{END}'.")
            if not out or not out[-1].strip().startswith(TODO):
                raise ValueError(f"{where}, line {lineno}: '{BEGIN}' must come right after a "
                                 f"'{TODO} ...' line that tells the learner what to write.")
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + "...")
            inside = True
        elif marker == END:
            if not inside:
                raise ValueError(f"{where}, line {lineno}: '{END}' without a '{BEGIN}' before it.")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: '{BEGIN}' is never closed; add a '{END}' line.")
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


def check_cell_problems(nb, where):
    """Messages for check cells that break the convention (empty list when all is well)."""
    problems = []
    for i, cell in enumerate(nb.cells):
        if CHECK_TAG not in cell.metadata.get("tags", []):
            continue
        expect = cell.metadata.get("qsal", {}).get("expect")
        if cell.cell_type != "code":
            problems.append(f"{where}, cell {i}: the '{CHECK_TAG}' tag is only for code cells.")
        elif not isinstance(expect, str) or not expect:
            problems.append(f"{where}, cell {i}: a '{CHECK_TAG}' cell needs metadata "
                            '"qsal": {"expect": "<part of the error the untouched exercise raises>"}.')
    return problems


def make_exercise(solution_nb, where="notebook"):
    """The exercise notebook for a solution notebook (a new object; the input is untouched)."""
    problems = check_cell_problems(solution_nb, where)
    if problems:
        raise ValueError("\n".join(problems))
    nb = copy.deepcopy(solution_nb)
    nb.metadata.pop("widgets", None)  # widget state is output too
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source = exercise_source(cell.source, where=f"{where}, cell {i}")
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        elif BEGIN in cell.source or END in cell.source:
            raise ValueError(f"{where}, cell {i}: solution markers only work in code cells.")
    return nb


def read(path):
    return nbformat.read(str(path), as_version=4)


def write(nb, path):
    nbformat.write(nb, str(path))


def exercise_pairs(solutions_dir, exercises_dir):
    """(solution, exercise) paths for every solution notebook."""
    return [(s, Path(exercises_dir) / s.name) for s in sorted(Path(solutions_dir).glob("*.ipynb"))]


def make_exercises(solutions_dir, exercises_dir):
    Path(exercises_dir).mkdir(parents=True, exist_ok=True)
    for solution, exercise in exercise_pairs(solutions_dir, exercises_dir):
        write(make_exercise(read(solution), where=str(solution)), exercise)
        print(f"wrote {exercise}")


def stale_exercises(solutions_dir, exercises_dir):
    """Messages for exercises that differ from what make-exercises would write."""
    problems = []
    pairs = exercise_pairs(solutions_dir, exercises_dir)
    for solution, exercise in pairs:
        if not exercise.exists():
            problems.append(f"{exercise} is missing")
        elif _comparable(read(exercise)) != _comparable(make_exercise(read(solution), str(solution))):
            problems.append(f"{exercise} differs from what {solution} gives")
    solution_names = {s.name for s, _ in pairs}
    for exercise in sorted(Path(exercises_dir).glob("*.ipynb")):
        if exercise.name not in solution_names:
            problems.append(f"{exercise} has no solution {Path(solutions_dir) / exercise.name}")
    return problems


def _comparable(nb):
    # compare content, not JSON layout or the nbformat minor version
    nb = copy.deepcopy(nb)
    nb.pop("nbformat_minor", None)
    for cell in nb.cells:
        cell.pop("id", None)
    return nb


# ----------------------------------------------------------------------------
# outputs

def keeps_output(cell):
    """True for the cells nbval --nbval-lax compares: a line `# NBVAL_CHECK_OUTPUT` of its
    own (nbval ignores the marker after code on the same line) or the tag nbval-check-output."""
    if cell.cell_type != "code":
        return False
    marked = any(line.strip().startswith("#") and line.strip().lstrip("#").strip() == CHECK_OUTPUT_MARKER
                 for line in cell.source.splitlines())
    return marked or "nbval-check-output" in cell.metadata.get("tags", [])


def strip_outputs(nb):
    """Clear outputs of every code cell except NBVAL_CHECK_OUTPUT cells; True if nb changed."""
    before = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if not keeps_output(cell):
            cell.outputs = []
            cell.execution_count = None
    return nb != before


def kernel_env(budget="ci"):
    """Environment for a notebook kernel: QSAL_BUDGET set, MPLBACKEND unset.

    ipykernel only picks its inline matplotlib backend when MPLBACKEND is unset, so a
    test process's MPLBACKEND=Agg would silently drop every figure from the notebooks.
    """
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    env["QSAL_BUDGET"] = budget
    return env


def execute(nb, cwd, timeout=600, allow_errors=False, budget="ci"):
    """Run every cell of nb in a fresh python3 kernel with cwd as working directory."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env=kernel_env(budget))
    return nb


def refresh(path, timeout=600):
    """Execute a notebook at the ci budget and store the outputs of its NBVAL_CHECK_OUTPUT cells."""
    path = Path(path)
    nb = read(path)
    ran = execute(copy.deepcopy(nb), cwd=path.parent, timeout=timeout)
    for cell, ran_cell in zip(nb.cells, ran.cells):
        if keeps_output(cell):
            cell.outputs = ran_cell.outputs
            cell.execution_count = ran_cell.execution_count
    strip_outputs(nb)
    write(nb, path)


# ----------------------------------------------------------------------------
# launch cells: install qsal_lab where it is missing, a Colab badge for the exercise

CONFIG = ROOT / "_config.yml"
LAUNCH_KEY = "launch"            # cell.metadata["qsal"]["launch"] = "install" | "badge"
INSTALL_TAGS = ["remove-cell"]   # the rendered page is executed already: nothing to install there
TRY_IT_HEADING = "## Try it yourself"
COLAB = "https://colab.research.google.com/github"
BADGE_IMAGE = "_static/colab-badge.svg"   # relative to book/; vendored, so the page stays offline
GITHUB = "https://github.com"
GITHUB_URL = re.compile(r"^https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?$")


def launch_setting(config=CONFIG):
    """(repository url, branch) from _config.yml's `repository:`; ("", "") when it names none.

    This is the one setting for the repository's address: the committed _config.yml leaves it
    empty (no invented address) and .github/workflows/book.yml writes GitHub's own values there.
    """
    repository = (yaml.safe_load(Path(config).read_text()) or {}).get("repository") or {}
    url = (repository.get("url") or "").strip().rstrip("/")
    branch = (repository.get("branch") or "").strip()
    if url and not url.startswith(("https://", "http://")):
        raise ValueError(f"{config}: repository.url {url!r} is not a web address (https://...); "
                         "set it to the address you would `git clone`, or leave it empty")
    return url, branch or ("main" if url else "")


def install_spec(setting):
    """pip's requirement for the project at that repository, or "" without one."""
    url, branch = setting
    return f"qsal-lab @ git+{url}@{branch}" if url else ""


def book_version(init=ROOT / "qsal_lab" / "__init__.py"):
    """qsal_lab.__version__, read from the source (the one place it is written) without importing it."""
    import ast

    for node in ast.parse(Path(init).read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return node.value.value
    raise ValueError(f"{init} sets no __version__")


def install_cell_source(setting, version=None):
    """The first code cell of every notebook: where qsal_lab is missing (Colab, a fresh Binder) it installs
    qsal-lab==<the book's version> by name, else from the repository's address; where it is installed it
    does nothing and prints nothing."""
    version = version or book_version()
    spec = install_spec(setting)
    return f"""# Installs qsal_lab where it is missing (Colab, a fresh Binder) and does nothing where it is installed:
# qsal-lab=={version} by name, else from the repository's address. tools/nbtools.py launch-cells writes
# VERSION (qsal_lab.__version__) and REPOSITORY (from _config.yml; empty in the repository itself).
import importlib.util

if importlib.util.find_spec("qsal_lab") is None:
    import os, subprocess, sys
    VERSION = {version!r}
    REPOSITORY = {spec!r}
    specs = ["qsal-lab==" + VERSION] + ([REPOSITORY] if REPOSITORY else [])
    if os.environ.get("QSAL_REPOSITORY"):  # an address you gave: install from there only
        specs = ["qsal-lab @ git+" + os.environ["QSAL_REPOSITORY"]]
    for spec in specs:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], capture_output=True, text=True)
        if pip.returncode == 0:
            break
        why = (pip.stderr.strip().splitlines() or [f"pip exited with {{pip.returncode}}"])[-1]
    else:
        sys.exit(f"qsal_lab is not installed and pip could not install {{spec}} ({{why}}): run "
                 "%env QSAL_REPOSITORY={GITHUB}/OWNER/REPO (on Colab: the two names after /github/ "
                 "in the address bar), then this cell again")
    importlib.invalidate_caches()
    print(f"installed {{spec}}; if Colab offers to restart the session, accept and go on from the next cell")"""


def colab_url(setting, path):
    """Colab's address for a file of the repository (path relative to its root), or None."""
    url, branch = setting
    match = GITHUB_URL.match(url)
    return f"{COLAB}/{match[1]}/{match[2]}/blob/{branch}/{path}" if match else None


def badge_cell_source(exercise, setting):
    """The Colab badge for exercises/<exercise>; without a GitHub repository it downloads it."""
    path = f"exercises/{exercise}"
    target = colab_url(setting, path)
    if target:
        return (f"[![Open in Colab]({BADGE_IMAGE})]({target})\n"
                f"The badge opens the exercise, `{path}`, in Colab; its first code cell installs "
                "`qsal_lab` there.")
    # path: makes MyST link the file as a download (a bare .ipynb path reads as a page)
    return (f"[![Open in Colab]({BADGE_IMAGE})](path:../{path})\n"
            f"This copy of the book names no GitHub repository, so the badge downloads `{path}`. In "
            "Colab, open it with File, Upload notebook; its first code cell installs `qsal-lab` by name "
            "(and asks for the repository's address only if that fails).")


def _content(nb):
    return [(c.cell_type, c.source, c.metadata) for c in nb.cells]


def _replace_launch_cell(nb, kind, cell, position):
    """Take out the launch cell of that kind and put cell at position(nb) instead, with a fixed id
    (so that reruns and make-exercises write the same file); True if the notebook changed."""
    before = copy.deepcopy([*_content(nb), [c.get("id") for c in nb.cells]])
    cell.metadata["qsal"] = {LAUNCH_KEY: kind}
    cell["id"] = f"qsal-launch-{kind}"
    nb.cells = [c for c in nb.cells if c.metadata.get("qsal", {}).get(LAUNCH_KEY) != kind]
    nb.cells.insert(position(nb), cell)
    return [*_content(nb), [c.get("id") for c in nb.cells]] != before


def set_install_cell(nb, setting):
    """Make the install cell the notebook's first code cell; True if nb changed."""
    cell = nbformat.v4.new_code_cell(install_cell_source(setting), metadata={"tags": list(INSTALL_TAGS)})

    def first_code(nb):
        return next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    return _replace_launch_cell(nb, "install", cell, first_code)


def set_badge_cell(nb, exercise, setting, where="notebook"):
    """Put the exercise's Colab badge right after the cell with the "Try it yourself" heading;
    True if nb changed."""
    def after_heading(nb):
        for i, c in enumerate(nb.cells):
            if c.cell_type == "markdown" and any(line.strip() == TRY_IT_HEADING for line in c.source.splitlines()):
                return i + 1
        raise ValueError(f"{where} has no '{TRY_IT_HEADING}' section to put the exercise's Colab badge in; "
                         "add one that links the exercise (as book/01_mnist_baseline.ipynb does)")
    cell = nbformat.v4.new_markdown_cell(badge_cell_source(exercise, setting))
    return _replace_launch_cell(nb, "badge", cell, after_heading)


def toc_chapters(toc=ROOT / "_toc.yml"):
    """The notebooks _toc.yml lists (book/NN_name.ipynb), in order."""
    from sphinx_external_toc.parsing import parse_toc_yaml

    return [ROOT / f"{doc}.ipynb" for doc in parse_toc_yaml(toc) if (ROOT / f"{doc}.ipynb").is_file()]


def launch_cells(paths, config=CONFIG, check=False):
    """Apply (or, with check, only look for) the launch cells; the paths that needed a change.

    A notebook under solutions/ or exercises/ gets the install cell (an exercise inherits it from its
    solution through make-exercises, so both keep the same cells); a chapter gets the install cell and
    the badge for exercises/<its name>, which must exist.
    """
    setting = launch_setting(config)
    changed = []
    for path in map(Path, paths):
        nb = read(path)
        is_learner_notebook = path.resolve().parent.name in ("solutions", "exercises")
        did = set_install_cell(nb, setting)
        if not is_learner_notebook:
            exercise = ROOT / "exercises" / path.name
            if not exercise.is_file():
                raise ValueError(f"{path}: no exercise {exercise.relative_to(ROOT)} to link; write "
                                 f"solutions/{path.name} and run `make exercises` first")
            did = set_badge_cell(nb, path.name, setting, where=str(path)) or did
        if did:
            changed.append(path)
            if not check:
                write(nb, path)
    return changed


# ----------------------------------------------------------------------------
# command line

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in [("make-exercises", "write exercises/X.ipynb from solutions/X.ipynb"),
                       ("check-exercises", "exit 1 if exercises/ differs from what make-exercises writes")]:
        p = sub.add_parser(name, help=text)
        p.add_argument("--solutions", default=ROOT / "solutions", type=Path)
        p.add_argument("--exercises", default=ROOT / "exercises", type=Path)
    p = sub.add_parser("strip-outputs", help="clear outputs except in NBVAL_CHECK_OUTPUT cells")
    p.add_argument("notebooks", nargs="+", type=Path)
    p = sub.add_parser("refresh", help="execute (QSAL_BUDGET=ci) and store NBVAL_CHECK_OUTPUT outputs")
    p.add_argument("notebooks", nargs="+", type=Path)
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    p = sub.add_parser("launch-cells", help="first cell installs qsal_lab where missing; Colab badge for the exercise")
    p.add_argument("notebooks", nargs="*", type=Path,
                   help="default: every chapter notebook in _toc.yml, solutions/*.ipynb and exercises/*.ipynb")
    p.add_argument("--config", type=Path, default=CONFIG, help="where the repository's address is (repository.url)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook needs launch-cells")
    args = parser.parse_args(argv)

    try:
        if args.command == "make-exercises":
            make_exercises(args.solutions, args.exercises)
        elif args.command == "check-exercises":
            problems = stale_exercises(args.solutions, args.exercises)
            for problem in problems:
                print(problem)
            if problems:
                print("run `make exercises` (python tools/nbtools.py make-exercises) and commit the result")
                return 1
            print("exercises are up to date")
        elif args.command == "strip-outputs":
            for path in args.notebooks:
                nb = read(path)
                if strip_outputs(nb):
                    write(nb, path)
                    print(f"stripped {path}")
        elif args.command == "launch-cells":
            paths = args.notebooks or (toc_chapters() + sorted((ROOT / "solutions").glob("*.ipynb"))
                                       + sorted((ROOT / "exercises").glob("*.ipynb")))
            changed = launch_cells(paths, config=args.config, check=args.check)
            for path in changed:
                print(f"{'needs launch cells' if args.check else 'wrote launch cells in'}: {path}")
            if args.check and changed:
                print("run `python tools/nbtools.py launch-cells` and commit the result")
                return 1
        elif args.command == "refresh":
            for path in args.notebooks:
                refresh(path, timeout=args.timeout)
                print(f"refreshed {path}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
