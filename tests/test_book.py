"""The book: _toc.yml lists every chapter, each chapter can be launched (its first code cell installs
qsal_lab where it is missing, its "Try it yourself" has a Colab badge for its exercise), and the whole
book builds with zero warnings."""

import copy
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sphinx_external_toc.parsing import parse_toc_yaml

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("nbtools", ROOT / "tools" / "nbtools.py")
nbtools = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbtools)
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


def toc_notebooks():
    return [ROOT / f"{doc}.ipynb" for doc in toc_documents() if (ROOT / f"{doc}.ipynb").is_file()]


def launch_cell(nb, kind):
    found = [c for c in nb.cells if c.metadata.get("qsal", {}).get(nbtools.LAUNCH_KEY) == kind]
    assert len(found) <= 1, f"{len(found)} launch cells of kind {kind!r}"
    return found[0] if found else None


@pytest.mark.parametrize("path", toc_notebooks(), ids=lambda p: p.stem)
def test_chapter_installs_qsal_lab_and_badges_its_exercise(path):
    nb = nbtools.read(path)
    rerun = "run `python tools/nbtools.py launch-cells` (and commit the result)"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    install = launch_cell(nb, "install")
    assert install is not None and first_code is install, f"{path.name}: its first code cell is not the install cell; {rerun}"
    assert "remove-cell" in install.metadata.get("tags", []), f"{path.name}: the install cell is not tagged remove-cell"
    assert install.source == nbtools.install_cell_source(nbtools.launch_setting()), f"{path.name}: stale install cell; {rerun}"
    badge = launch_cell(nb, "badge")
    assert badge is not None, f"{path.name}: no Colab badge for its exercise; {rerun}"
    heading = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and nbtools.TRY_IT_HEADING in c.source)
    assert nb.cells[heading + 1] is badge, f"{path.name}: the badge is not right under '{nbtools.TRY_IT_HEADING}'"
    exercise = f"exercises/{path.name}"
    assert (ROOT / exercise).is_file(), f"{path.name} links {exercise}, which does not exist"
    assert f"[![Open in Colab]({nbtools.BADGE_IMAGE})](" in badge.source and exercise in badge.source
    assert (ROOT / "book" / nbtools.BADGE_IMAGE).is_file()
    # the solution carries the same install cell, and the exercise inherits it (make exercises)
    solution = ROOT / "solutions" / path.name
    assert solution.is_file(), f"{path.name}: no solution {solution.relative_to(ROOT)}"
    assert nbtools.launch_cells([path, solution, ROOT / exercise], check=True) == [], rerun + " on it and its solution"


def test_launch_cells_take_the_address_from_one_setting(tmp_path):
    # what the publishing workflow does: _config.yml names the repository, launch-cells fills it in
    config = tmp_path / "_config.yml"
    config.write_text("repository:\n  url: " + nbtools.GITHUB + "/owner/repo\n  branch: dev\n")
    chapter = tmp_path / "01_mnist_baseline.ipynb"
    shutil.copy(ROOT / "book" / chapter.name, chapter)
    before = nbtools.read(chapter)
    assert nbtools.launch_cells([chapter], config=config) == [chapter]
    nb = nbtools.read(chapter)
    assert f"REPOSITORY = 'qsal-lab @ git+{nbtools.GITHUB}/owner/repo@dev'" in launch_cell(nb, "install").source
    colab = "https://colab.research.google.com/github/owner/repo/blob/dev/exercises/01_mnist_baseline.ipynb"
    assert f"]({colab})" in launch_cell(nb, "badge").source
    assert len(nb.cells) == len(before.cells), "launch-cells added cells instead of replacing its own"
    assert nbtools.launch_cells([chapter], config=config) == [], "a second run changed the notebook again"
    # back to the committed setting: the committed notebook again, cell for cell
    assert nbtools.launch_cells([chapter]) == [chapter]
    assert [c.source for c in nbtools.read(chapter).cells] == [c.source for c in before.cells]
    config.write_text("repository:\n  url: git@example.org:owner/repo\n")
    with pytest.raises(ValueError, match="is not a web address"):
        nbtools.launch_setting(config)


