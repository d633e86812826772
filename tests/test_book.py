"""The book: _toc.yml lists every chapter, and the whole book builds with zero warnings."""

import re
from pathlib import Path

import pytest
from sphinx_external_toc.parsing import parse_toc_yaml

ROOT = Path(__file__).resolve().parent.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# <script src="http..."> or <link ... href="http..."> (stylesheets, preloads); links in the text are <a>
REMOTE_ASSET = re.compile(r'<(?:script|link)\b[^>]*?\b(?:src|href)="((?:https?:)?//[^"]+)"')
# sphinxcontrib-bibtex citation labels: <span class="fn-bracket">[</span>LABEL<span class="fn-bracket">]</span>
BIB_LABEL = re.compile(r'<div class="citation" id="[^"]*" role="doc-biblioentry">\s*'
                       r'<span class="label"><span class="fn-bracket">\[</span>(.*?)<span class="fn-bracket">\]')
AUTHOR_YEAR = re.compile(r"[^\W\d][^,\[\]]*(?: and [^,\[\]]+| et al\.)?, (?:\d{4}|n\.d\.)[a-z]?")


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
def test_book_builds_without_warnings(book_build):
    # book_build (tests/conftest.py) runs jupyter-book build -W -n --keep-going once per session
    cmd, log, html = " ".join(book_build.cmd), book_build.log, book_build.html
    assert book_build.returncode == 0, f"{cmd} failed:\n{log[-20000:]}"
    # -W turns Sphinx warnings into a failed build already; this names them if one slips
    # through (kernels' own log lines look like "[IPKernelApp] WARNING | ...", not "WARNING:")
    warnings = [line for line in log.splitlines() if "WARNING:" in line]
    assert not warnings, "\n".join(warnings)
    assert "build succeeded." in log
    missing = [doc for doc in toc_documents() if not (html / f"{doc}.html").exists()]
    assert not missing, f"no HTML page for {missing} in {html}"
    pages = {doc: (html / f"{doc}.html").read_text() for doc in toc_documents()}
    # a page that shows a widget must carry the widget state, or the widget stays blank
    stateless = [doc for doc, page in pages.items() if WIDGET_VIEW in page and WIDGET_STATE not in page]
    assert not stateless, f"pages with widgets but no saved widget state: {stateless}"
    # offline: every script and style sheet comes from the book itself (book/_static/vendor),
    # and Thebe (which would load from unpkg) is off
    remote = [f"{doc}: {url}" for doc, page in pages.items() for url in REMOTE_ASSET.findall(page)]
    assert not remote, "pages load scripts or styles from the network:\n" + "\n".join(remote)
    thebe = [doc for doc, page in pages.items() if "thebe" in page.lower()]
    assert not thebe, f"pages still carry Thebe scripts or configuration: {thebe}"


@pytest.mark.slow
def test_bibliography_labels_are_author_year(book_html):
    # the text cites "Choi et al., 2018"; the reference list must use the same labels, not [CWV+18]
    pages = [(book_html / f"{doc}.html").read_text() for doc in toc_documents()]
    # a cited entry's label is a back-link to the citation: keep its text
    labels = [re.sub(r"<[^>]+>", "", label) for page in pages for label in BIB_LABEL.findall(page)]
    assert labels, "no bibliography entries found in any page"
    wrong = [label for label in labels if not AUTHOR_YEAR.fullmatch(label)]
    assert not wrong, f"bibliography labels that are not 'Author[ et al.], year': {wrong}"
