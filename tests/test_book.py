"""The book: _toc.yml lists every chapter, and the whole book builds with zero warnings."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sphinx_external_toc.parsing import parse_toc_yaml

ROOT = Path(__file__).resolve().parent.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

_spec = importlib.util.spec_from_file_location("nbtools", ROOT / "tools" / "nbtools.py")
nbtools = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbtools)


def toc_documents():
    """Documents named in _toc.yml, as paths without suffix relative to the root ('book/intro')."""
    return list(parse_toc_yaml(ROOT / "_toc.yml"))


def test_every_chapter_in_book_is_in_the_toc():
    listed = set(toc_documents())
    chapters = {f"book/{p.stem}" for p in (ROOT / "book").iterdir() if p.suffix in (".md", ".ipynb")}
    assert not chapters - listed, f"in book/ but not in _toc.yml: {sorted(chapters - listed)}"


def test_every_toc_entry_exists():
    missing = [doc for doc in toc_documents()
               if not any((ROOT / (doc + suffix)).exists() for suffix in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists documents that do not exist yet: {missing}"


@pytest.mark.slow
def test_book_builds_without_warnings(tmp_path):
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", str(ROOT), "-W", "-n", "--keep-going", "--path-output", str(tmp_path)]
    run = subprocess.run(cmd, cwd=ROOT, env=nbtools.kernel_env(os.environ.get("QSAL_BUDGET", "ci")),
                         capture_output=True, text=True)
    log, returncode = run.stdout + run.stderr, run.returncode
    assert returncode == 0, f"{' '.join(cmd)} failed:\n{log[-20000:]}"
    # -W turns Sphinx warnings into a failed build already; this names them if one slips
    # through (kernels' own log lines look like "[IPKernelApp] WARNING | ...", not "WARNING:")
    warnings = [line for line in log.splitlines() if "WARNING:" in line]
    assert not warnings, "\n".join(warnings)
    assert "build succeeded." in log
    html = tmp_path / "_build" / "html"
    missing = [doc for doc in toc_documents() if not (html / f"{doc}.html").exists()]
    assert not missing, f"no HTML page for {missing} in {html}"
    # a page that shows a widget must carry the widget state, or the widget stays blank
    stateless = [doc for doc in toc_documents()
                 if WIDGET_VIEW in (page := (html / f"{doc}.html").read_text()) and WIDGET_STATE not in page]
    assert not stateless, f"pages with widgets but no saved widget state: {stateless}"
