"""Shared test setup: a quick budget, a headless matplotlib, where the data lives, and the
book built once per session."""

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# jupyter-book build --path-output BOOK_OUT puts the pages in BOOK_OUT/_build/html
BOOK_OUT = ROOT / "_build" / "ci"

# Set before anything imports qsal_lab or matplotlib; notebook kernels started by the tests
# inherit QSAL_BUDGET (tools/nbtools.py takes MPLBACKEND out of their environment again).
os.environ.setdefault("QSAL_BUDGET", "ci")
os.environ["MPLBACKEND"] = "Agg"


def find_data_root():
    """The folder holding the datasets (MNIST/, medmnist/, ...), or None if there is none.

    QSAL_DATA wins; otherwise the offline copy that the project's own machines keep at
    ../shared/data beside the repository. The tests export what they found as QSAL_DATA,
    so that the notebooks they execute read the same files instead of downloading.
    """
    if os.environ.get("QSAL_DATA"):
        return Path(os.environ["QSAL_DATA"]).expanduser()
    beside_repo = ROOT.parent / "shared" / "data"
    return beside_repo if beside_repo.is_dir() else None


DATA_ROOT = find_data_root()
if DATA_ROOT is not None:
    os.environ["QSAL_DATA"] = str(DATA_ROOT)


@pytest.fixture(scope="session")
def data_root():
    """QSAL_DATA as a Path; skips the test when no data folder is set or found."""
    if DATA_ROOT is None:
        pytest.skip("no data: set QSAL_DATA to the folder that holds MNIST/ (and medmnist/)")
    if not DATA_ROOT.is_dir():
        pytest.fail(f"QSAL_DATA={DATA_ROOT} is not a folder; point it at the folder that holds MNIST/")
    return DATA_ROOT


@pytest.fixture(scope="session")
def mnist_root(data_root):
    """The root to pass to torchvision.datasets.MNIST(root, download=False)."""
    if not (data_root / "MNIST" / "raw").is_dir():
        pytest.skip(f"no MNIST in QSAL_DATA={data_root}: expected {data_root / 'MNIST' / 'raw'}")
    return data_root


def _nbtools():
    spec = importlib.util.spec_from_file_location("nbtools", ROOT / "tools" / "nbtools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class BookBuild:
    cmd: list
    returncode: int
    log: str   # stdout + stderr of jupyter-book
    html: Path


@pytest.fixture(scope="session")
def book_build():
    """The whole book, built once per session at QSAL_BUDGET (ci in the tests) with
    `jupyter-book build -W -n --keep-going` into _build/ci/_build/html (a clean build: the
    folder is emptied first). tests/test_book.py checks the build, tests/test_browser.py its pages.
    """
    shutil.rmtree(BOOK_OUT, ignore_errors=True)
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", str(ROOT), "-W", "-n", "--keep-going", "--path-output", str(BOOK_OUT)]
    env = _nbtools().kernel_env(os.environ.get("QSAL_BUDGET", "ci"))
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return BookBuild(cmd, run.returncode, run.stdout + run.stderr, BOOK_OUT / "_build" / "html")


@pytest.fixture(scope="session")
def book_html(request):
    """The rendered book's HTML folder: QSAL_BOOK_HTML if set (e.g. _build/html after `make
    book`, to check the book as readers get it), else this session's build."""
    if os.environ.get("QSAL_BOOK_HTML"):
        html = Path(os.environ["QSAL_BOOK_HTML"]).expanduser().resolve()
        if not (html / "index.html").is_file():
            pytest.fail(f"QSAL_BOOK_HTML={html} has no index.html; point it at a built book's _build/html")
        return html
    build = request.getfixturevalue("book_build")
    if build.returncode != 0:
        pytest.skip("the book did not build; test_book_builds_without_warnings shows why")
    return build.html


def pytest_terminal_summary(terminalreporter, config):
    # tests/test_browser.py saves one screenshot per page; say where, even when all passed
    screenshots = getattr(config, "qsal_screenshots", None)
    if screenshots is not None:
        terminalreporter.write_line(f"browser test: a screenshot of every page is in {screenshots}")
