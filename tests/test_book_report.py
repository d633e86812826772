"""tools/book_report.py on a small fixture build: it reports what the build's files say, and says
"not recorded" for what no run recorded."""
import importlib.util
import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("book_report", ROOT / "tools" / "book_report.py")
book_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(book_report)


@pytest.fixture
def build(tmp_path):
    """A _build folder as Jupyter Book leaves it: html/, .doctrees/environment.pickle (myst-nb's data)."""
    build = tmp_path / "_build"
    (build / "html" / "book").mkdir(parents=True)
    (build / ".doctrees").mkdir()
    (build / "html" / "book" / "01_mnist_baseline.html").write_text("<pre>budget: ci\nRecipe(...)</pre>")
    env = SimpleNamespace(nb_metadata={
        "book/01_mnist_baseline": {"exec_data": {"runtime": 40.5, "succeeded": True, "method": "force",
                                                 "mtime": 0, "error": None, "traceback": None}},
        "book/02_quantization_basics": {"exec_data": {"runtime": 19.5, "succeeded": False, "method": "force",
                                                      "mtime": 0, "error": "ValueError", "traceback": "..."}},
        "book/glossary": {},   # a page that is not a notebook has no execution data
    })
    (build / ".doctrees" / "environment.pickle").write_bytes(pickle.dumps(env))
    return build


def test_report_reads_the_build_and_says_what_was_not_recorded(build, tmp_path):
    report = book_report.make_report(build, test_time=tmp_path / "none.json")
    assert [row["document"] for row in report["chapters"]] == ["book/01_mnist_baseline", "book/02_quantization_basics"]
    assert [row["succeeded"] for row in report["chapters"]] == [True, False]
    assert report["budget"] == "ci" and report["notebooks_executed_seconds"] == 60.0
    assert report["book_build"]["verdict"] == "not recorded" and report["make_test"]["verdict"] == "not recorded"
    assert report["browser"] is None
    markdown = book_report.to_markdown(report)
    assert "| book/02_quantization_basics | 19.5 | FAILED |" in markdown and "this build ran at `ci`" in markdown
    (build / "book_time.json").write_text(json.dumps({"seconds": 600, "budget": "ci"}))
    assert book_report.make_report(build)["book_build"]["verdict"] == "no target at the ci budget"


def test_report_takes_timings_and_the_browser_counts(build, tmp_path):
    (build / "book_time.json").write_text(json.dumps({"seconds": 1260, "budget": "book"}))
    test_time = tmp_path / "test_time.json"
    test_time.write_text(json.dumps({"seconds": 1190, "budget": "ci"}))
    (build / "browser_report.json").write_text(json.dumps({
        "pages": {"book/intro": {"problems": []}, "book/05_saliency_maps": {"problems": ["broken image: x.png"]}},
        "totals": {"pages": 2, "pages_passed": 1, "images": 7, "formulas": 30, "widgets_rendered": 3}}))
    report = book_report.make_report(build, test_time=test_time)
    assert report["budget"] == "book"   # the timing file's budget wins over the page text
    assert (report["book_build"]["seconds"], report["book_build"]["verdict"]) == (1260, "MISSED")  # > 20 min
    assert (report["make_test"]["seconds"], report["make_test"]["verdict"]) == (1190, "met")       # <= 35 min
    assert report["browser"]["formulas"] == 30 and report["browser_pages_with_problems"] == ["book/05_saliency_maps"]
    out = tmp_path / "out"
    assert book_report.main(["--build", str(build), "--out", str(out), "--test-time", str(test_time)]) == 0
    assert json.loads((out / "book_report.json").read_text())["browser"]["images"] == 7
    assert "| whole book build | 21.0 min (1260 s) | ≤ 20 min | MISSED |" in (out / "book_report.md").read_text()


def test_report_without_a_build_says_where_to_point_it(tmp_path, capsys):
    assert book_report.main(["--build", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "point --build at a Jupyter Book _build folder" in capsys.readouterr().err