def test_install_cell_is_silent_where_qsal_lab_is_installed():
    source = nbtools.install_cell_source(nbtools.launch_setting())
    run = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=ROOT)
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")


def test_install_cell_asks_for_the_books_version():
    # the version is written once, in qsal_lab/__init__.py; every notebook's install cell asks pip for it
    init = (ROOT / "qsal_lab" / "__init__.py").read_text()
    version = re.search(r'^__version__ = "([^"]+)"', init, re.M).group(1)
    assert nbtools.book_version() == version
    source = nbtools.install_cell_source(nbtools.launch_setting())
    assert f"VERSION = {version!r}" in source and '"qsal-lab==" + VERSION' in source


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A fresh venv with pip and nothing else: qsal_lab is missing there, as on Colab."""
    spec = importlib.util.spec_from_file_location("colab_rehearsal", ROOT / "tools" / "colab_rehearsal.py")
    rehearsal = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rehearsal)
    python = rehearsal.make_venv(tmp_path_factory.mktemp("bare") / "venv", with_dependencies=False)
    # pip finds nothing: no index, an empty folder of wheels (as if PyPI had no such version)
    env = rehearsal.clean_env(**rehearsal.offline_pip(tmp_path_factory.mktemp("no-wheels")))
    return python, env


def run_install_cell(bare_python, setting, cwd, **env):
    python, base = bare_python
    return subprocess.run([str(python), "-c", nbtools.install_cell_source(setting)], capture_output=True,
                          text=True, cwd=cwd, env={**base, **env}, timeout=300)


def test_install_cell_without_an_address_says_what_to_do(bare_python, tmp_path):
    # the committed cells name no repository: pip is asked for qsal-lab==<version>, and when that fails
    # the learner reads one line saying what pip said and how to give the address
    run = run_install_cell(bare_python, ("", ""), tmp_path)
    version = nbtools.book_version()
    assert run.returncode == 1, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert f"pip could not install qsal-lab=={version} (" in run.stderr, run.stderr
    assert f"No matching distribution found for qsal-lab=={version}" in run.stderr, run.stderr
    assert "QSAL_REPOSITORY=" + nbtools.GITHUB + "/OWNER/REPO" in run.stderr, run.stderr


def test_install_cell_tries_the_repository_after_pypi(bare_python, tmp_path):
    # a published copy names its repository: after PyPI fails, pip installs from there (here a
    # local address that does not exist, so that both fail and the message names the last one tried)
    missing = (tmp_path / "no-such-repository").as_uri()
    run = run_install_cell(bare_python, (missing, "main"), tmp_path)
    assert run.returncode == 1 and f"pip could not install qsal-lab @ git+{missing}@main (" in run.stderr, run.stderr
    # an address the learner gave is the only one tried
    run = run_install_cell(bare_python, ("", ""), tmp_path, QSAL_REPOSITORY=missing)
    assert run.returncode == 1 and f"pip could not install qsal-lab @ git+{missing} (" in run.stderr, run.stderr


def test_launch_cells_refuse_a_chapter_without_try_it_yourself(tmp_path):
    nb = copy.deepcopy(nbtools.read(ROOT / "book" / "01_mnist_baseline.ipynb"))
    nb.cells = [c for c in nb.cells if nbtools.TRY_IT_HEADING not in c.source
                and c.metadata.get("qsal", {}).get(nbtools.LAUNCH_KEY) != "badge"]
    path = tmp_path / "01_mnist_baseline.ipynb"
    nbtools.write(nb, path)
    with pytest.raises(ValueError, match="no '## Try it yourself' section"):
        nbtools.launch_cells([path])


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
